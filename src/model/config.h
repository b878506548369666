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
  double yarn_log_mul = 0;      // deepseek2 yarn: 0.1 * mscale_all_dim; attention scale mscale^2 / sqrt(qk head),
                                // mscale = 1 + yarn_log_mul * ln(factor)
};

// Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds a compressed latent plus a shared RoPE key.
// ModelConfig of such a model: head_dim = qk_nope_dim + qk_rope_dim (query/key head), rope_dim = qk_rope_dim,
// n_kv_heads = 1 (one latent head shared by every query head in the absorbed form).
struct MlaConfig {
  int64_t q_lora_rank = 0;   // 0: plain q projection (V2-Lite)
  int64_t kv_lora_rank = 0;  // latent width (512)
  int64_t qk_nope_dim = 0;   // per-head q/k dims without RoPE (128)
  int64_t qk_rope_dim = 0;   // per-head q/k dims with RoPE, the shared key's width (64)
  int64_t v_head_dim = 0;    // per-head value width (128)
};

// Mixture of experts (DeepSeek-V2/V3): routed experts, shared experts, and the first dense layers.
struct MoeConfig {
  int64_t n_experts = 0;       // routed experts
  int64_t n_experts_used = 0;  // top-k per token
  int64_t n_shared = 0;        // shared experts (always on)
  int64_t expert_ffn_dim = 0;  // FFN width of one expert
  int64_t n_dense_layers = 0;  // leading layers with a dense FFN of ffn_dim
  bool sigmoid_gating = false; // V3: sigmoid scores + correction bias for selection; V2: softmax
  bool norm_topk = false;      // renormalise the selected weights
  double routed_scale = 1.0;   // routed_scaling_factor
  int64_t n_group = 0, topk_group = 0;  // group-limited selection; 0: off (V2: a group's score is its best
                                        // expert; V3: the sum of its best two, correction bias included)
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
  int64_t ffn_dim = 0;   // FFN inner width
  int64_t n_vocab = 0;
  int64_t context_len = 0;  // trained context length
  double rope_theta = 10000.0;
  int64_t rope_dim = 0;     // dims rotated per head (rope.dimension_count, else head_dim)
  RopeStyle rope_type = RopeStyle::kNorm;
  RopeScaling rope_scaling;
  double norm_eps = 1e-5;   // RMSNorm epsilon (LayerNorm epsilon for bert)
  bool tied_embeddings = false;  // no output.weight / lm_head.weight: the output projection reuses the embedding
  bool attn_bias = false;        // Q/K/V projections carry biases (qwen2)
  // Interleaved local / global attention (gemma3): every layer but each swa_pattern-th (1-based) attends to the last
  // sliding_window keys only and rotates with rope_theta_swa (unscaled); 0: every layer global.
  int64_t sliding_window = 0;
  int64_t swa_pattern = 0;
  double rope_theta_swa = 0;
  int64_t n_params = 0;          // elements over all tensors but FP8 block scales (*_scale_inv)
  // Present for architectures with MLA / MoE (none of the llama family): every backend must refuse a model whose
  // config has a part it does not implement.
  bool has_mla = false;
  MlaConfig mla;
  bool has_moe = false;
  MoeConfig moe;
};

// Best effort: fills whatever the metadata and tensors provide, for any architecture; missing fields stay 0.
// Never fails (inspect prints from this).
ModelConfig read_model_config(const TensorStore& store);

// The softmax scale of attention: 1 / sqrt(head_dim), times mscale^2 for deepseek2 yarn (see RopeScaling).
double attention_scale(const ModelConfig& c);

// Whether `layer` is a sliding-window (local) layer of an interleaved model.
inline bool is_swa_layer(const ModelConfig& c, int layer) {
  return c.sliding_window > 0 && c.swa_pattern > 0 && (layer + 1) % c.swa_pattern != 0;
}

// The config of a model Citadel can run (llama, qwen2, deepseek2, gemma3): all fields present and consistent. Other architectures
// give kUnsupported; missing or inconsistent hyper-parameters give kDataLoss naming the key.
Result<ModelConfig> model_config_from(const TensorStore& store);

// The tensor names that mark the output projection and the first layer's Q bias, by file format.
bool has_output_tensor(const TensorStore& store);
bool has_qkv_bias(const TensorStore& store);

}  // namespace citadel
