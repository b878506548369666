// ModelConfig: a model's hyper-parameters, read from a TensorStore's GGUF-style metadata (GGUF files directly;
// safetensors through the config.json mapping in format/hf_config.h) and from which tensors exist.
// Thread-safety: plain value type; the functions are pure.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "format/tensor_store.h"

namespace citadel {

// How RoPE pairs dimensions (REFERENCES.md §6).
enum class RopeStyle : uint8_t {
  kNone,  // no rotary embedding (bert: learned absolute positions)
  kNorm,  // adjacent pairs (2i, 2i+1): llama/deepseek GGUFs, whose converter permuted Q/K
  kNeox,  // pairs (i, i + rope_dim/2): qwen2, gemma3, and llama weights straight from HF safetensors
};
const char* rope_type_name(RopeStyle t);

struct RopeScaling {
  std::string type = "none";    // none | linear | yarn | longrope | llama3 | ...
  double factor = 1.0;
  int64_t original_context = 0; // context length the model was trained at (0: unknown)
  double low_freq_factor = 0;   // llama3 only
  double high_freq_factor = 0;  // llama3 only
};

struct ModelConfig {
  std::string arch;         // general.architecture: llama, qwen2, gemma3, bert, ...
  std::string name;         // general.name, may be empty
  std::string source;       // "gguf" or "safetensors"
  int64_t n_layers = 0;
  int64_t dim = 0;          // embedding width
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;   // == n_heads without GQA
  int64_t head_dim = 0;     // attention.key_length, else dim / n_heads
  int64_t hidden_dim = 0;   // FFN inner width
  int64_t n_vocab = 0;
  int64_t context_len = 0;  // trained context length
  double rope_theta = 10000.0;
  int64_t rope_dim = 0;     // dims rotated per head (rope.dimension_count, else head_dim)
  RopeStyle rope_type = RopeStyle::kNorm;
  RopeScaling rope_scaling;
  double norm_eps = 1e-5;   // RMSNorm epsilon (LayerNorm epsilon for bert)
  bool tied_embeddings = false;  // no output.weight / lm_head.weight: the output projection reuses the embedding
  bool attn_bias = false;        // Q/K/V projections carry biases (qwen2)
  int64_t n_params = 0;          // elements over all tensors
};

// Best effort: fills whatever the metadata and tensors provide, for any architecture; missing fields stay 0.
// Never fails (inspect prints from this).
ModelConfig read_model_config(const TensorStore& store);

// The config of a model Citadel can run (llama, qwen2): all fields present and consistent. Other architectures
// give kUnsupported; missing or inconsistent hyper-parameters give kDataLoss naming the key.
Result<ModelConfig> model_config_from(const TensorStore& store);

// The tensor names that mark the output projection and the first layer's Q bias, by file format.
bool has_output_tensor(const TensorStore& store);
bool has_qkv_bias(const TensorStore& store);

}  // namespace citadel
