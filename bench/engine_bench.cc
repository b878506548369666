// Engine benchmarks with stand-in runners (the real model comes later):
//   BM_StepOverhead/<concurrency>/<vocab>: one engine step with N decoding sequences and a runner that does no work
//     (constant logits): scheduling + batch building + greedy sampling over the vocabulary + event delivery.
//   BM_Argmax/<impl>/<n>: the greedy argmax alone, per implementation (reference, portable, AVX2, run-time choice).
//   BM_Throughput/<concurrency>: generated tokens per second with the honest TestRunner (tests/engine/), requests of
//     32 prompt tokens + 64 generated, refilled as they finish.
#include <benchmark/benchmark.h>

#include <algorithm>

#include "base/cpu_features.h"
#include "base/log.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "tests/engine/test_runner.h"

namespace citadel::engine {
namespace {

class NullRunner : public ModelRunner {
 public:
  explicit NullRunner(int n_vocab) : n_vocab_(n_vocab), row_(n_vocab) {
    for (int v = 0; v < n_vocab; ++v) row_[v] = static_cast<float>((v * 7919) % 1000);
  }
  int n_vocab() const override { return n_vocab_; }
  int max_context() const override { return 1 << 20; }
  size_t kv_bytes_per_token() const override { return 1; }
  Status allocate_kv(int, int) override { return OkStatus(); }
  Status copy_blocks(const std::vector<std::pair<int, int>>&) override { return OkStatus(); }
  Status forward(const Batch& b, float* logits) override {
    for (size_t r = 0; r < b.logit_rows.size(); ++r) std::copy(row_.begin(), row_.end(), logits + r * n_vocab_);
    return OkStatus();
  }

 private:
  int n_vocab_;
  std::vector<float> row_;  // [n_vocab] the constant logits row
};

GenerateRequest make_request(uint64_t i, int prompt_len, int max_tokens, int n_vocab) {
  GenerateRequest r;
  r.id = "b";
  r.id += std::to_string(i);
  for (int k = 0; k < prompt_len; ++k) r.prompt.push_back(static_cast<int32_t>((i * 131 + k * 17) % n_vocab));
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

// Keeps `concurrency` requests live; drains their events so buffers never fill.
struct Driver {
  Engine* engine;
  int concurrency, prompt_len, max_tokens, n_vocab;
  uint64_t next = 0;
  std::vector<std::shared_ptr<RequestHandle>> live;
  int64_t generated = 0;
  void refill() {
    live.erase(std::remove_if(live.begin(), live.end(),
                              [&](const std::shared_ptr<RequestHandle>& h) {
                                TokenEvent ev;
                                while (h->try_pop(&ev)) generated += ev.token >= 0;
                                return h->finished();
                              }),
               live.end());
    while (static_cast<int>(live.size()) < concurrency) {
      auto h = engine->submit(make_request(next++, prompt_len, max_tokens, n_vocab));
      if (!h.ok()) break;
      live.push_back(*h);
    }
  }
};

void BM_StepOverhead(benchmark::State& state) {
  set_log_level(LogLevel::kWarn);
  const int concurrency = static_cast<int>(state.range(0));
  const int n_vocab = static_cast<int>(state.range(1));
  NullRunner runner(n_vocab);
  EngineConfig cfg;
  cfg.n_blocks = 64 * 1024;
  cfg.block_size = 16;
  cfg.max_seqs = concurrency;
  cfg.max_batched_tokens = 8192;
  Engine engine(&runner, cfg);
  if (!engine.init().ok()) return state.SkipWithError("init failed");
  Driver d{&engine, concurrency, 32, 512, n_vocab, 0, {}, 0};
  d.refill();
  engine.step();  // prefill
  for (auto _ : state) {
    d.refill();
    engine.step();
  }
  state.counters["seqs_per_step"] = engine.stats().last_batch_seqs;
  state.counters["us_per_seq"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * concurrency,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_StepOverhead)
    ->ArgsProduct({{1, 4, 16, 64}, {64, 32000}})
    ->Unit(benchmark::kMicrosecond);

// BM_Argmax/<impl>/<n>: the greedy argmax over one random row of n logits; impl 0 = argmax_ref (scalar), 1 =
// argmax_portable (compiler-vectorised at the build's width), 2 = argmax_avx2 (skipped without AVX2), 3 = argmax (the
// run-time choice).
void BM_Argmax(benchmark::State& state) {
  const int impl = static_cast<int>(state.range(0));
  const int n = static_cast<int>(state.range(1));
  if (impl == 2 && !cpu_features().avx2) return state.SkipWithError("no AVX2 on this CPU");
  Rng rng(42);
  std::vector<float> row(n);  // [n]
  for (float& v : row) v = static_cast<float>(rng.next_double() * 20.0 - 10.0);
  int32_t (*const fns[])(const float*, int) = {&argmax_ref, &argmax_portable, &argmax_avx2, &argmax};
  for (auto _ : state) {
    benchmark::DoNotOptimize(row.data());
    benchmark::DoNotOptimize(fns[impl](row.data(), n));
  }
}
BENCHMARK(BM_Argmax)->ArgsProduct({{0, 1, 2, 3}, {32000, 152064}})->Unit(benchmark::kMicrosecond);

void BM_Throughput(benchmark::State& state) {
  set_log_level(LogLevel::kWarn);
  const int concurrency = static_cast<int>(state.range(0));
  testing::TestRunner runner(256);
  EngineConfig cfg;
  cfg.n_blocks = 4096;
  cfg.block_size = 16;
  cfg.max_seqs = 64;
  cfg.max_batched_tokens = 2048;
  Engine engine(&runner, cfg);
  if (!engine.init().ok()) return state.SkipWithError("init failed");
  Driver d{&engine, concurrency, 32, 64, 256, 0, {}, 0};
  for (auto _ : state) {
    d.refill();
    engine.step();
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(d.generated), benchmark::Counter::kIsRate);
  state.counters["batch_tokens"] = engine.stats().last_batch_tokens;
  state.counters["preemptions"] = static_cast<double>(engine.stats().preemptions);
}
BENCHMARK(BM_Throughput)->Arg(1)->Arg(4)->Arg(16)->Arg(64)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace citadel::engine

BENCHMARK_MAIN();
