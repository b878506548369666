// CpuEmbeddingRunner: engine::EmbeddingRunner over the BERT encoder on the CPU (model/arch/bert.h), f32 exact.
// Packs the inputs back to back into forwards of at most max_batch_tokens tokens (an input is never split); the
// kernels run on the runner's own pool (EmbeddingRunnerOptions::threads), else on ThreadPool::current().
// Thread-safety: as EmbeddingRunner (one caller at a time: it owns one scratch).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/embedding_runner.h"
#include "base/thread_pool.h"
#include "model/arch/bert.h"

namespace citadel::runtime {

struct EmbeddingRunnerOptions {
  int max_tokens = 0;            // per input, specials included; 0 or more than the position table: the table's size
  int max_batch_tokens = 4096;   // tokens per forward
  bool normalize = true;         // L2-normalise (sentence-transformers' Normalize module)
  int threads = 0;               // > 0: the runner's own kernel pool of this many threads; 0: the caller's current()
};

class CpuEmbeddingRunner : public engine::EmbeddingRunner {
 public:
  CpuEmbeddingRunner(std::unique_ptr<BertWeights> weights, EmbeddingRunnerOptions opts);

  int dim() const override { return encoder_.dim(); }
  int max_tokens() const override { return max_tokens_; }
  Status embed(const std::vector<std::vector<int32_t>>& inputs, float* out) override;

  const BertWeights& weights() const { return *w_; }

 private:
  std::unique_ptr<BertWeights> w_;
  EmbeddingRunnerOptions opts_;
  std::unique_ptr<ThreadPool> pool_;  // null: the caller's
  BertEncoder encoder_;
  int max_tokens_ = 0;
  EncoderScratch scratch_;
  std::vector<int32_t> tokens_, starts_;
};

// Opens a BERT model (a safetensors file or a directory with model.safetensors + config.json) and builds the runner.
// kUnsupported when the file is not a BERT encoder.
Result<std::unique_ptr<CpuEmbeddingRunner>> make_cpu_embedding_runner(const std::string& path,
                                                                      const EmbeddingRunnerOptions& opts);

}  // namespace citadel::runtime
