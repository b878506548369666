// CpuOps: the CPU backend of the layer recipes (model/recipe.h BackendOps) over the kernels of kernels/cpu, f32
// activations. One CpuOps is bound to one chunk of a forward step: tokens [t0, t0 + n) of a ForwardBatch, the KV
// views of every layer, the activation scratch and the logits output. Transformer::forward (model/transformer.h)
// checks the batch, splits it into chunks and runs the architecture's recipe over a CpuOps per chunk.
//
// Weights are resolved by (TensorRole, layer) through ModelWeights::mat / vec. A stacked linear (q|k|v, gate|up) is
// one cpu::matmul_multi: one parallel region for all its parts.
//
// Tensor parallelism (model/shard.h): with weights that are rank r's shard and that rank's Communicator, the ops
// are the rank's part of the step: linear over a row-parallel role (SplitAxis::kCols: o, down) sums its output over
// the ranks before its bias; embed looks up the rank's vocabulary rows (zero elsewhere) and sums over the ranks;
// logits computes the rank's vocabulary columns and gathers the whole rows; moe routes over all experts, runs the
// rank's experts (expert parallel) and sums the routed part over the ranks (the shared experts are a row-parallel
// FFN, summed by their down projection). Every other op is local (the rank's heads,
// its KV cache of its KV heads, its FFN slice); the residual stream is whole and equal on every rank.
//
// Thread-safety: a CpuOps belongs to the thread running the recipe; it writes the scratch, the KV pools at the
// chunk's slots and the chunk's logit rows. The kernels run on ThreadPool::current().
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "base/communicator.h"
#include "base/status.h"
#include "kernels/ops.h"
#include "model/recipe.h"
#include "model/weights.h"

namespace citadel {

// One forward step, as plain pointers (the engine's Batch maps onto it one to one).
struct ForwardBatch {
  int n_tokens = 0;
  const int32_t* tokens = nullptr;        // [n_tokens]
  const int32_t* positions = nullptr;     // [n_tokens]
  const int32_t* seq_of_token = nullptr;  // [n_tokens] in 0..n_seqs-1
  const int32_t* slots = nullptr;         // [n_tokens] block * block_size + offset to write K/V at
  int n_seqs = 0;
  const int32_t* block_tables = nullptr;  // [n_seqs, max_blocks]
  int max_blocks = 0;
  int n_logits = 0;
  const int32_t* logit_rows = nullptr;    // [n_logits] increasing token indices whose logits are wanted
};

// Optional wall-time breakdown of forward passes (benchmarks); accumulated, in seconds.
struct ForwardProfile {
  double matmul = 0;     // projections and LM head (incl. activation quantization)
  double attention = 0;  // paged attention
  double other = 0;      // embedding, norms, biases, rope, kv_write, residual adds, silu
};

constexpr size_t kNumActs = static_cast<size_t>(Act::kKvA) + 1;

// Activation buffers for up to max_tokens tokens per chunk: one per Act, no aliasing between them.
struct ForwardScratch {
  explicit ForwardScratch(const ModelConfig& c, int max_tokens);
  int max_tokens;
  // act[a]: [max_tokens, width(a)] (recipe.h gives the widths); a chunk of n tokens uses the first n rows. A stacked
  // linear writes its parts planar, part j from max_tokens * (the widths of parts 0..j-1) on: kQkv holds
  // q [max_tokens, H hd], then k [max_tokens, KVH hd], then v [max_tokens, KVH hd].
  std::array<std::vector<float>, kNumActs> act;
  std::vector<float> up;                         // [max_tokens, width(kFfn)] linear_silu_mul's up projection
  std::vector<int32_t> slot_block, slot_offset;  // [max_tokens] the chunk's KV slots split
  // MLA (empty otherwise): q_lat [max_tokens, H, r + qk_rope] absorbed queries, o_lat [max_tokens, H, r] attention
  // over the latents, head_in / head_out [max_tokens, max(qk_nope, r, v)] one head's rows gathered for its matmul.
  std::vector<float> q_lat, o_lat, head_in, head_out;
  // MoE (empty otherwise): router logits [max_tokens, E]; the selection [max_tokens, k]; one expert's gathered rows
  // x [max_tokens, D], gate / up [max_tokens, Fe], y [max_tokens, D]; rows: the (token, slot) pairs of one expert.
  std::vector<float> router, sel_w, ex_x, ex_gate, ex_up, ex_y;
  std::vector<float> ex_sum;  // tensor parallel: [max_tokens, D] this rank's routed experts' sum before the all-reduce
  std::vector<int32_t> sel_id, ex_rows;
  ForwardProfile* profile = nullptr;             // set to collect timings (adds a clock read per op)
};

class CpuOps final : public BackendOps {
 public:
  // Tokens [t0, t0 + n) of b, valid as Transformer::check_batch requires; n <= s->max_tokens. kv: one view per
  // layer. logits: [b.n_logits, n_vocab] for the whole batch; this chunk writes the rows of its logit rows. All must
  // outlive the CpuOps.
  // rope_local: the RoPE of sliding-window layers (config.h is_swa_layer). comm: the rank's communicator when w is a
  // shard of w.tp.size > 1 ranks (required then), else unused.
  CpuOps(const ModelWeights& w, const RopeParams& rope, const RopeParams& rope_local, const ForwardBatch& b, int t0,
         int n, const std::vector<KvCacheView>& kv, ForwardScratch* s, float* logits, Communicator* comm = nullptr);

  Status embed(TensorRole table) override;
  Status add_rmsnorm(bool add, TensorRole norm, int layer) override;
  Status linear(const Linear& w, int layer, Act in, Act out) override;
  Status linear_silu_mul(const Linear& w, int layer, Act in, Act out) override;
  Status rope_kv_write(int layer) override;
  Status attention(int layer) override;
  Status logits(TensorRole norm, TensorRole head) override;
  Status rmsnorm(Act a, TensorRole norm, int layer) override;
  Status mla_rope_kv_write(int layer) override;
  Status mla_attention(int layer) override;
  Status moe(int layer, Act in, Act out) override;
  Status scale(Act a, float s) override;
  Status qk_norm(int layer) override;
  Status linear_gelu_mul(const Linear& w, int layer, Act in, Act out) override;

 private:
  float* act(Act a) { return s_->act[static_cast<size_t>(a)].data(); }
  // The matmul targets of w's parts written planar into y (see ForwardScratch::act); returns the parts' count.
  int targets(const Linear& w, int layer, float* y, cpu::MatmulTarget* t) const;
  void add_biases(const Linear& w, int layer, const cpu::MatmulTarget* t) const;
  AttnBatch attn_batch(int layer) const;
  Status gated_ffn(const Linear& w, int layer, Act in, Act out, bool gelu);
  // Per head h: out[:, h, :] = in[:, h, :] W_h^T over this chunk's rows, W_h = the h-th [rows, cols] slice of a stack;
  // in rows in_stride apart with the head's cols at h * in_head, out likewise.
  Status per_head_matmul(const WeightView& stack, int n_heads, const float* in, size_t in_stride, size_t in_head,
                         float* out, size_t out_stride, size_t out_head);

  const ModelWeights& w_;
  const ModelConfig& c_;
  const RopeParams& rope_;
  const RopeParams& rope_local_;
  const ForwardBatch& b_;
  const int t0_, n_;
  const std::vector<KvCacheView>& kv_;
  ForwardScratch* s_;
  float* logits_;
  Communicator* comm_;  // tensor parallel: this rank's; null for whole weights
};

}  // namespace citadel
