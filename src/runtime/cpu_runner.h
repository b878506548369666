// CpuRunner: engine::ModelRunner over the CPU backend: the Transformer, which runs the architecture's recipe on
// CpuOps (model/cpu_ops.h). Owns the paged KV pools, sized from the architecture's KV description
// (ArchSpec::kv_layout: llama: parts k and v, n_kv_heads x head_dim each; deepseek2: one latent | rope-key part):
// per layer one f32 pool per part, [n_blocks, block_size, heads, width], and the activation scratch, sized for max_batched_tokens per chunk (larger
// batches run in chunks; see transformer.h).
// Thread-safety: as ModelRunner: driven by one engine thread. The weights may be shared with other runners.
#pragma once

#include <memory>

#include "base/thread_pool.h"

#include <memory>
#include <vector>

#include "backend/model_runner.h"
#include "model/transformer.h"
#include "model/weights.h"

namespace citadel::runtime {

struct CpuRunnerOptions {
  int max_batched_tokens = 512;  // scratch capacity (tokens per chunk)
  int max_context = 0;           // 0: the model's trained context length
  int threads = 0;               // > 0: this runner's own kernel threads (its placement); 0: the global pool
};

// The automatic CPU KV budget (serve with kv_memory_mb 0): a quarter of the memory available at load, at most
// kCpuKvMaxBytes, at least kCpuKvMinBytes. Pure. The pool's pages are touched only as tokens are written, so the
// resident memory grows with use, not with the budget.
inline constexpr uint64_t kCpuKvMaxBytes = uint64_t{8} << 30, kCpuKvMinBytes = uint64_t{64} << 20;
uint64_t cpu_kv_budget_bytes(double available_bytes);

class CpuRunner : public engine::ModelRunner {
 public:
  // weights must outlive the runner.
  CpuRunner(const ModelWeights* weights, CpuRunnerOptions opts = {});

  int n_vocab() const override;
  int max_context() const override;
  size_t kv_bytes_per_token() const override;
  Status allocate_kv(int n_blocks, int block_size) override;
  // cpu_kv_budget_bytes(MemAvailable) (fraction, a GPU's share, does not apply to host memory).
  Result<int> allocate_kv_from_memory(int block_size, double fraction) override;
  Status copy_blocks(const std::vector<std::pair<int, int>>& src_dst) override;
  Status forward(const engine::Batch& batch, float* logits) override;

  const Transformer& transformer() const { return tf_; }
  // Collect per-op-class timings of later forward() calls into p (null: off). Benchmarks only.
  void set_profile(ForwardProfile* p) { scratch_.profile = p; }

 private:
  const ModelWeights* w_;
  CpuRunnerOptions opts_;
  KvLayout kv_layout_;
  Transformer tf_;
  ForwardScratch scratch_;
  std::unique_ptr<ThreadPool> pool_;  // opts_.threads > 0: current() for the kernels during forward()
  int n_blocks_ = 0, block_size_ = 0;
  std::vector<size_t> part_floats_;        // [parts] floats per block of one part's pool: block_size * values()
  // [n_layers * parts][n_blocks * part_floats_[part]], layer-major; not zeroed (slots are written before read).
  std::vector<std::unique_ptr<float[]>> pools_;
  std::vector<KvCacheView> views_;         // [n_layers] over the layer's k and v pools
};

}  // namespace citadel::runtime
