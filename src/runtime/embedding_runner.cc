#include "runtime/embedding_runner.h"

#include <algorithm>

namespace citadel::runtime {

CpuEmbeddingRunner::CpuEmbeddingRunner(std::unique_ptr<BertWeights> weights, EmbeddingRunnerOptions opts)
    : w_(std::move(weights)),
      opts_(opts),
      pool_(opts.threads > 0 ? std::make_unique<ThreadPool>(opts.threads) : nullptr),
      encoder_(w_.get(), EncoderOptions{opts.normalize}) {
  const int table = encoder_.max_positions();
  max_tokens_ = opts.max_tokens > 0 ? std::min(opts.max_tokens, table) : table;
  opts_.max_batch_tokens = std::max(opts_.max_batch_tokens, max_tokens_);
}

Status CpuEmbeddingRunner::embed(const std::vector<std::vector<int32_t>>& inputs, float* out) {
  const int d = dim();
  ThreadPool::Scope scope(pool_.get());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].empty() || inputs[i].size() > static_cast<size_t>(max_tokens_))
      return InvalidArgument("input " + std::to_string(i) + " has " + std::to_string(inputs[i].size()) +
                             " tokens; 1 to " + std::to_string(max_tokens_) + " are allowed");
  }
  size_t first = 0;
  while (first < inputs.size()) {
    tokens_.clear();
    starts_.assign(1, 0);
    size_t last = first;
    while (last < inputs.size() &&
           (last == first || tokens_.size() + inputs[last].size() <= static_cast<size_t>(opts_.max_batch_tokens))) {
      tokens_.insert(tokens_.end(), inputs[last].begin(), inputs[last].end());
      starts_.push_back(static_cast<int32_t>(tokens_.size()));
      ++last;
    }
    EncoderBatch b{static_cast<int>(last - first), starts_.data(), tokens_.data()};
    RETURN_IF_ERROR(encoder_.embed(b, &scratch_, out + first * d));
    first = last;
  }
  return OkStatus();
}

Result<std::unique_ptr<CpuEmbeddingRunner>> make_cpu_embedding_runner(const std::string& path,
                                                                      const EmbeddingRunnerOptions& opts) {
  ASSIGN_OR_RETURN(std::unique_ptr<TensorStore> store, open_model_file(path));
  ASSIGN_OR_RETURN(std::unique_ptr<BertWeights> w, load_bert_weights(std::move(store)));
  return std::make_unique<CpuEmbeddingRunner>(std::move(w), opts);
}

}  // namespace citadel::runtime
