// RoPE of a ModelConfig for every backend: the kernels' RopeParams (type, dims, theta, linear / YaRN scaling) and
// Llama-3.1 "llama3" frequency factors computed from the config (GGUF files carry them as rope_freqs.weight).
// cpu::rope_freq_table (kernels/ops.h) turns the params into per-pair frequencies for the CUDA kernels.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/ops.h"
#include "model/config.h"

namespace citadel {

// The scaling types every backend implements: none, linear, yarn, llama3 (through frequency factors).
bool rope_scaling_supported(const std::string& type);

// RoPE parameters from the config and the model's frequency factors ([rope_dim / 2], or null). The pointer is kept.
RopeParams rope_params_from(const ModelConfig& c, const float* freq_factors);

// Factors [rope_dim / 2] of rope_scaling "llama3" (factor, low/high_freq_factor, original_context; 8192 when 0).
// kDataLoss unless factor > 0 and high_freq_factor > low_freq_factor > 0.
Result<std::vector<float>> llama3_rope_factors(const ModelConfig& c);

}  // namespace citadel
