#include "runtime/cpu_runner.h"

#include <algorithm>
#include <new>
#include <string>

#include "base/process_metrics.h"

namespace citadel::runtime {

CpuRunner::CpuRunner(const ModelWeights* weights, CpuRunnerOptions opts)
    : w_(weights),
      opts_(opts),
      kv_layout_(weights->arch->kv_layout(weights->config)),
      tf_(weights),
      scratch_(weights->config, opts.max_batched_tokens),
      pool_(opts.threads > 0 ? std::make_unique<ThreadPool>(opts.threads) : nullptr) {}

int CpuRunner::n_vocab() const { return static_cast<int>(w_->config.n_vocab); }

int CpuRunner::max_context() const {
  const int64_t ctx = w_->config.context_len;
  if (opts_.max_context > 0) return static_cast<int>(std::min<int64_t>(opts_.max_context, ctx));
  return static_cast<int>(std::min<int64_t>(ctx, int64_t{1} << 30));
}

size_t CpuRunner::kv_bytes_per_token() const {
  return static_cast<size_t>(w_->config.n_layers * kv_layout_.values_per_token()) * sizeof(float);
}

Status CpuRunner::allocate_kv(int n_blocks, int block_size) {
  const ModelConfig& c = w_->config;
  if (n_blocks <= 0 || block_size <= 0) return InvalidArgument("allocate_kv: n_blocks and block_size must be > 0");
  // The CPU attention kernel reads a KvCacheView: two parts, k then v, of equal shape; or one part that is the key
  // and, in its first shared_value values, the value (MLA).
  const std::vector<KvPart>& parts = kv_layout_.parts;
  const bool shared = parts.size() == 1 && kv_layout_.shared_value > 0;
  if (!shared && (parts.size() != 2 || parts[0].heads != parts[1].heads || parts[0].width != parts[1].width)) {
    return Unsupported("allocate_kv: the CPU backend has no attention over the KV layout of " + c.arch);
  }
  const size_t n_parts = parts.size();
  part_floats_.clear();
  for (const KvPart& p : parts) part_floats_.push_back(static_cast<size_t>(block_size * p.values()));
  try {
    pools_.clear();
    pools_.reserve(static_cast<size_t>(c.n_layers) * n_parts);
    for (int l = 0; l < c.n_layers; ++l) {
      for (size_t p = 0; p < n_parts; ++p) pools_.emplace_back(new float[part_floats_[p] * n_blocks]);
    }
  } catch (const std::bad_alloc&) {
    pools_.clear();
    return ResourceExhausted("allocate_kv: cannot allocate " + std::to_string(n_blocks) + " blocks of " +
                             std::to_string(block_size) + " tokens (" +
                             std::to_string(kv_bytes_per_token() * block_size * n_blocks >> 20) + " MiB)");
  }
  n_blocks_ = n_blocks;
  block_size_ = block_size;
  const KvPart& k = parts[0];
  views_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    float* kp = pools_[l * n_parts].get();
    views_[l] = KvCacheView{DType::kF32, kp, shared ? kp : pools_[l * n_parts + 1].get(), n_blocks, block_size,
                            static_cast<int>(k.heads), static_cast<int>(k.width),
                            static_cast<int>(kv_layout_.shared_value)};
  }
  return OkStatus();
}

uint64_t cpu_kv_budget_bytes(double available_bytes) {
  const double quarter = available_bytes > 0 ? available_bytes / 4 : 0;
  return std::clamp(static_cast<uint64_t>(quarter), kCpuKvMinBytes, kCpuKvMaxBytes);
}

Result<int> CpuRunner::allocate_kv_from_memory(int block_size, double /*fraction*/) {
  if (block_size <= 0) return InvalidArgument("allocate_kv_from_memory: block_size must be > 0");
  double total = 0, avail = 0;
  if (!metrics::read_host_memory(&total, &avail))
    return IoError("cpu runner: /proc/meminfo cannot be read to size the KV pool; set kv_memory_mb");
  const uint64_t per_block = static_cast<uint64_t>(kv_bytes_per_token()) * static_cast<uint64_t>(block_size);
  const uint64_t n = cpu_kv_budget_bytes(avail) / std::max<uint64_t>(per_block, 1);
  if (n == 0) return ResourceExhausted("cpu runner: one KV block does not fit the automatic budget");
  const int blocks = static_cast<int>(std::min<uint64_t>(n, uint64_t{1} << 30));
  RETURN_IF_ERROR(allocate_kv(blocks, block_size));
  return blocks;
}

Status CpuRunner::copy_blocks(const std::vector<std::pair<int, int>>& src_dst) {
  const size_t n_parts = kv_layout_.parts.size();
  for (auto [src, dst] : src_dst) {
    if (src < 0 || src >= n_blocks_ || dst < 0 || dst >= n_blocks_) {
      return InvalidArgument("copy_blocks: block pair " + std::to_string(src) + " -> " + std::to_string(dst) +
                             " outside the pool of " + std::to_string(n_blocks_));
    }
    for (size_t i = 0; i < pools_.size(); ++i) {
      const size_t n = part_floats_[i % n_parts];
      std::copy_n(pools_[i].get() + src * n, n, pools_[i].get() + dst * n);
    }
  }
  return OkStatus();
}

Status CpuRunner::forward(const engine::Batch& b, float* logits) {
  if (views_.empty()) return Internal("forward before allocate_kv");
  ThreadPool::Scope threads(pool_.get());
  const size_t n = b.tokens.size();
  if (b.positions.size() != n || b.seq_of_token.size() != n || b.slots.size() != n ||
      b.block_tables.size() != b.seq_lens.size() * static_cast<size_t>(b.max_blocks) || b.block_size != block_size_) {
    return InvalidArgument("forward: inconsistent batch arrays");
  }
  for (int32_t blk : b.block_tables) {
    if (blk >= n_blocks_) return InvalidArgument("forward: block table entry " + std::to_string(blk) + " out of range");
  }
  ForwardBatch fb;
  fb.n_tokens = b.n_tokens();
  fb.tokens = b.tokens.data();
  fb.positions = b.positions.data();
  fb.seq_of_token = b.seq_of_token.data();
  fb.slots = b.slots.data();
  fb.n_seqs = b.n_seqs();
  fb.block_tables = b.block_tables.data();
  fb.max_blocks = b.max_blocks;
  fb.n_logits = static_cast<int>(b.logit_rows.size());
  fb.logit_rows = b.logit_rows.data();
  return tf_.forward(fb, views_, &scratch_, logits);
}

}  // namespace citadel::runtime
