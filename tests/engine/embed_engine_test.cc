// EmbedEngine with a fake runner: bounded queue (busy when full), concurrent jobs batched into one runner call,
// rows routed back to their jobs, cancelled jobs skipped, a bad input failing only its own job, stop() failing the
// queued rest; the EmbedMetrics series count exactly what was embedded, skipped and refused, before done() runs.
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <random>

#include "engine/embed_engine.h"

namespace citadel::engine {
namespace {

// Embedding of an input: [first id, length]. Blocks its first call until release() (so jobs can queue up).
class FakeRunner : public EmbeddingRunner {
 public:
  int dim() const override { return 2; }
  int max_tokens() const override { return 8; }
  Status embed(const std::vector<std::vector<int32_t>>& inputs, float* out) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      calls_.push_back(inputs.size());
      entered_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].empty() || inputs[i][0] < 0) return InvalidArgument("bad input");
      out[2 * i] = static_cast<float>(inputs[i][0]);
      out[2 * i + 1] = static_cast<float>(inputs[i].size());
    }
    return OkStatus();
  }
  void wait_entered() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return entered_; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::vector<size_t> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, released_ = false;
  std::vector<size_t> calls_;
};

struct Outcome {
  Status st;
  std::vector<float> out;
};

EmbedJob job(std::vector<std::vector<int32_t>> in, std::promise<Outcome>* p) {
  EmbedJob j;
  j.inputs = std::move(in);
  j.done = [p](Status st, std::vector<float> out) { p->set_value({st, std::move(out)}); };
  return j;
}

