// The CPU forward pass of the llama family (llama, qwen2) over a batch of tokens from several sequences whose K/V
// live in paged pools (one per layer):
//
//   x = embedding(tokens)
//   per layer: h = rmsnorm(x) -> q,k,v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv) -> rope(q, k) -> kv_write(k, v)
//              -> a = paged attention(q) -> x += a Wo^T -> h = rmsnorm(x) -> x += (silu(h Wg^T) * h Wu^T) Wd^T
//   logits = rmsnorm(x[logit rows]) Wout^T
//
// Batches larger than the scratch capacity run in chunks of whole-model passes; this is exact because a chunk's
// tokens only attend to positions at or before their own, whose K/V earlier chunks (or earlier steps) have written.
//
// Thread-safety: a Transformer is immutable after construction; forward() writes the KV pools and the scratch it is
// given, so concurrent calls need distinct scratch and disjoint KV slots. The kernels run on ThreadPool::global().
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "kernels/ops.h"
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
  double other = 0;      // embedding, norms, rope, kv_write, residual adds, silu
};

// Activation buffers for up to max_tokens tokens per chunk.
struct ForwardScratch {
  explicit ForwardScratch(const ModelConfig& c, int max_tokens);
  int max_tokens;
  std::vector<float> x;       // [max_tokens, dim] residual stream
  std::vector<float> h;       // [max_tokens, dim] normed input of a sub-block; gathered final rows
  std::vector<float> q;       // [max_tokens, n_heads * head_dim]
  std::vector<float> k;       // [max_tokens, n_kv_heads * head_dim]
  std::vector<float> v;       // [max_tokens, n_kv_heads * head_dim]
  std::vector<float> att;     // [max_tokens, n_heads * head_dim]
  std::vector<float> gate;    // [max_tokens, ffn_dim]
  std::vector<float> up;      // [max_tokens, ffn_dim]
  std::vector<int32_t> slot_block, slot_offset;  // [max_tokens]
  ForwardProfile* profile = nullptr;             // set to collect timings (adds a clock read per op)
};

class Transformer {
 public:
  explicit Transformer(const ModelWeights* w);

  const ModelConfig& config() const { return w_->config; }
  const RopeParams& rope() const { return rope_; }

  // kv: one view per layer (same n_blocks / block_size). logits: [b.n_logits, n_vocab]. Returns InvalidArgument
  // for a token id outside the vocabulary or a malformed batch; K/V of tokens before the bad one may be written.
  Status forward(const ForwardBatch& b, const std::vector<KvCacheView>& kv, ForwardScratch* s, float* logits) const;

 private:
  Status check_batch(const ForwardBatch& b, const std::vector<KvCacheView>& kv) const;
  Status run_chunk(const ForwardBatch& b, int t0, int n, const std::vector<KvCacheView>& kv, ForwardScratch* s,
                   float* logits) const;
  Status layer(int l, const ForwardBatch& b, int t0, int n, const KvCacheView& kv, ForwardScratch* s) const;

  const ModelWeights* w_;
  RopeParams rope_;
};

// RoPE parameters from the config (type, dims, theta, linear/YaRN scaling) and the weights' frequency factors.
RopeParams rope_params_for(const ModelConfig& c, const float* freq_factors);

}  // namespace citadel
