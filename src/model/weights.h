// ModelWeights: the tensors of a llama-family decoder (llama, qwen2) bound to named per-layer slots, with every
// shape and dtype checked against the ModelConfig at load.
//
// Sources: GGUF (llama.cpp names: token_embd.weight, blk.N.attn_q.weight, ...) and HF safetensors (model.embed_tokens.
// weight, model.layers.N.self_attn.q_proj.weight, ...). The per-architecture part (which tensors must exist, e.g.
// qwen2's Q/K/V biases) lives in arch/<family>.cc; this file holds what the family shares.
//
// Storage: matmul weights are views into the memory-mapped file (kept alive by the ModelWeights) unless
// WeightsOptions::upcast_f32 asks for an f32 copy (exact mode: f32 math with f32 activations, used by the HF parity
// tests). Norm weights and biases are always converted to f32 once at load (they are small and read every token).
//
// Thread-safety: immutable after load; any number of forward passes may read it concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/tensor_store.h"
#include "kernels/ops.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/roles.h"

namespace citadel {

struct LayerWeights {
  const float* attn_norm = nullptr;  // [dim]
  WeightView wq;                     // [n_heads * head_dim, dim]
  WeightView wk;                     // [n_kv_heads * head_dim, dim]
  WeightView wv;                     // [n_kv_heads * head_dim, dim]
  const float* bq = nullptr;         // [n_heads * head_dim] or null
  const float* bk = nullptr;         // [n_kv_heads * head_dim] or null
  const float* bv = nullptr;         // [n_kv_heads * head_dim] or null
  WeightView wo;                     // [dim, n_heads * head_dim]
  const float* ffn_norm = nullptr;   // [dim]
  WeightView w_gate;                 // [ffn_dim, dim]
  WeightView w_up;                   // [ffn_dim, dim]
  WeightView w_down;                 // [dim, ffn_dim]
};

struct WeightsOptions {
  bool upcast_f32 = false;  // copy every matmul weight (and the embedding table) to f32 at load
};

struct ModelWeights {
  ModelConfig config;
  const ArchSpec* arch = nullptr;
  WeightView tok_embd;                 // [n_vocab, dim]
  std::vector<LayerWeights> layers;    // [n_layers]
  const float* output_norm = nullptr;  // [dim]
  WeightView output;                   // [n_vocab, dim]; the tok_embd view when tied
  const float* rope_freqs = nullptr;   // [rope_dim / 2] frequency divisors (Llama-3.1) or null
  bool upcast = false;

  // Bytes of matmul weights read by one decode token (all layers + LM head; the embedding row is negligible).
  uint64_t bytes_per_token() const;

  std::unique_ptr<TensorStore> store;        // the mapping the views point into
  std::vector<std::vector<float>> owned;     // f32 copies (norms, biases, upcast weights, derived rope factors)
};

// Maps and checks every tensor. Errors name the file and the tensor ("model.gguf: blk.3.attn_k.weight has shape
// [64, 576], expected [192, 576]"); a missing required tensor, an unsupported dtype or a non-finite norm fails too.
Result<std::unique_ptr<ModelWeights>> load_weights(std::unique_ptr<TensorStore> store, const WeightsOptions& opts);

// open_model_file + load_weights.
Result<std::unique_ptr<ModelWeights>> load_model(const std::string& path, const WeightsOptions& opts);

}  // namespace citadel
