// Synthetic models: deterministic random weights at a real model's shape, written as GGUF with the tensor names and
// metadata llama.cpp uses (llama / qwen2 / deepseek2 / gemma3), for tests and GPU benchmarks where real weights cannot travel.
// Determinism: the same options give the same bytes on any machine and compiler (integer PRNG from base/rng.h,
// no libm transcendental functions, no std:: distributions; see synth.cc).
// Thread-safety: functions are reentrant.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/quant/types.h"
#include "model/config.h"

namespace citadel {

struct SynthPreset {
  std::string name;
  std::string arch;     // "llama" | "qwen2" | "deepseek2" | "gemma3"; "" = taken from --arch (tiny)
  int n_layers, dim, n_heads, n_kv_heads, ffn_dim;  // deepseek2: n_kv_heads unused, ffn_dim = the dense layers'
  int64_t n_vocab;      // 0 = the built-in vocab's size
  bool tied;            // output.weight shares token_embd.weight
  float rope_theta, rms_eps;
  int64_t context_length;
  // deepseek2 only: MLA and MoE shapes (llama.cpp's MLA layout: attn_k_b / attn_v_b), YaRN rope scaling (factor 0:
  // none; yarn_log_mul = 0.1 * mscale_all_dim).
  MlaConfig mla{};
  MoeConfig moe{};
  double yarn_factor = 0, yarn_log_mul = 0;
  int64_t yarn_orig_ctx = 0;
  // gemma3 only: head_dim (0: dim / n_heads), the local layers' window and period (every swa_pattern-th layer is
  // global, as config.h's is_swa_layer), the local RoPE base. Written as llama.cpp's gemma3 keys (plus
  // attention.sliding_window_pattern and rope.freq_base_swa, which config.cc reads with Gemma-3's defaults).
  int head_dim = 0;
  int64_t sliding_window = 0;
  int swa_pattern = 0;
  float rope_theta_swa = 10000.0f;
};

const std::vector<SynthPreset>& synth_presets();

struct SynthOptions {
  std::string arch;          // "" = the preset's (tiny: llama)
  std::string preset = "tiny";
  uint64_t seed = 0;
  std::string dtype = "f32"; // f32 | f16 | bf16 | q8_0 | q4_0 | q4_K
  std::string out;
  std::string vocab_from;    // GGUF whose tokenizer.* keys are copied (n_vocab becomes its token count)
  int64_t n_vocab = 0;       // > 0 overrides the preset's vocabulary size
  // When set, write_synth takes tensor plan.tensors[index]'s values from here instead of its random init: out[j] =
  // element first + j (row-major), j < n, before encoding to the tensor's dtype. For weights defined elsewhere (the
  // CUDA decoder's synthetic weights: bench/gpu/deepseek_cpu_ref.cc); the file is then deterministic only if they are.
  std::function<void(size_t index, int64_t first, int64_t n, float* out)> values;
};

enum class SynthInit : uint8_t { kNormal, kNorm, kBias };

struct SynthTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // PyTorch order
  SynthInit init;
  float scale;                 // kNormal/kBias: standard deviation
};

struct SynthPlan {
  SynthPreset preset;           // resolved: arch and n_vocab filled in
  std::vector<SynthTensor> tensors;
  int64_t n_params = 0;
  uint64_t data_bytes = 0;      // tensor bytes without padding
};

// Validates options and returns the tensor plan (no file is written).
Result<SynthPlan> plan_synth(const SynthOptions& opts);
// Writes the model to opts.out (streaming, atomic rename at the end).
Status write_synth(const SynthOptions& opts);

// The ModelConfig the written file would give (model_config_from), without writing it: for plans of shapes too large
// to write (deepseek-v3).
ModelConfig synth_config(const SynthPlan& plan);

// The built-in byte-level BPE vocab: 256 GPT-2 byte tokens, merges learned from a fixed English text, then
// <|endoftext|>, <|im_start|>, <|im_end|>. Deterministic.
struct BuiltinVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> token_types;  // 1 normal, 3 control
  std::vector<std::string> merges;   // "a b"
  int32_t bos_id, eos_id, pad_id;
};
const BuiltinVocab& builtin_vocab();

}  // namespace citadel
