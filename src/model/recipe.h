// The layer recipe of an architecture, written once (model/arch/<family>.cc) against BackendOps, the ops every
// backend implements (CPU: model/cpu_ops.h over kernels/cpu; CUDA: runtime/cuda_ops over kernels/cuda). A backend
// executes a recipe for one step (or one chunk of a step) of T tokens from B sequences: it binds the step's tokens,
// positions, KV slots and block tables before calling forward(), and samples from the logits afterwards.
//
// Activations are named, not passed: each backend owns one buffer per Act, sized for its largest step, at its own
// precision (CPU f32; CUDA bf16, or fp32 in the exact mode). Precision is a property of the backend's ops, never of
// the recipe. Weights are named by (TensorRole, layer); a backend resolves them to its own storage (views into the
// file, device copies, quantized repacks, fused stacks).
//
// Shapes: T = tokens of the step, D = dim, H / KVH = heads / KV heads, hd = head_dim, F = ffn_dim.
//
// Thread-safety: a BackendOps object belongs to one executing thread; recipes are pure functions of it.
#pragma once

#include <array>
#include <cstdint>

#include "base/status.h"
#include "model/config.h"
#include "model/roles.h"

namespace citadel {

enum class Act : uint8_t {
  kResidual,  // [T, D] the residual stream
  kDelta,     // [T, D] a sub-block's output, added to the residual by the next add_rmsnorm / logits
  kNormed,    // [T, D] rmsnorm(residual) * weight
  kQkv,       // [T, (H + 2 KVH) hd] q | k | v of each token (backends may keep the three parts apart)
  kAttn,      // [T, H hd] attention output
  kFfn,       // [T, F] silu(gate) * up
};

// One linear layer over one weight role, or several stacked along the output (q|k|v, gate|up: one GEMM where the
// backend can). A role's bias (role_info(role).bias) is added when the model has it.
struct Linear {
  std::array<TensorRole, 3> roles{};
  int n = 1;
};

class BackendOps {
 public:
  virtual ~BackendOps() = default;

  // residual = the rows of `table` [n_vocab, D] for the step's tokens.
  virtual Status embed(TensorRole table) = 0;
  // add: residual += delta. Then normed = rmsnorm(residual) * weight(norm, layer), eps = config.norm_eps.
  virtual Status add_rmsnorm(bool add, TensorRole norm, int layer) = 0;
  // out = in W^T (+ bias), W = w's roles of `layer` stacked along the output.
  virtual Status linear(const Linear& w, int layer, Act in, Act out) = 0;
  // out [T, F] = silu(in Wg^T) * (in Wu^T), w = {gate, up}.
  virtual Status linear_silu_mul(const Linear& w, int layer, Act in, Act out) = 0;
  // RoPE (the config's style and scaling: linear, YaRN, llama3 / rope_freqs factors) on the q and k heads of kQkv at
  // the step's positions, then k and v of every token to `layer`'s KV cache at the step's slots.
  virtual Status rope_kv_write(int layer) = 0;
  // kAttn = causal softmax(q K^T / sqrt(hd)) V over `layer`'s paged KV cache (grouped-query: head h reads KV head
  // h / (H / KVH)); each token sees positions 0..its own of its sequence.
  virtual Status attention(int layer) = 0;
  // residual += delta; then for the rows whose logits are wanted: rmsnorm(row) * weight(norm) times head^T.
  virtual Status logits(TensorRole norm, TensorRole head) = 0;
};

// The forward pass of one architecture family over any backend.
using Recipe = Status (*)(BackendOps& ops, const ModelConfig& c);

// arch/llama.cc: the llama family (llama, qwen2): pre-norm attention with optional q/k/v biases, SwiGLU FFN.
Status llama_forward(BackendOps& ops, const ModelConfig& c);

}  // namespace citadel
