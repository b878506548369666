// Transformer: the CPU forward pass of any architecture with a recipe (model/arch.h: llama, qwen2, deepseek2,
// gemma3) over a batch of tokens from several sequences whose K/V live in paged pools (one per layer). It checks the
// batch, then runs the architecture's recipe (ArchSpec::forward, e.g. llama_forward in arch/llama.cc) over CpuOps
// (model/cpu_ops.h: the recipe's ops on the CPU kernels) once per chunk of tokens.
//
// Batches larger than the scratch capacity run in chunks of whole-model passes; this is exact because a chunk's
// tokens only attend to positions at or before their own, whose K/V earlier chunks (or earlier steps) have written.
//
// Thread-safety: a Transformer is immutable after construction; forward() writes the KV pools and the scratch it is
// given, so concurrent calls need distinct scratch and disjoint KV slots. The kernels run on ThreadPool::current().
#pragma once

#include <vector>

#include "base/status.h"
#include "kernels/ops.h"
#include "model/cpu_ops.h"
#include "model/weights.h"

namespace citadel {

class Transformer {
 public:
  // comm: when w is a tensor-parallel shard (model/shard.h), this rank's communicator; every rank runs forward on
  // the same batch at the same time, and each gets the whole logits.
  explicit Transformer(const ModelWeights* w, Communicator* comm = nullptr);

  const ModelConfig& config() const { return w_->config; }
  const RopeParams& rope() const { return rope_; }
  const RopeParams& rope_local() const { return rope_local_; }  // sliding-window layers (= rope() without them)

  // kv: one view per layer (same n_blocks / block_size). logits: [b.n_logits, n_vocab]. Returns InvalidArgument
  // for a token id outside the vocabulary or a malformed batch; K/V of tokens before the bad one may be written.
  Status forward(const ForwardBatch& b, const std::vector<KvCacheView>& kv, ForwardScratch* s, float* logits) const;

 private:
  Status check_batch(const ForwardBatch& b, const std::vector<KvCacheView>& kv) const;
  Status run_chunk(const ForwardBatch& b, int t0, int n, const std::vector<KvCacheView>& kv, ForwardScratch* s,
                   float* logits) const;

  const ModelWeights* w_;
  Communicator* comm_;
  RopeParams rope_;
  RopeParams rope_local_;
};

}  // namespace citadel
