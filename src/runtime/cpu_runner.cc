#include "runtime/cpu_runner.h"

#include <algorithm>
#include <new>
#include <string>

namespace citadel::runtime {

CpuRunner::CpuRunner(const ModelWeights* weights, CpuRunnerOptions opts)
    : w_(weights), opts_(opts), tf_(weights), scratch_(weights->config, opts.max_batched_tokens) {}

int CpuRunner::n_vocab() const { return static_cast<int>(w_->config.n_vocab); }

int CpuRunner::max_context() const {
  const int64_t ctx = w_->config.context_len;
  if (opts_.max_context > 0) return static_cast<int>(std::min<int64_t>(opts_.max_context, ctx));
  return static_cast<int>(std::min<int64_t>(ctx, int64_t{1} << 30));
}

size_t CpuRunner::kv_bytes_per_token() const {
  const ModelConfig& c = w_->config;
  return 2 * static_cast<size_t>(c.n_layers * c.n_kv_heads * c.head_dim) * sizeof(float);
}

Status CpuRunner::allocate_kv(int n_blocks, int block_size) {
  const ModelConfig& c = w_->config;
  if (n_blocks <= 0 || block_size <= 0) return InvalidArgument("allocate_kv: n_blocks and block_size must be > 0");
  block_floats_ = static_cast<size_t>(block_size) * c.n_kv_heads * c.head_dim;
  try {
    k_.assign(c.n_layers, std::vector<float>(block_floats_ * n_blocks));
    v_.assign(c.n_layers, std::vector<float>(block_floats_ * n_blocks));
  } catch (const std::bad_alloc&) {
    k_.clear();
    v_.clear();
    return ResourceExhausted("allocate_kv: cannot allocate " + std::to_string(n_blocks) + " blocks of " +
                             std::to_string(block_size) + " tokens (" +
                             std::to_string(kv_bytes_per_token() * block_size * n_blocks >> 20) + " MiB)");
  }
  n_blocks_ = n_blocks;
  block_size_ = block_size;
  views_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    views_[l] = KvCacheView{DType::kF32, k_[l].data(), v_[l].data(), n_blocks, block_size,
                            static_cast<int>(c.n_kv_heads), static_cast<int>(c.head_dim)};
  }
  return OkStatus();
}

Status CpuRunner::copy_blocks(const std::vector<std::pair<int, int>>& src_dst) {
  for (auto [src, dst] : src_dst) {
    if (src < 0 || src >= n_blocks_ || dst < 0 || dst >= n_blocks_) {
      return InvalidArgument("copy_blocks: block pair " + std::to_string(src) + " -> " + std::to_string(dst) +
                             " outside the pool of " + std::to_string(n_blocks_));
    }
    for (size_t l = 0; l < k_.size(); ++l) {
      std::copy_n(k_[l].data() + src * block_floats_, block_floats_, k_[l].data() + dst * block_floats_);
      std::copy_n(v_[l].data() + src * block_floats_, block_floats_, v_[l].data() + dst * block_floats_);
    }
  }
  return OkStatus();
}

Status CpuRunner::forward(const engine::Batch& b, float* logits) {
  if (views_.empty()) return Internal("forward before allocate_kv");
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
