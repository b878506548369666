// CpuEmbeddingRunner: engine::EmbeddingRunner over the BERT encoder on the CPU (model/arch/bert.h), f32 exact, or with
// bf16 GEMMs on AVX512_BF16 CPUs (EmbeddingRunnerOptions::bf16).
// Packs the inputs back to back into forwards (an input is never split), on the runner's own pool
// (EmbeddingRunnerOptions::threads), else on ThreadPool::current():
//   - one input, or one thread: forwards of at most max_batch_tokens tokens, each kernel split across the threads;
//   - several inputs: groups of consecutive inputs (about 4 per thread, at most kGroupTokens tokens), each group's
//     forward run whole on one thread, the groups spread over the threads.
// Both give the same vectors bit for bit: every kernel computes a token's row the same way whatever rows share the
// call (the GEMM's k order, per-sequence attention, per-row norms).
// Thread-safety: as EmbeddingRunner (one caller at a time: it owns its scratch).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/embedding_runner.h"
#include "base/thread_pool.h"
#include "model/arch/bert.h"

namespace citadel::runtime {

// Options of an embedding runner, CPU (CpuEmbeddingRunner) or CUDA (CudaEmbeddingRunner, cuda_embedding_runner.h);
// runtime::make_embedding_runner (runner_factory.h) picks the runner by device.
struct EmbeddingRunnerOptions {
  int max_tokens = 0;            // per input, specials included; 0 or more than the position table: the table's size
  int max_batch_tokens = 4096;   // tokens per forward (raised to max_tokens when smaller)
  bool normalize = true;         // L2-normalise (sentence-transformers' Normalize module)
  int threads = 0;               // cpu: > 0: the runner's own kernel pool of this many threads; 0: the caller's current()
  // cpu: the GEMMs in bf16 (x and W rounded to bf16, f32 sums: cpu::pack_matrix_bf16) where the CPU has AVX512_BF16,
  // else f32 as when false. ~2x the GEMM throughput; all-MiniLM-L6-v2 stays within cosine 0.99996 of
  // sentence-transformers' f32 on the multilingual fixture (bert_test). Attention, norms and pooling stay f32.
  bool bf16 = false;
  std::string device = "cpu";    // cpu | cuda (make_embedding_runner)
  int cuda_device = 0;           // cuda: the device id the model runs on
};

// The most tokens one input may have: opts.max_tokens within the position table (0: the whole table).
int embedding_max_tokens(const EmbeddingRunnerOptions& opts, int64_t n_positions);

// What every embedding runner checks before any work (EmbeddingRunner::embed's contract): each input has 1 to
// max_tokens tokens and every id lies in [0, n_vocab). InvalidArgument naming the input (and token) otherwise.
Status check_embedding_inputs(const std::vector<std::vector<int32_t>>& inputs, int max_tokens, int64_t n_vocab);

// Packs inputs [first, end) back to back into one EncoderBatch's arrays: as many whole inputs as fit in
// max_forward_tokens tokens, at least one. tokens [n_tokens]; starts [n + 1], 0 first. Returns the index past the
// last input packed.
size_t pack_embedding_inputs(const std::vector<std::vector<int32_t>>& inputs, size_t first, size_t end,
                             int64_t max_forward_tokens, std::vector<int32_t>* tokens, std::vector<int32_t>* starts);

class CpuEmbeddingRunner : public engine::EmbeddingRunner {
 public:
  CpuEmbeddingRunner(std::unique_ptr<BertWeights> weights, EmbeddingRunnerOptions opts);

  int dim() const override { return encoder_.dim(); }
  int max_tokens() const override { return max_tokens_; }
  Status embed(const std::vector<std::vector<int32_t>>& inputs, float* out) override;

  const BertWeights& weights() const { return *w_; }
  bool uses_bf16() const { return bf16_; }  // opts.bf16 and the CPU has AVX512_BF16

  static constexpr int64_t kGroupTokens = 512;  // most tokens of one group's forward (several-input path)

 private:
  // One thread's forward buffers.
  struct Slot {
    EncoderScratch scratch;
    std::vector<int32_t> tokens, starts;
  };
  // Embeds inputs [first, end) into out rows [first, end) with forwards of at most max_forward_tokens tokens.
  Status embed_range(const std::vector<std::vector<int32_t>>& inputs, size_t first, size_t end,
                     int64_t max_forward_tokens, Slot* slot, float* out) const;

  std::unique_ptr<BertWeights> w_;
  EmbeddingRunnerOptions opts_;
  std::unique_ptr<ThreadPool> pool_;  // null: the caller's
  BertEncoder encoder_;
  int max_tokens_ = 0;
  bool bf16_ = false;
  std::vector<Slot> slots_;           // one per thread that runs a forward
  std::vector<size_t> group_starts_;  // [n_groups + 1]: first input of each group
  std::vector<Status> group_status_;  // [n_groups]
};

// Opens a BERT model (a safetensors file or a directory with model.safetensors + config.json) and builds the runner.
// kUnsupported when the file is not a BERT encoder.
Result<std::unique_ptr<CpuEmbeddingRunner>> make_cpu_embedding_runner(const std::string& path,
                                                                      const EmbeddingRunnerOptions& opts);

}  // namespace citadel::runtime
