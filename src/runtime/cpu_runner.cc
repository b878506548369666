#include "runtime/cpu_runner.h"

#include <algorithm>
#include <cstdio>
#include <new>
#include <string>

#include "base/process_metrics.h"
#include "model/shard.h"

namespace citadel::runtime {

CpuRunner::Rank::Rank(const ModelWeights* whole, std::unique_ptr<ModelWeights> sh, Communicator* comm, int max_tokens)
    : shard(std::move(sh)),
      w(shard ? shard.get() : whole),
      kv_layout(w->arch->kv_layout(w->config)),
      tf(w, comm),
      scratch(w->config, max_tokens) {}

CpuRunner::CpuRunner(const ModelWeights* weights, CpuRunnerOptions opts)
    : w_(weights), opts_(opts), pool_(opts.threads > 0 ? std::make_unique<ThreadPool>(opts.threads) : nullptr) {
  const int n = std::max(1, opts.tensor_parallel);
  if (n > 1) {
    comm_ = std::make_unique<ThreadCommGroup>(n);
    for (int r = 0; r < n && init_.ok(); ++r) {
      Result<std::unique_ptr<ModelWeights>> shard = shard_weights(*weights, r, n);
      if (!shard.ok()) {
        init_ = shard.status();
        break;
      }
      ranks_.push_back(std::make_unique<Rank>(weights, std::move(*shard), comm_->rank(r), opts.max_batched_tokens));
    }
  }
  if (!init_.ok() || n == 1) {  // whole weights (also when the split failed, so transformer() has a rank 0)
    ranks_.clear();
    ranks_.push_back(std::make_unique<Rank>(weights, nullptr, nullptr, opts.max_batched_tokens));
  }
}

CpuRunner::~CpuRunner() = default;

std::vector<std::string> CpuRunner::rank_plan() const {
  std::vector<std::string> lines;
  if (ranks_.size() < 2) return lines;
  const ModelConfig& c = w_->config;
  auto mb = [](uint64_t b) {
    char s[32];
    std::snprintf(s, sizeof(s), "%.1f MB", static_cast<double>(b) / 1e6);
    return std::string(s);
  };
  for (const auto& r : ranks_) {
    const ModelWeights& s = *r->w;
    uint64_t copied = 0;
    for (const auto& o : s.owned_bytes) copied += o.size();
    lines.push_back("rank " + std::to_string(s.tp.rank) + " of " + std::to_string(s.tp.size) + ": " +
                    std::to_string(s.config.n_heads) + " of " + std::to_string(c.n_heads) + " heads, " +
                    std::to_string(s.config.n_kv_heads) + " of " + std::to_string(c.n_kv_heads) + " KV heads, FFN " +
                    std::to_string(s.config.ffn_dim) + " of " + std::to_string(c.ffn_dim) +
                    (c.has_moe ? ", routed experts [" + std::to_string(s.tp.expert_begin) + ", " +
                                     std::to_string(s.tp.expert_end) + ") of " + std::to_string(c.moe.n_experts)
                               : "") +
                    ", vocabulary [" +
                    std::to_string(s.tp.vocab_begin) + ", " + std::to_string(s.tp.vocab_end) + "), " +
                    mb(s.bytes_per_token()) + " of weights read per token (" + mb(copied) +
                    " copied column slices), KV " + std::to_string(r->kv_bytes_per_token()) + " B/token");
  }
  return lines;
}

int CpuRunner::n_vocab() const { return static_cast<int>(w_->config.n_vocab); }

int CpuRunner::max_context() const {
  const int64_t ctx = w_->config.context_len;
  if (opts_.max_context > 0) return static_cast<int>(std::min<int64_t>(opts_.max_context, ctx));
  return static_cast<int>(std::min<int64_t>(ctx, int64_t{1} << 30));
}

size_t CpuRunner::Rank::kv_bytes_per_token() const {
  return static_cast<size_t>(w->config.n_layers * kv_layout.values_per_token()) * sizeof(float);
}

size_t CpuRunner::kv_bytes_per_token() const {
  size_t n = 0;
  for (const auto& r : ranks_) n += r->kv_bytes_per_token();
  return n;
}

Status CpuRunner::allocate_kv(int n_blocks, int block_size) {
  RETURN_IF_ERROR(init_);
  if (n_blocks <= 0 || block_size <= 0) return InvalidArgument("allocate_kv: n_blocks and block_size must be > 0");
  for (auto& r : ranks_) {
    Status st = r->allocate_kv(n_blocks, block_size);
    if (!st.ok()) {
      for (auto& q : ranks_) q->pools.clear(), q->views.clear();
      if (st.code() == StatusCode::kResourceExhausted) {
        return ResourceExhausted("allocate_kv: cannot allocate " + std::to_string(n_blocks) + " blocks of " +
                                 std::to_string(block_size) + " tokens (" +
                                 std::to_string(kv_bytes_per_token() * block_size * n_blocks >> 20) + " MiB)");
      }
      return st;
    }
  }
  n_blocks_ = n_blocks;
  block_size_ = block_size;
  return OkStatus();
}

Status CpuRunner::Rank::allocate_kv(int n_blocks, int block_size) {
  const ModelConfig& c = w->config;
  // The CPU attention kernel reads a KvCacheView: two parts, k then v, of equal shape; or one part that is the key
  // and, in its first shared_value values, the value (MLA).
  const std::vector<KvPart>& parts = kv_layout.parts;
  const bool shared = parts.size() == 1 && kv_layout.shared_value > 0;
  if (!shared && (parts.size() != 2 || parts[0].heads != parts[1].heads || parts[0].width != parts[1].width)) {
    return Unsupported("allocate_kv: the CPU backend has no attention over the KV layout of " + c.arch);
  }
  const size_t n_parts = parts.size();
  part_floats.clear();
  for (const KvPart& p : parts) part_floats.push_back(static_cast<size_t>(block_size * p.values()));
  try {
    pools.clear();
    pools.reserve(static_cast<size_t>(c.n_layers) * n_parts);
    for (int l = 0; l < c.n_layers; ++l) {
      for (size_t p = 0; p < n_parts; ++p) pools.emplace_back(new float[part_floats[p] * n_blocks]);
    }
  } catch (const std::bad_alloc&) {
    pools.clear();
    return ResourceExhausted("allocate_kv: out of memory");
  }
  const KvPart& k = parts[0];
  views.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    float* kp = pools[l * n_parts].get();
    views[l] = KvCacheView{DType::kF32, kp, shared ? kp : pools[l * n_parts + 1].get(), n_blocks, block_size,
                           static_cast<int>(k.heads), static_cast<int>(k.width),
                           static_cast<int>(kv_layout.shared_value)};
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
  RETURN_IF_ERROR(init_);
  for (auto [src, dst] : src_dst) {
    if (src < 0 || src >= n_blocks_ || dst < 0 || dst >= n_blocks_) {
      return InvalidArgument("copy_blocks: block pair " + std::to_string(src) + " -> " + std::to_string(dst) +
                             " outside the pool of " + std::to_string(n_blocks_));
    }
    for (auto& r : ranks_) {
      const size_t n_parts = r->kv_layout.parts.size();
      for (size_t i = 0; i < r->pools.size(); ++i) {
        const size_t n = r->part_floats[i % n_parts];
        std::copy_n(r->pools[i].get() + src * n, n, r->pools[i].get() + dst * n);
      }
    }
  }
  return OkStatus();
}

Status CpuRunner::forward(const engine::Batch& b, float* logits) {
  RETURN_IF_ERROR(init_);
  if (ranks_[0]->views.empty()) return Internal("forward before allocate_kv");
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
  if (ranks_.size() == 1) return ranks_[0]->tf.forward(fb, ranks_[0]->views, &ranks_[0]->scratch, logits);
  // Tensor parallel: ranks 1.. on threads of their own (the kernels of every rank share ThreadPool::current()'s
  // workers, one parallel region at a time), rank 0 here (run_ranks: a failing rank releases the others).
  for (size_t r = 1; r < ranks_.size(); ++r)
    ranks_[r]->logits.resize(static_cast<size_t>(fb.n_logits) * static_cast<size_t>(w_->config.n_vocab));
  return run_ranks(static_cast<int>(ranks_.size()), comm_.get(), [&](int r) {
    ThreadPool::Scope rank_threads(pool_.get());
    Rank& k = *ranks_[static_cast<size_t>(r)];
    return k.tf.forward(fb, k.views, &k.scratch, r == 0 ? logits : k.logits.data());
  });
}

}  // namespace citadel::runtime
