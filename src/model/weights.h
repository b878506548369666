// ModelWeights: the tensors of a decoder bound by (TensorRole, layer), driven by its ArchSpec's role table
// (model/arch.h: which roles the recipe reads, which are optional; model/roles.h: names and shapes), with every shape
// and dtype checked against the ModelConfig at load. Nothing here is architecture-specific: a new family adds roles
// and a recipe, not fields.
//
// Sources: GGUF (llama.cpp names: token_embd.weight, blk.N.attn_q.weight, ...) and HF safetensors (model.embed_tokens.
// weight, model.layers.N.self_attn.q_proj.weight, ...), both named by tensor_name().
//
// Needs: a kRequired role must exist; a kOptional one is bound when present (kOutput absent: the LM head is the
// embedding table, tied; kRopeFreqs absent with "llama3" rope scaling: derived from the config); a kBiasGroup
// (q/k/v biases) is all or none, and required when ArchSpec::qkv_bias_required.
//
// HF checkpoints' other layouts (routed experts one tensor per expert or fused gate_up, block-scaled FP8 weights) are
// assembled at load by model/role_source.h.
//
// Storage: matrices are views into the memory-mapped file (kept alive by the ModelWeights), or into an assembled
// copy (owned_bytes), unless WeightsOptions::upcast_f32 asks for an f32 copy (exact mode: f32 math with f32 activations, used by the HF parity
// tests). Vectors (norms, biases, rope factors) are always converted to f32 once at load (they are small and read
// every token).
//
// Thread-safety: immutable after load; any number of forward passes may read it concurrently.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "base/huge_pages.h"
#include "base/status.h"
#include "format/tensor_store.h"
#include "kernels/ops.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/roles.h"

namespace citadel {

// The tensors of one layer (or the global ones) indexed by role. A role the model does not have is absent: its
// WeightView has data == nullptr (matrices), its pointer is null (vectors). Shapes: role_shape(config, role).
struct RoleWeights {
  std::array<WeightView, kNumTensorRoles> mat{};    // matrices (role_info(role).matrix)
  std::array<const float*, kNumTensorRoles> vec{};  // f32 vectors (norms, biases, rope factors)
};

struct WeightsOptions {
  bool upcast_f32 = false;  // copy every matmul weight (and the embedding table) to f32 at load
  // Copy the f16 / bf16 matrices CPU decode streams into ModelWeights::decode_copies (huge pages) instead of reading
  // them from the file mapping; off for loads that only feed a GPU upload, with CITADEL_CPU_HUGEPAGES=off, and for
  // models held in memory (TensorStore::file_backed false: a decrypted model keeps one copy).
  bool copy_half_for_decode = true;
};

// Where a tensor-parallel shard (model/shard.h) sits: rank of size, and the vocabulary rows [vocab_begin,
// vocab_end) its embedding and LM head hold. Whole weights: rank 0 of 1, the whole vocabulary.
struct TpPlace {
  int rank = 0, size = 1;
  int64_t vocab_begin = 0, vocab_end = 0;    // vocab_end 0: the whole vocabulary
  int64_t expert_begin = 0, expert_end = 0;  // MoE: the routed experts [begin, end) the shard's stacks hold
};

struct ModelWeights {
  ModelConfig config;  // a shard's: its heads, KV heads and FFN width (n_vocab: the whole vocabulary)
  const ArchSpec* arch = nullptr;
  TpPlace tp;
  RoleWeights global;               // kTokEmbd, kOutput (the kTokEmbd view when tied), kOutputNorm, kRopeFreqs
  std::vector<RoleWeights> layers;  // [n_layers] the per-layer roles
  bool upcast = false;

  // The matrix / vector of a role (layer ignored for global roles); absent: data == nullptr / nullptr.
  const WeightView& mat(TensorRole role, int layer = 0) const { return of(role, layer).mat[index(role)]; }
  const float* vec(TensorRole role, int layer = 0) const { return of(role, layer).vec[index(role)]; }

  // Bytes of matrices read by one decode token (every layer's + LM head; the embedding row is negligible).
  uint64_t bytes_per_token() const;

  std::unique_ptr<TensorStore> store;        // the mapping the views point into
  std::vector<std::vector<float>> owned;     // f32 copies (vectors, upcast weights, derived rope factors)
  // Tensors assembled at load from HF layouts the role table cannot view in place (model/role_source.h: stacked
  // experts in their stored dtype, FP8 weights dequantized to f32); the WeightView's dtype says what each holds.
  std::vector<std::vector<uint8_t>> owned_bytes;
  // The matrices CPU decode streams, in huge pages (base/huge_pages.h): the interleaved q4_0 / q8_0 layouts
  // (WeightView::interleaved) and copies of f16 / bf16 matrices (WeightView::data; WeightsOptions).
  HugePageBuffer decode_copies;

 private:
  static size_t index(TensorRole role) { return static_cast<size_t>(role); }
  const RoleWeights& of(TensorRole role, int layer) const {
    return role_info(role).per_layer ? layers[static_cast<size_t>(layer)] : global;
  }
};

// Maps and checks every tensor. Errors name the file and the tensor ("model.gguf: blk.3.attn_k.weight has shape
// [64, 576], expected [192, 576]"); a missing required tensor, an unsupported dtype or a non-finite norm fails too.
Result<std::unique_ptr<ModelWeights>> load_weights(std::unique_ptr<TensorStore> store, const WeightsOptions& opts);

// open_model_file + load_weights.
Result<std::unique_ptr<ModelWeights>> load_model(const std::string& path, const WeightsOptions& opts);

}  // namespace citadel
