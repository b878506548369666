// The weight roles of the models Citadel runs: one table, shared by every backend and loader. A role is one logical
// tensor (per layer or global) with its GGUF and HF safetensors names, its shape as a function of the ModelConfig,
// and the axis a tensor-parallel split would cut.
//
// Names: per-layer roles are prefixed "blk.N." (GGUF) or "model.layers.N." (HF). HF checkpoints store the routed
// experts' stacks in one of two layouts (HfExpertParts below); the table names the fused one. Shapes are row-major [rows, cols]
// = [out, in] for matrices (GGUF ne[1], ne[0]) and [n] for vectors.
//
// Thread-safety: immutable tables and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace citadel {

// Stable values: synth_id() of the GPU synthetic weights depends on some of them (see role_info().synth_id).
enum class TensorRole : uint8_t {
  kTokEmbd,     // [n_vocab, dim]
  kOutputNorm,  // [dim]
  kOutput,      // [n_vocab, dim] (absent when tied: the embedding is the LM head)
  kRopeFreqs,   // [rope_dim / 2] frequency divisors (Llama-3.1 GGUFs)
  kAttnNorm,    // [dim]
  kWq,          // [n_heads * head_dim, dim]
  kWk,          // [n_kv_heads * head_dim, dim]
  kWv,          // [n_kv_heads * head_dim, dim]
  kBq,          // [n_heads * head_dim]
  kBk,          // [n_kv_heads * head_dim]
  kBv,          // [n_kv_heads * head_dim]
  kWo,          // [dim, n_heads * head_dim]
  kFfnNorm,     // [dim]
  kGate,        // [ffn_dim, dim]
  kUp,          // [ffn_dim, dim]
  kDown,        // [dim, ffn_dim]
  // Multi-head latent attention (deepseek2). qk = qk_nope + qk_rope (head_dim), r = kv_lora_rank.
  kWqA,         // [q_lora, dim] query down-projection (V3; V2-Lite uses kWq [H qk, dim])
  kQANorm,      // [q_lora]
  kWqB,         // [H qk, q_lora] query up-projection
  kWkvA,        // [r + qk_rope, dim] latent | shared RoPE key
  kKvANorm,     // [r]
  kWkB,         // [H, r, qk_nope] per head: the latent's key up-projection, transposed (absorbed into the query)
  kWvB,         // [H, v_head, r] per head: the latent's value up-projection
  kWkvB,        // [H (qk_nope + v_head), r] k|v up-projections of older GGUFs and HF (kv_b_proj); split at load
  // Mixture of experts (deepseek2). E = experts, Fe = expert_ffn_dim, S = n_shared.
  kFfnGateInp,  // [E, dim] router
  kExpProbsB,   // [E] selection-only correction bias (V3)
  kGateExps,    // [E, Fe, dim]
  kUpExps,      // [E, Fe, dim]
  kDownExps,    // [E, dim, Fe]
  kGateShexp,   // [S Fe, dim] shared experts, as one FFN
  kUpShexp,     // [S Fe, dim]
  kDownShexp,   // [dim, S Fe]
  // Gemma-3: per-head q/k norms and the norms after the attention and FFN sub-blocks.
  kAttnQNorm,   // [head_dim]
  kAttnKNorm,   // [head_dim]
  kPostAttnNorm,  // [dim]
  kPostFfwNorm,   // [dim]
};
constexpr int kNumTensorRoles = 37;

// Which axis of a matrix tensor parallelism would split across ranks.
enum class SplitAxis : uint8_t {
  kReplicated,  // every rank holds all of it (norms)
  kRows,        // column-parallel: output features split (q/k/v, gate/up, their biases; the vocabulary rows of the
                // embedding and the LM head)
  kCols,        // row-parallel: input features split, outputs summed across ranks (o, down)
  kExperts,     // the leading axis of a 3-D stack split: whole experts (expert-parallel), or whole heads (MLA
                // k_b / v_b)
};

struct RoleInfo {
  TensorRole role;
  const char* gguf;      // GGUF name (per-layer: after "blk.N.")
  const char* hf;        // HF safetensors name (per-layer: after "model.layers.N.")
  bool per_layer;
  bool matrix;           // 2-D or a stack of 2-D (3-D: per head or per expert), else a vector
  SplitAxis split;
  int synth_id;          // tensor id in the GPU synthetic weights (runtime/cuda_model_shape.cu); -1: none
  TensorRole bias;       // the bias added to this matrix's output (kWq -> kBq, ...); == role when none
};

const RoleInfo& role_info(TensorRole role);
const char* role_name(TensorRole role);  // "attn_q" style short name for messages

// The tensor's name in a store of the given format ("gguf" or "safetensors"). layer is ignored for global roles.
std::string tensor_name(TensorRole role, int layer, const std::string& format);

// How HF checkpoints store a routed-expert stack (kGateExps / kUpExps [E, Fe, dim], kDownExps [E, dim, Fe]):
//  fused (transformers >= 5):  tensor_name(role) = model.layers.N.mlp.experts.gate_up_proj [E, 2 Fe, dim] (per
//                              expert: the gate rows, then the up rows) and ...mlp.experts.down_proj [E, dim, Fe];
//                              the role is row block `part` of the `parts` equal blocks of each expert's slice;
//  per expert (original):      model.layers.N.mlp.experts.E.<per_expert>, [Fe, dim] or [dim, Fe] each.
struct HfExpertParts {
  int part, parts;
  const char* per_expert;  // "gate_proj.weight"
};
const HfExpertParts* hf_expert_parts(TensorRole role);  // nullptr for roles that are not routed-expert stacks
// "model.layers.N.mlp.experts.E.gate_proj.weight"; empty for other roles.
std::string hf_expert_name(TensorRole role, int layer, int64_t expert);

// Shape of the role's tensor under config c: {rows, cols} for matrices, {n, rows, cols} for stacks, {n} for vectors.
std::vector<int64_t> role_shape(const ModelConfig& c, TensorRole role);

}  // namespace citadel