TEST(EmbedEngine, QueuesBatchesAndRefusesWhenFull) {
  FakeRunner r;
  EmbedEngineConfig cfg;
  cfg.max_waiting = 2, cfg.max_batch_tokens = 100;
  EmbedEngine e(&r, cfg);
  ASSERT_TRUE(e.start().ok());
  std::promise<Outcome> a, b, c, d, x;
  ASSERT_TRUE(e.submit(job({{7, 7, 7}}, &a)).ok());
  r.wait_entered();  // the worker holds job a inside the runner
  ASSERT_TRUE(e.submit(job({{1}, {2, 2}}, &b)).ok());
  EmbedJob cj = job({{-5}}, &x);  // cancelled before it runs
  cj.cancelled = std::make_shared<std::atomic<bool>>(true);
  ASSERT_TRUE(e.submit(std::move(cj)).ok());
  EXPECT_EQ(e.submit(job({{3}}, &c)).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(e.stats().waiting, 2);
  r.release();
  Outcome oa = a.get_future().get(), ob = b.get_future().get(), ox = x.get_future().get();
  ASSERT_TRUE(oa.st.ok());
  EXPECT_EQ(oa.out, (std::vector<float>{7, 3}));
  ASSERT_TRUE(ob.st.ok());
  EXPECT_EQ(ob.out, (std::vector<float>{1, 1, 2, 2}));
  EXPECT_EQ(ox.st.code(), StatusCode::kCancelled);
  // A bad input fails its own job only, even when batched with a good one.
  std::promise<Outcome> bad, good;
  ASSERT_TRUE(e.submit(job({{-1}}, &bad)).ok());
  ASSERT_TRUE(e.submit(job({{4}}, &good)).ok());
  EXPECT_EQ(bad.get_future().get().st.code(), StatusCode::kInvalidArgument);
  Outcome og = good.get_future().get();
  ASSERT_TRUE(og.st.ok());
  EXPECT_EQ(og.out, (std::vector<float>{4, 1}));
  EXPECT_EQ(r.calls()[0], 1u);
  EXPECT_EQ(r.calls()[1], 2u);  // the two inputs of job b in one call (the cancelled job dropped)
  e.stop(std::chrono::steady_clock::now());
  EXPECT_EQ(e.submit(job({{1}}, &d)).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(e.stats().rejected_busy_total, 2);
  const EmbedEngineStats s = e.stats();
  EXPECT_EQ(s.requests_total, 3);  // a, b, good
  EXPECT_EQ(s.inputs_total, 4);
  EXPECT_EQ(s.tokens_total, 3 + 1 + 2 + 1);
  EXPECT_EQ(s.cancelled_total, 1);
  EXPECT_EQ(s.errors_total, 1);    // bad
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.waiting, 0);
}

// The runner answers at once (no blocking): for the metrics test.
class QuickRunner : public EmbeddingRunner {
 public:
  int dim() const override { return 1; }
  int max_tokens() const override { return 16; }
  Status embed(const std::vector<std::vector<int32_t>>& inputs, float* out) override {
    for (size_t i = 0; i < inputs.size(); ++i) out[i] = static_cast<float>(inputs[i].size());
    return OkStatus();
  }
};

TEST(EmbedEngine, MetricsInTheRegistryCountEveryJobBeforeItsDone) {
  auto reg = std::make_shared<metrics::Registry>();
  QuickRunner r;
  EmbedEngine e(&r, {.max_waiting = 8, .max_batch_tokens = 100, .metrics = reg, .metrics_model_name = "mini"});
  ASSERT_TRUE(e.start().ok());
  std::mt19937 rng(7);
  int64_t want_inputs = 0, want_tokens = 0;
  constexpr int kJobs = 20;
  for (int k = 0; k < kJobs; ++k) {
    std::vector<std::vector<int32_t>> in(1 + rng() % 5);
    for (auto& x : in) x.assign(1 + rng() % 16, 3);
    const int64_t n = static_cast<int64_t>(in.size());
    int64_t t = 0;
    for (const auto& x : in) t += static_cast<int64_t>(x.size());
    want_inputs += n, want_tokens += t;
    std::promise<EmbedEngineStats> seen;
    EmbedJob j;
    j.inputs = std::move(in);
    j.done = [&](Status st, std::vector<float>) {
      EXPECT_TRUE(st.ok());
      seen.set_value(e.stats());
    };
    ASSERT_TRUE(e.submit(std::move(j)).ok());
    const EmbedEngineStats s = seen.get_future().get();  // read inside done(): the job is counted already
    EXPECT_EQ(s.requests_total, k + 1);
    EXPECT_EQ(s.inputs_total, want_inputs);
    EXPECT_EQ(s.tokens_total, want_tokens);
  }
  EXPECT_EQ(e.submit(EmbedJob{}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e.stats().rejected_invalid_total, 1);
  EXPECT_EQ(reg->sum("citadel:embedding_inputs_total"), static_cast<double>(want_inputs));
  EXPECT_EQ(reg->sum("citadel:embedding_tokens_total"), static_cast<double>(want_tokens));
  EXPECT_EQ(reg->sum("citadel:embedding_requests_total"), kJobs);
  const auto lat = reg->histogram("citadel:embedding_request_latency_seconds", "", {"model_name"},
                                  metrics::latency_buckets_long())->with({"mini"})->snapshot();
  EXPECT_EQ(lat.count, static_cast<uint64_t>(kJobs));
  const auto batch = reg->histogram("citadel:embedding_batch_size", "", {"model_name"}, embedding_batch_buckets())
                         ->with({"mini"})->snapshot();
  EXPECT_EQ(batch.count, static_cast<uint64_t>(reg->sum("citadel:embedding_batches_total")));
  EXPECT_EQ(batch.sum, static_cast<double>(want_inputs));  // one job per call here: each call's inputs, summed
  const std::string text = reg->render();
  for (const char* line : {"citadel:embedding_requests_running{model_name=\"mini\"} 0",
                           "citadel:embedding_requests_waiting{model_name=\"mini\"} 0",
                           "citadel:embedding_rejected_total{model_name=\"mini\",reason=\"invalid\"} 1",
                           "citadel:embedding_request_latency_seconds_count{model_name=\"mini\"} 20"})
    EXPECT_NE(text.find(line), std::string::npos) << line;
}

}  // namespace
}  // namespace citadel::engine
