#include "runtime/embedding_runner.h"

#include <algorithm>
#include <limits>
#include <mutex>

#include "base/cpu_features.h"

namespace citadel::runtime {

int embedding_max_tokens(const EmbeddingRunnerOptions& opts, int64_t n_positions) {
  const int table = static_cast<int>(std::min<int64_t>(n_positions, std::numeric_limits<int>::max()));
  return opts.max_tokens > 0 ? std::min(opts.max_tokens, table) : table;
}

Status check_embedding_inputs(const std::vector<std::vector<int32_t>>& inputs, int max_tokens, int64_t n_vocab) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].empty() || inputs[i].size() > static_cast<size_t>(max_tokens))
      return InvalidArgument("input " + std::to_string(i) + " has " + std::to_string(inputs[i].size()) +
                             " tokens; 1 to " + std::to_string(max_tokens) + " are allowed");
    for (size_t t = 0; t < inputs[i].size(); ++t)
      if (inputs[i][t] < 0 || inputs[i][t] >= n_vocab)
        return InvalidArgument("input " + std::to_string(i) + " token " + std::to_string(t) + ": id " +
                               std::to_string(inputs[i][t]) + " is outside the vocabulary of " +
                               std::to_string(n_vocab));
  }
  return OkStatus();
}

size_t pack_embedding_inputs(const std::vector<std::vector<int32_t>>& inputs, size_t first, size_t end,
                             int64_t max_forward_tokens, std::vector<int32_t>* tokens, std::vector<int32_t>* starts) {
  tokens->clear();
  starts->assign(1, 0);
  size_t last = first;
  while (last < end &&
         (last == first || tokens->size() + inputs[last].size() <= static_cast<size_t>(max_forward_tokens))) {
    tokens->insert(tokens->end(), inputs[last].begin(), inputs[last].end());
    starts->push_back(static_cast<int32_t>(tokens->size()));
    ++last;
  }
  return last;
}

CpuEmbeddingRunner::CpuEmbeddingRunner(std::unique_ptr<BertWeights> weights, EmbeddingRunnerOptions opts)
    : w_(std::move(weights)),
      opts_(opts),
      pool_(opts.threads > 0 ? std::make_unique<ThreadPool>(opts.threads) : nullptr),
      encoder_(w_.get(), EncoderOptions{opts.normalize}) {
  max_tokens_ = embedding_max_tokens(opts, encoder_.max_positions());
  bf16_ = opts.bf16 && cpu_features().has_avx512_bf16();
  if (bf16_) {
    for (BertLayer& L : w_->layers)
      for (PackedMatrix* m : {&L.wqkv, &L.wo, &L.up, &L.down}) cpu::pack_matrix_bf16(m);
  }
  opts_.max_batch_tokens = std::max(opts_.max_batch_tokens, max_tokens_);
}

Status CpuEmbeddingRunner::embed_range(const std::vector<std::vector<int32_t>>& inputs, size_t first, size_t end,
                                       int64_t max_forward_tokens, Slot* slot, float* out) const {
  const int d = dim();
  while (first < end) {
    const size_t last = pack_embedding_inputs(inputs, first, end, max_forward_tokens, &slot->tokens, &slot->starts);
    EncoderBatch b{static_cast<int>(last - first), slot->starts.data(), slot->tokens.data()};
    RETURN_IF_ERROR(encoder_.embed(b, &slot->scratch, out + first * d));
    first = last;
  }
  return OkStatus();
}

Status CpuEmbeddingRunner::embed(const std::vector<std::vector<int32_t>>& inputs, float* out) {
  ThreadPool::Scope scope(pool_.get());
  RETURN_IF_ERROR(check_embedding_inputs(inputs, max_tokens_, w_->config.n_vocab));
  int64_t total = 0;
  for (const auto& in : inputs) total += static_cast<int64_t>(in.size());
  ThreadPool& pool = ThreadPool::current();
  const int threads = pool.size();
  if (threads == 1 || inputs.size() < 2) {
    // One input (or one thread): one forward at a time, each kernel split across the threads.
    if (slots_.empty()) slots_.resize(1);
    return embed_range(inputs, 0, inputs.size(), opts_.max_batch_tokens, &slots_[0], out);
  }
  // Several inputs: groups of whole inputs, each group's forward on one thread (its kernels run serially there: a
  // nested parallel_for is inline). Two joins per request instead of a few per kernel, and a thread the machine
  // preempts holds back one group, not every kernel. About 4 groups per thread for balance, at most kGroupTokens
  // tokens each (scratch stays small; the GEMMs are as fast at 64 tokens as at 1024).
  const int64_t target = std::clamp<int64_t>((total + 4 * threads - 1) / (4 * threads), 1, kGroupTokens);
  std::vector<size_t>& starts = group_starts_;
  starts.assign(1, 0);
  int64_t in_group = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto len = static_cast<int64_t>(inputs[i].size());
    if (in_group > 0 && in_group + len > target) {
      starts.push_back(i);
      in_group = 0;
    }
    in_group += len;
  }
  starts.push_back(inputs.size());
  const int64_t n_groups = static_cast<int64_t>(starts.size()) - 1;
  if (slots_.size() < static_cast<size_t>(threads)) slots_.resize(static_cast<size_t>(threads));
  std::vector<Status>& status = group_status_;
  status.assign(static_cast<size_t>(n_groups), OkStatus());
  std::mutex mu;
  std::vector<Slot*> free_slots;
  for (auto& s : slots_) free_slots.push_back(&s);
  pool.parallel_for(n_groups, [&](int64_t b, int64_t e) {
    ThreadPool::Scope on_this_pool(&pool);  // a worker's kernels then find this pool (and run inline), not global()
    Slot* slot;
    {
      std::lock_guard<std::mutex> lock(mu);
      slot = free_slots.back();
      free_slots.pop_back();
    }
    for (int64_t g = b; g < e; ++g)
      status[g] = embed_range(inputs, starts[g], starts[g + 1], kGroupTokens, slot, out);
    std::lock_guard<std::mutex> lock(mu);
    free_slots.push_back(slot);
  });
  for (const Status& st : status) RETURN_IF_ERROR(st);
  return OkStatus();
}

Result<std::unique_ptr<CpuEmbeddingRunner>> make_cpu_embedding_runner(const std::string& path,
                                                                      const EmbeddingRunnerOptions& opts) {
  ASSIGN_OR_RETURN(std::unique_ptr<TensorStore> store, open_model_file(path));
  ASSIGN_OR_RETURN(std::unique_ptr<BertWeights> w, load_bert_weights(std::move(store)));
  return std::make_unique<CpuEmbeddingRunner>(std::move(w), opts);
}

}  // namespace citadel::runtime
