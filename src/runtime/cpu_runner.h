// CpuRunner: engine::ModelRunner over the CPU backend: the Transformer, which runs the architecture's recipe on
// CpuOps (model/cpu_ops.h). Owns the paged KV pools, sized from the architecture's KV description
// (ArchSpec::kv_layout: llama: parts k and v, n_kv_heads x head_dim each; deepseek2: one latent | rope-key part):
// per layer one f32 pool per part, [n_blocks, block_size, heads, width], and the activation scratch, sized for
// max_batched_tokens per chunk (larger batches run in chunks; see transformer.h).
//
// Tensor parallelism (options.tensor_parallel N > 1): the weights are split into N shards (model/shard.h), each rank
// with its own Transformer, scratch and KV pools (its KV heads), the ranks threads of this process exchanging
// partial sums through a ThreadCommGroup (base/communicator.h). forward() hands the one batch to every rank and
// returns rank 0's logits, which are the whole model's. The engine sees one runner with the ranks' KV bytes per
// token summed. This is the CPU twin of multi-GPU tensor parallelism (the proof that the split is right, and a way
// to spread one model over sockets), not a speed path on one socket.
//
// Thread-safety: as ModelRunner: driven by one engine thread. The weights may be shared with other runners.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/model_runner.h"
#include "base/communicator.h"
#include "base/thread_pool.h"
#include "model/transformer.h"
#include "model/weights.h"

namespace citadel::runtime {

struct CpuRunnerOptions {
  int max_batched_tokens = 512;  // scratch capacity (tokens per chunk)
  int max_context = 0;           // 0: the model's trained context length
  int threads = 0;               // > 0: this runner's own kernel threads (its placement); 0: the global pool
  int tensor_parallel = 1;       // ranks the weights are split over (model/shard.h); 1: whole weights
};

// The automatic CPU KV budget (serve with kv_memory_mb 0): a quarter of the memory available at load, at most
// kCpuKvMaxBytes, at least kCpuKvMinBytes. Pure. The pool's pages are touched only as tokens are written, so the
// resident memory grows with use, not with the budget.
inline constexpr uint64_t kCpuKvMaxBytes = uint64_t{8} << 30, kCpuKvMinBytes = uint64_t{64} << 20;
uint64_t cpu_kv_budget_bytes(double available_bytes);

class CpuRunner : public engine::ModelRunner {
 public:
  // weights must outlive the runner. With tensor_parallel > 1 the split can fail (heads not divisible, MLA / MoE):
  // init_status() says why, and every call returns that error.
  CpuRunner(const ModelWeights* weights, CpuRunnerOptions opts = {});
  ~CpuRunner() override;

  Status init_status() const { return init_; }
  int n_vocab() const override;
  int max_context() const override;
  size_t kv_bytes_per_token() const override;  // over all ranks
  Status allocate_kv(int n_blocks, int block_size) override;
  // cpu_kv_budget_bytes(MemAvailable) (fraction, a GPU's share, does not apply to host memory).
  Result<int> allocate_kv_from_memory(int block_size, double fraction) override;
  Status copy_blocks(const std::vector<std::pair<int, int>>& src_dst) override;
  Status forward(const engine::Batch& batch, float* logits) override;

  const Transformer& transformer() const { return ranks_[0]->tf; }  // rank 0's
  // Tensor parallel: one line per rank ("rank 1 of 2: 4 of 8 heads, 1 of 2 KV heads, FFN 64 of 128, vocabulary
  // [128, 256), 1.2 MB of weights read per token (0.4 MB copied column slices), KV 256 B/token"); empty for one rank.
  std::vector<std::string> rank_plan() const;
  // Collect per-op-class timings of later forward() calls into p (null: off), rank 0's. Benchmarks only.
  void set_profile(ForwardProfile* p) { ranks_[0]->scratch.profile = p; }

 private:
  // One rank: whole weights, or its shard; its Transformer, scratch and KV pools.
  struct Rank {
    Rank(const ModelWeights* w, std::unique_ptr<ModelWeights> shard, Communicator* comm, int max_tokens);
    std::unique_ptr<ModelWeights> shard;  // tensor parallel: this rank's shard (w points at it)
    const ModelWeights* w;
    KvLayout kv_layout;
    Transformer tf;
    ForwardScratch scratch;
    std::vector<size_t> part_floats;  // [parts] floats per block of one part's pool: block_size * values()
    // [n_layers * parts][n_blocks * part_floats[part]], layer-major; not zeroed (slots are written before read).
    std::vector<std::unique_ptr<float[]>> pools;
    std::vector<KvCacheView> views;  // [n_layers] over the layer's k and v pools
    std::vector<float> logits;       // ranks > 0: their copy of the logits (rank 0 writes the caller's)
    size_t kv_bytes_per_token() const;
    Status allocate_kv(int n_blocks, int block_size);
  };

  const ModelWeights* w_;
  CpuRunnerOptions opts_;
  Status init_;
  std::unique_ptr<ThreadCommGroup> comm_;  // tensor parallel: the ranks' group
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::unique_ptr<ThreadPool> pool_;  // opts_.threads > 0: current() for the kernels during forward()
  int n_blocks_ = 0, block_size_ = 0;
};

}  // namespace citadel::runtime
