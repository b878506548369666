// Engine health: a broken device fails the engine (no more admissions, live requests end with an error, the thread
// ends) while a batch failure on a healthy device does not; the heartbeat runs while the thread lives and not after.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "engine/engine.h"
#include "tests/engine/test_runner.h"

namespace citadel::engine {
namespace {

using testing::TestRunner;

EngineConfig config() {
  EngineConfig c;
  c.n_blocks = 32;
  c.block_size = 4;
  c.watermark = 0;
  return c;
}

GenerateRequest request(const std::string& id, int max_tokens = 4) {
  GenerateRequest r;
  r.id = id;
  r.prompt = {1, 2, 3};
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

FinishReason last_finish(RequestHandle& h) {
  TokenEvent ev;
  FinishReason f = FinishReason::kNone;
  while (h.try_pop(&ev))
    if (ev.finish != FinishReason::kNone) f = ev.finish;
  return f;
}

TEST(EngineHealth, BatchFailureOnAHealthyDeviceKeepsServing) {
  TestRunner runner;
  Engine e(&runner, config());
  ASSERT_TRUE(e.init().ok());
  auto h = e.submit(request("a"));
  ASSERT_TRUE(h.ok());
  runner.fail_next_forward();
  e.step();
  EXPECT_EQ(last_finish(**h), FinishReason::kError);
  EXPECT_TRUE(e.failure().ok());
  auto h2 = e.submit(request("b", 2));
  ASSERT_TRUE(h2.ok()) << h2.status().to_string();
  while (e.step()) {
  }
  EXPECT_EQ(last_finish(**h2), FinishReason::kLength);
}

TEST(EngineHealth, BrokenDeviceFailsTheEngineAndEveryLiveRequest) {
  TestRunner runner;
  EngineConfig cfg = config();
  cfg.max_seqs = 1;  // "b" waits while "a" runs: both must end
  Engine e(&runner, cfg);
  ASSERT_TRUE(e.init().ok());
  auto a = e.submit(request("a"));
  auto b = e.submit(request("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  runner.break_device("GPU 0 fell off the bus");
  runner.fail_next_forward();
  e.step();
  EXPECT_EQ(e.failure().message(), "the model runner failed: GPU 0 fell off the bus");
  EXPECT_EQ(last_finish(**a), FinishReason::kError);
  EXPECT_EQ(last_finish(**b), FinishReason::kError);
  EXPECT_TRUE(e.idle());
  auto c = e.submit(request("c"));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("the model runner failed"), std::string::npos) << c.status().message();
}

// Waits (bounded) until pred holds; polling a counter the engine thread bumps.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

TEST(EngineHealth, HeartbeatRunsWhileIdleAndStopsWithTheThread) {
  TestRunner runner;
  Engine e(&runner, config());
  std::atomic<int> beats{0};
  e.set_heartbeat([&] { ++beats; }, std::chrono::milliseconds(5));
  ASSERT_TRUE(e.start().ok());
  // Idle: nothing submitted, yet the thread wakes itself for the heartbeat.
  EXPECT_TRUE(eventually([&] { return beats.load() >= 3; }));
  auto h = e.submit(request("a", 3));
  ASSERT_TRUE(h.ok());
  TokenEvent ev;
  while ((*h)->pop(&ev, std::chrono::seconds(10)) == RequestHandle::Pop::kEvent && ev.finish == FinishReason::kNone) {
  }
  EXPECT_EQ(ev.finish, FinishReason::kLength);
  e.stop();
  const int after_stop = beats.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // would be ~6 more beats were the thread alive
  EXPECT_EQ(beats.load(), after_stop);
}

TEST(EngineHealth, HeartbeatStopsWhenTheDeviceFails) {
  TestRunner runner;
  Engine e(&runner, config());
  std::atomic<int> beats{0};
  e.set_heartbeat([&] { ++beats; }, std::chrono::milliseconds(5));
  runner.break_device("lost");
  runner.fail_next_forward();
  ASSERT_TRUE(e.start().ok());
  EXPECT_TRUE(eventually([&] { return beats.load() >= 1; }));
  auto h = e.submit(request("a"));
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(eventually([&] { return e.failed(); }));
  EXPECT_TRUE(eventually([&] { return e.idle(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let a beat in flight finish
  const int after = beats.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(beats.load(), after);
  e.stop();
}

}  // namespace
}  // namespace citadel::engine
