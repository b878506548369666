// CudaOps: the recipe's BackendOps (model/recipe.h) over the CUDA decoder's device state, bound to one step. Each op
// enqueues kernels on the decoder's stream (nothing synchronises, so the calls also record into a CUDA graph during
// capture). Precision is a property of the object: exact() (fp32 activations and KV cache) picks the kernels of
// kernels/cuda/exact.cu inside each op, otherwise bf16 activations with an fp32 residual and delta.
//
// Activations (Impl buffers): kResidual -> residual and kDelta -> delta (fp32 in both modes); kNormed -> h,
// kQkv -> qkv ([T][(H + 2 KVH) hd], q | k | v), kAttn -> attn, kFfn -> act (bf16, or fp32 with exact()); MLA's
// kQ, kQA, kKvA -> Impl::mm (bf16).
// Weights: (role, layer) -> the decoder's fused storage; Linear stacks q|k|v and gate|up as loaded.
// RoPE: plain RoPE computes theta^(-2i/hd) in the kernels; scaled RoPE (linear, YaRN, llama3 / rope_freqs) passes the
// decoder's frequency table (Impl::rope_inv_freq, uploaded at finalize). debug_skip (CudaSkip bits, bf16 path only)
// leaves op families out: see cuda_decoder.h.
//
// Internal to runtime/*.cu. Thread-safety: one step on the decoder's thread.
#pragma once

#include "kernels/cuda/mla.h"
#include "kernels/cuda/moe.h"
#include "model/recipe.h"
#include "runtime/cuda_decoder_impl.cuh"

namespace citadel::runtime {

// The step one CudaOps runs: T token rows of B sequences (decode: T == B, one token each), the decode attention
// split (n_splits blocks of `partition` keys: n_splits * partition covers every context), and whether the logits
// are wanted for all T rows or only each sequence's last.
struct CudaStepShape {
  int T = 0, B = 0;
  bool decode = false;
  int n_splits = 1, partition = 256;
  bool all_logits = false;
};

// The kernels of an MoE layer's experts (cuda_mla_moe.cu moe_path): per-pair GEMVs for steps of at most
// kPairMaxTokens tokens (bf16 experts), grouped GEMVs, or tensor-core tiles from kMmaPairsPerExpert pairs per expert
// on average (V2-Lite on an H100: the tiles win from T = 64, tie at T = 16).
enum class MoePath { kPair, kGemv, kMma };
constexpr int kMmaPairsPerExpert = 2;
constexpr int kPairMaxTokens = 4;
MoePath moe_path(int T, int k, int E, bool quantized);

// deepseek2 (cuda_mla_moe.cu): Internal unless the decoder's model has MLA and `layer` is one of its layers; the
// kernels' view of the MLA dims; the routing parameters of moe.h's moe_route from the model's MoE config (both
// paths: the k routed choices, then the S shared experts as slots E.. of weight 1).
Status mla_layer_ok(const CudaDecoder::Impl& m, int layer, const char* op);
cuda::MlaShape mla_shape(const ModelConfig& c);
cuda::MoeRouting moe_routing(const MoeConfig& e);

class CudaOps final : public BackendOps {
 public:
  CudaOps(CudaDecoder::Impl& m, const CudaStepShape& s);

  bool exact() const { return m_.exact(); }

  Status embed(TensorRole table) override;
  Status add_rmsnorm(bool add, TensorRole norm, int layer) override;
  Status linear(const Linear& w, int layer, Act in, Act out) override;
  Status linear_silu_mul(const Linear& w, int layer, Act in, Act out) override;
  Status rope_kv_write(int layer) override;
  Status attention(int layer) override;
  Status logits(TensorRole norm, TensorRole head) override;
  // deepseek2 (q_a) and gemma3 (the delta's post norms), both paths: cuda_mla_moe.cu.
  Status rmsnorm(Act a, TensorRole norm, int layer) override;
  Status mla_rope_kv_write(int layer) override;
  Status mla_attention(int layer) override;
  Status moe(int layer, Act in, Act out) override;
  // gemma3, both paths (cuda_gemma_ops.cu; linear_gelu_mul here).
  Status scale(Act a, float s) override;
  Status qk_norm(int layer) override;
  Status linear_gelu_mul(const Linear& w, int layer, Act in, Act out) override;

 private:
  // The fused matrix of w in `layer` and the CudaSkip bit of its op family; null for a stack the decoder does not
  // hold (e.g. q|k without v) or that this layer's kind lacks (a dense FFN in an MoE layer).
  const LinearW* matrix(const Linear& w, int layer, uint32_t* skip_bit) const;
  const bf16_t* norm_weight(TensorRole norm, int layer) const;
  void* buffer(Act a) const;  // the activation's device buffer (bf16 or fp32, see above)
  // How many leading sequences take the decode attention kernel (the others: the prefill kernel, one launch each).
  int decode_prefix() const;
  // fp32 activations: y [M][N] = x [M][K] W^T (+ bias) with fp32 matrices (gemv_f32) or bf16 ones (forward_xf32).
  void linear32(const LinearW& w, const float* x, int M, float* y) const;
  bool w32() const { return m_.opt.format == CudaWeightFormat::kF32; }  // fp32 matrices and embedding
  void norm(const float* d, const bf16_t* w);  // residual += d (if d); h = rmsnorm(residual) * w
  // gate|up of w over normed, then act = silu(gate) * up or gelu_tanh(gate) * up (GeGLU).
  Status gated_ffn(const Linear& w, int layer, Act in, Act out, bool gelu, const char* op);
  // gemma3: delta = rmsnorm(delta) * weight(norm, layer) in place (cuda_gemma_ops.cu).
  Status delta_rmsnorm(TensorRole norm, int layer);
  // deepseek2: the step's paged view of `layer`'s latent cache for the MLA attention kernels (cache: the bf16 pool;
  // the exact path passes its fp32 pool beside it).
  cuda::MlaAttention mla_params(int layer) const;
  // How the MLA absorptions run for T tokens (cuda_mla_moe.cu): per-head GEMVs, and W_UK's with the rope work.
  bool absorb_with_gemv(int T) const;
  bool absorb_with_rope(int T) const;
  bool mla_query_with_kv_a(const Linear& w, int layer, const LinearW& q, Act in, Act out);
  // The exact path's MLA and MoE ops (cuda_mla_moe_exact.cu): fp32 activations and latent cache, fp32 (kF32) or bf16
  // weights; the ops above hand over to them after their checks.
  Status mla_rope_kv_write_exact(int layer);
  Status mla_attention_exact(int layer);
  Status moe_exact(int layer);
  // MoE, both paths (cuda_mla_moe.cu): this rank's routing (expert parallel: its held experts, the shared ones
  // apart); moe_shared_slice: expert parallel, the rank's slice of the shared experts as a dense FFN into delta;
  // moe_finish: the weighted sum of the routed choices into delta, and expert parallel, delta summed over the ranks.
  cuda::MoeRouting moe_rank_routing() const;
  Status moe_shared_slice(int layer);
  Status moe_finish(int T, int k);

  CudaDecoder::Impl& m_;
  CudaStepShape s_;
  CudaDecoder::Impl::IntLayout L_;
  cuda::PagedAttention pa_;  // pools set per layer
  GemmContext g_;
  uint32_t skip_;  // opt.debug_skip in the bf16 path, 0 in the exact one
  int absorbed_layer_ = -1;  // deepseek2: the layer whose W_UK absorption mla_rope_kv_write ran with the rope work
  int kv_a_done_layer_ = -1;  // deepseek2: the layer whose kv_a projection ran with its query projection
};

}  // namespace citadel::runtime
