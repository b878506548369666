#include "model/transformer.h"

#include <algorithm>
#include <string>

#include "model/rope.h"

namespace citadel {

Transformer::Transformer(const ModelWeights* w, Communicator* comm)
    : w_(w), comm_(comm), rope_(rope_params_from(w->config, w->vec(TensorRole::kRopeFreqs))), rope_local_(rope_) {
  if (w->config.sliding_window > 0) {  // local layers: their own theta, no scaling
    rope_local_ = RopeParams{};
    rope_local_.type = rope_.type;
    rope_local_.rope_dim = rope_.rope_dim;
    rope_local_.freq_base = static_cast<float>(w->config.rope_theta_swa);
  }
}

Status Transformer::check_batch(const ForwardBatch& b, const std::vector<KvCacheView>& kv) const {
  const ModelConfig& c = w_->config;
  if (b.n_tokens < 0 || b.n_logits < 0 || b.n_logits > b.n_tokens) return InvalidArgument("forward: bad batch sizes");
  if (kv.size() != static_cast<size_t>(c.n_layers)) return InvalidArgument("forward: one KV view per layer needed");
  if (b.n_tokens == 0) return OkStatus();
  const int64_t n_slots = static_cast<int64_t>(kv[0].n_blocks) * kv[0].block_size;
  for (int i = 0; i < b.n_tokens; ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= c.n_vocab) {
      return InvalidArgument("forward: token " + std::to_string(i) + " has id " + std::to_string(b.tokens[i]) +
                             " outside the vocabulary of " + std::to_string(c.n_vocab));
    }
    if (b.slots[i] < 0 || b.slots[i] >= n_slots || b.seq_of_token[i] < 0 || b.seq_of_token[i] >= b.n_seqs ||
        b.positions[i] < 0 || b.positions[i] / kv[0].block_size >= b.max_blocks) {
      return InvalidArgument("forward: token " + std::to_string(i) + " has a slot, sequence or position out of range");
    }
  }
  // Attention reads blocks 0..pos/block_size of each token's sequence: all must name real blocks, and each token
  // must write inside its own sequence's table.
  const int bs = kv[0].block_size;
  std::vector<int32_t> max_pos(static_cast<size_t>(b.n_seqs), -1);
  for (int i = 0; i < b.n_tokens; ++i) {
    max_pos[b.seq_of_token[i]] = std::max(max_pos[b.seq_of_token[i]], b.positions[i]);
    const int32_t* row = b.block_tables + static_cast<int64_t>(b.seq_of_token[i]) * b.max_blocks;
    if (b.slots[i] / bs != row[b.positions[i] / bs]) {
      return InvalidArgument("forward: token " + std::to_string(i) + " writes a slot outside its block table");
    }
  }
  for (int q = 0; q < b.n_seqs; ++q) {
    const int32_t* row = b.block_tables + static_cast<int64_t>(q) * b.max_blocks;
    for (int j = 0; max_pos[q] >= 0 && j <= max_pos[q] / bs; ++j) {
      if (row[j] < 0 || row[j] >= kv[0].n_blocks) {
        return InvalidArgument("forward: block table of sequence " + std::to_string(q) + " has no valid block " +
                               std::to_string(j) + " for position " + std::to_string(max_pos[q]));
      }
    }
  }
  for (int r = 0; r < b.n_logits; ++r) {
    if (b.logit_rows[r] < 0 || b.logit_rows[r] >= b.n_tokens || (r > 0 && b.logit_rows[r] <= b.logit_rows[r - 1])) {
      return InvalidArgument("forward: logit_rows must be increasing token indices");
    }
  }
  return OkStatus();
}

Status Transformer::forward(const ForwardBatch& b, const std::vector<KvCacheView>& kv, ForwardScratch* s,
                            float* logits) const {
  RETURN_IF_ERROR(check_batch(b, kv));
  for (int t0 = 0; t0 < b.n_tokens; t0 += s->max_tokens) {
    RETURN_IF_ERROR(run_chunk(b, t0, std::min(s->max_tokens, b.n_tokens - t0), kv, s, logits));
  }
  return OkStatus();
}

// Tokens [t0, t0 + n) through the whole model; logits for the logit rows among them.
Status Transformer::run_chunk(const ForwardBatch& b, int t0, int n, const std::vector<KvCacheView>& kv,
                              ForwardScratch* s, float* logits) const {
  CpuOps ops(*w_, rope_, rope_local_, b, t0, n, kv, s, logits, comm_);
  return w_->arch->forward(ops, w_->config);
}

}  // namespace citadel
