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
// Shapes: T = tokens of the step, D = dim, H / KVH = heads / KV heads, hd = head_dim, F = ffn_dim. MLA (deepseek2):
// qk = hd = qk_nope + qk_rope, r = kv_lora_rank, qa = q_lora_rank, v = v_head_dim. MoE: Fe = expert_ffn_dim, S = shared
// experts. An Act an architecture does not use has width 0.
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
  kAttn,      // [T, H hd] attention output (MLA: [T, H v])
  kFfn,       // [T, max(F, S Fe)] silu(gate) * up (dense FFN or the shared experts)
  kQ,         // [T, H qk] MLA query: per head q_nope | q_rope
  kQA,        // [T, qa] MLA query latent (V3)
  kKvA,       // [T, r + qk_rope] MLA latent | shared RoPE key
};

// One linear layer over one weight role, or several stacked along the output (q|k|v, gate|up: one GEMM where the
// backend can). A role's bias (role_info(role).bias) is added when the model has it.
struct Linear {
  std::array<TensorRole, 3> roles{};
  int n = 1;
};

// The linear layers of the standard block, shared by the recipes (llama, qwen2, gemma3; deepseek2's dense FFN).
namespace lin {
inline constexpr Linear kQkv{{TensorRole::kWq, TensorRole::kWk, TensorRole::kWv}, 3};
inline constexpr Linear kO{{TensorRole::kWo}, 1};
inline constexpr Linear kGateUp{{TensorRole::kGate, TensorRole::kUp}, 2};
inline constexpr Linear kDown{{TensorRole::kDown}, 1};
inline constexpr Linear kShGateUp{{TensorRole::kGateShexp, TensorRole::kUpShexp}, 2};  // MoE shared experts
inline constexpr Linear kShDown{{TensorRole::kDownShexp}, 1};
}  // namespace lin

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
  // RoPE (the config's style and scaling: linear, YaRN, llama3 / rope_freqs factors; a sliding-window layer of an
  // interleaved model: theta rope_theta_swa, unscaled) on the q and k heads of kQkv at the step's positions, then k
  // and v of every token to `layer`'s KV cache at the step's slots.
  virtual Status rope_kv_write(int layer) = 0;
  // kAttn = causal softmax(q K^T / sqrt(hd)) V over `layer`'s paged KV cache (grouped-query: head h reads KV head
  // h / (H / KVH)); each token sees positions 0..its own of its sequence (a sliding-window layer: the last
  // sliding_window of them).
  virtual Status attention(int layer) = 0;
  // residual += delta; then for the rows whose logits are wanted: rmsnorm(row) * weight(norm) times head^T.
  virtual Status logits(TensorRole norm, TensorRole head) = 0;

  // The ops of multi-head latent attention and mixture of experts (deepseek2). A backend without them answers
  // kUnsupported (and refuses such a model at load).
  //
  // In place: every row of `a` (as wide as the norm) = rmsnorm(row) * weight(norm, layer).
  virtual Status rmsnorm(Act a, TensorRole norm, int layer);
  // kKvA's latent normalised by kKvANorm; RoPE on kKvA's shared key and on the rope part of every head of kQ; then
  // [latent | rope key] (r + qk_rope values) of every token to `layer`'s cache at the step's slots.
  virtual Status mla_rope_kv_write(int layer);
  // kAttn = MLA attention over `layer`'s latent cache, per head h: softmax(q_h . k_p * attention_scale(config)) over the
  // causal prefix, with k_p = [W_UK_h c_p | k_rope_p] and value W_UV_h c_p (c_p the cached latent). Backends may
  // absorb W_UK into the query and apply W_UV after attention (one shared latent head of r + qk_rope).
  virtual Status mla_attention(int layer);
  // The MoE FFN: out = SwiGLU_shared(in) (the n_shared shared experts as one FFN of n_shared * expert_ffn_dim, lin::
  // kShGateUp / kShDown; none when n_shared == 0) + sum over the token's selected experts e of w_e * FFN_e(in), the
  // selection and weights as model/moe.h's moe_route over the router logits in W_gate_inp^T. The shared FFN equals
  // n_shared always-chosen experts of weight 1 (its width split in expert_ffn_dim pieces), which backends may use.
  virtual Status moe(int layer, Act in, Act out);

  // The ops Gemma-3 adds. In place: a *= s.
  virtual Status scale(Act a, float s);
  // Per head, in place: the q heads of kQkv = rmsnorm(q_h) * weight(kAttnQNorm), the k heads likewise with kAttnKNorm.
  virtual Status qk_norm(int layer);
  // out [T, F] = gelu_tanh(in Wg^T) * (in Wu^T), w = {gate, up} (GeGLU).
  virtual Status linear_gelu_mul(const Linear& w, int layer, Act in, Act out);
};

// The forward pass of one architecture family over any backend.
using Recipe = Status (*)(BackendOps& ops, const ModelConfig& c);

// arch/llama.cc: the llama family (llama, qwen2): pre-norm attention with optional q/k/v biases, SwiGLU FFN.
Status llama_forward(BackendOps& ops, const ModelConfig& c);
// arch/deepseek2.cc: DeepSeek-V2/V3: MLA attention, dense FFN in the first layers, MoE with shared experts after.
Status deepseek2_forward(BackendOps& ops, const ModelConfig& c);
// arch/gemma3.cc: Gemma-3: scaled embeddings, q/k norms, four norms per layer, GeGLU, local / global layers.
Status gemma3_forward(BackendOps& ops, const ModelConfig& c);

}  // namespace citadel
