// The engine's series in a shared registry (engine_metrics.h): counts and histogram observations per request, the
// admission timestamp behind queue time and TTFT, and stats() reading the same series.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <thread>

#include "tests/engine/test_runner.h"

namespace citadel::engine {
namespace {

using testing::TestRunner;
constexpr int kVocab = 64;
const char* kModel = "m\"x";  // a model name that needs escaping in the exposition

GenerateRequest request(const char* id, int prompt_len, int max_tokens) {
  GenerateRequest r;
  r.id = id;
  for (int i = 0; i < prompt_len; ++i) r.prompt.push_back((i * 7 + 3) % kVocab);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

struct Fixture {
  std::shared_ptr<metrics::Registry> reg = std::make_shared<metrics::Registry>();
  TestRunner runner{kVocab};
  std::unique_ptr<Engine> engine;
  Fixture() {
    EngineConfig c;
    c.n_blocks = 256, c.block_size = 4, c.max_batched_tokens = 64, c.max_seqs = 16, c.watermark = 0;
    c.metrics = reg;
    c.metrics_model_name = kModel;
    engine = std::make_unique<Engine>(&runner, c);
  }
  metrics::Histogram::Snapshot hist(const char* name) {
    const auto& b = std::string(name) == "citadel:inter_token_latency_seconds" ? metrics::latency_buckets_short()
                                                                                : metrics::latency_buckets_long();
    return reg->histogram(name, "", {"model_name"}, b)->with({kModel})->snapshot();
  }
  double counter(const char* name, std::vector<std::string> labels = {}) {
    for (const auto& s : reg->samples(name)) {
      std::vector<std::string> want = {kModel};
      want.insert(want.end(), labels.begin(), labels.end());
      if (s.labels == want) return s.value;
    }
    return -1;
  }
  void run() {
    for (int i = 0; i < 10000 && !engine->idle(); ++i) engine->step();
    ASSERT_TRUE(engine->idle());
  }
};

TEST(EngineMetrics, EveryRequestAndTokenIsCountedOnce) {
  Fixture f;
  ASSERT_TRUE(f.engine->init().ok());
  ASSERT_TRUE(f.engine->submit(request("a", 5, 4)).ok());
  ASSERT_TRUE(f.engine->submit(request("b", 7, 1)).ok());
  ASSERT_TRUE(f.engine->submit(request("c", 9, 6)).ok());
  EXPECT_FALSE(f.engine->submit(request("d", 0, 4)).ok());     // empty prompt: invalid
  EXPECT_FALSE(f.engine->submit(request("e", 3, 4000)).ok());  // beyond the pool: invalid
  f.run();
  EXPECT_EQ(f.counter("citadel:prompt_tokens_total"), 5 + 7 + 9);
  EXPECT_EQ(f.counter("citadel:generation_tokens_total"), 4 + 1 + 6);
  EXPECT_EQ(f.counter("citadel:request_success_total", {"length"}), 3);
  EXPECT_EQ(f.counter("citadel:request_success_total", {"stop"}), 0);
  EXPECT_EQ(f.counter("citadel:engine_rejected_total", {"invalid"}), 2);
  EXPECT_EQ(f.hist("citadel:request_queue_time_seconds").count, 3u);
  EXPECT_EQ(f.hist("citadel:time_to_first_token_seconds").count, 3u);
  EXPECT_EQ(f.hist("citadel:e2e_request_latency_seconds").count, 3u);
  EXPECT_EQ(f.hist("citadel:inter_token_latency_seconds").count, 3u + 0u + 5u);  // tokens after the first
  // Per request queue <= TTFT <= e2e, so the sums keep that order.
  const double q = f.hist("citadel:request_queue_time_seconds").sum;
  const double ttft = f.hist("citadel:time_to_first_token_seconds").sum;
  const double e2e = f.hist("citadel:e2e_request_latency_seconds").sum;
  EXPECT_LE(q, ttft);
  EXPECT_LE(ttft, e2e);
  // stats() reads the same series.
  const EngineStats st = f.engine->stats();
  EXPECT_EQ(st.generated_tokens_total, 11);
  EXPECT_EQ(st.prompt_tokens_total, 21);
  EXPECT_EQ(st.finished_total, 3);
  EXPECT_EQ(st.rejected_invalid_total, 2);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.kv_blocks_total, 256);
  const std::string text = f.reg->render();
  EXPECT_NE(text.find("citadel:num_requests_running{model_name=\"m\\\"x\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("citadel:kv_cache_blocks{model_name=\"m\\\"x\",state=\"total\"} 256\n"), std::string::npos);
}

// Queue time and TTFT start at admission, not at the first step: time spent before the engine picks a request up
// is in both. (The sleep is the measured quantity, not a synchronisation.)
TEST(EngineMetrics, QueueTimeAndTtftStartAtAdmission) {
  Fixture f;
  ASSERT_TRUE(f.engine->init().ok());
  ASSERT_TRUE(f.engine->submit(request("a", 5, 2)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  f.run();
  EXPECT_GE(f.hist("citadel:request_queue_time_seconds").sum, 0.03);
  EXPECT_GE(f.hist("citadel:time_to_first_token_seconds").sum, 0.03);
  EXPECT_GE(f.hist("citadel:e2e_request_latency_seconds").sum, f.hist("citadel:time_to_first_token_seconds").sum);
}

TEST(EngineMetrics, CancelledAndBusyAreTheirOwnSeries) {
  auto reg = std::make_shared<metrics::Registry>();
  TestRunner runner(kVocab);
  EngineConfig c;
  c.n_blocks = 64, c.block_size = 4, c.max_waiting = 1, c.watermark = 0;
  c.metrics = reg;
  c.metrics_model_name = "m";
  Engine e(&runner, c);
  ASSERT_TRUE(e.init().ok());
  ASSERT_TRUE(e.submit(request("a", 4, 8)).ok());
  EXPECT_EQ(e.submit(request("b", 4, 8)).status().code(), StatusCode::kResourceExhausted);  // queue full
  ASSERT_TRUE(e.cancel("a").ok());
  for (int i = 0; i < 100 && !e.idle(); ++i) e.step();
  auto value = [&](const char* name, std::vector<std::string> labels) {
    for (const auto& s : reg->samples(name))
      if (s.labels == labels) return s.value;
    return -1.0;
  };
  EXPECT_EQ(value("citadel:engine_rejected_total", {"m", "busy"}), 1);
  EXPECT_EQ(value("citadel:request_success_total", {"m", "cancelled"}), 1);
  EXPECT_EQ(value("citadel:request_success_total", {"m", "length"}), 0);
  EXPECT_EQ(e.stats().cancelled_total, 1);
  EXPECT_EQ(e.stats().rejected_busy_total, 1);
}

}  // namespace
}  // namespace citadel::engine
