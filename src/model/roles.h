// The weight roles of the models Citadel runs: one table, shared by every backend and loader. A role is one logical
// tensor (per layer or global) with its GGUF and HF safetensors names, its shape as a function of the ModelConfig,
// and the axis a tensor-parallel split would cut.
//
// Names: per-layer roles are prefixed "blk.N." (GGUF) or "model.layers.N." (HF). Shapes are row-major [rows, cols]
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
};
constexpr int kNumTensorRoles = 16;

// Which axis of a matrix tensor parallelism would split across ranks.
enum class SplitAxis : uint8_t {
  kReplicated,  // every rank holds all of it (norms, the embedding table)
  kRows,        // column-parallel: output features split (q/k/v, gate/up, their biases, the LM head)
  kCols,        // row-parallel: input features split, outputs summed across ranks (o, down)
};

struct RoleInfo {
  TensorRole role;
  const char* gguf;      // GGUF name (per-layer: after "blk.N.")
  const char* hf;        // HF safetensors name (per-layer: after "model.layers.N.")
  bool per_layer;
  bool matrix;           // 2-D (else a vector)
  SplitAxis split;
  int synth_id;          // tensor id in the GPU synthetic weights (runtime/cuda_model_shape.cu); -1: none
  TensorRole bias;       // the bias added to this matrix's output (kWq -> kBq, ...); == role when none
};

const RoleInfo& role_info(TensorRole role);
const char* role_name(TensorRole role);  // "attn_q" style short name for messages

// The tensor's name in a store of the given format ("gguf" or "safetensors"). layer is ignored for global roles.
std::string tensor_name(TensorRole role, int layer, const std::string& format);

// Shape of the role's tensor under config c: {rows, cols} for matrices, {n} for vectors.
std::vector<int64_t> role_shape(const ModelConfig& c, TensorRole role);

}  // namespace citadel
