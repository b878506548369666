// Device faults: a runner error fails the engine for good, every request gets a clear error, nothing aborts.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "tests/engine/test_runner.h"

namespace citadel::engine {
namespace {

using testing::TestRunner;
constexpr int kVocab = 64;

EngineConfig config() {
  return testing::small_config(64, 4, 64, /*max_seqs=*/2);  // a third request waits: it must fail too
}

GenerateRequest request(const std::string& id, std::vector<int32_t> prompt, int max_tokens) {
  return testing::greedy_request(id, std::move(prompt), max_tokens);
}

struct Drained {
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
};

Drained drain(RequestHandle& h) {
  Drained d;
  TokenEvent ev;
  while (h.try_pop(&ev)) {
    if (ev.token >= 0) d.tokens.push_back(ev.token);
    if (ev.finish != FinishReason::kNone) d.finish = ev.finish;
  }
  return d;
}

void expect_runner_failure(const RequestHandle& h) {
  ASSERT_TRUE(h.finished());
  EXPECT_EQ(h.final_status().code(), StatusCode::kInternal);
  EXPECT_NE(h.final_status().message().find("the model runner failed: TestRunner: injected device fault"),
            std::string::npos)
      << h.final_status().to_string();
}

TEST(EngineFault, FaultOnStepNFailsRunningAndWaitingRequestsAndLaterSubmits) {
  TestRunner runner(kVocab);
  Engine e(&runner, config());
  ASSERT_TRUE(e.init().ok());
  EXPECT_FALSE(e.failed());
  EXPECT_TRUE(e.failure().ok());
  auto a = *e.submit(request("a", {1, 2, 3}, 50));
  auto b = *e.submit(request("b", {4, 5}, 50));
  auto c = *e.submit(request("c", {6}, 50));  // waits: max_seqs = 2
  runner.fail_at_call(4);                     // steps 1-3 run (prefill, two decodes), step 4 faults
  int steps = 0;
  while (!e.idle() && steps < 100) {
    e.step();
    ++steps;
  }
  ASSERT_TRUE(e.idle()) << "requests still live after the fault";
  EXPECT_EQ(runner.forward_calls(), 4);
  EXPECT_TRUE(runner.device_failed());
  const Drained da = drain(*a), db = drain(*b), dc = drain(*c);
  EXPECT_EQ(da.finish, FinishReason::kError);
  EXPECT_EQ(db.finish, FinishReason::kError);
  EXPECT_EQ(dc.finish, FinishReason::kError);
  EXPECT_EQ(da.tokens.size(), 3u);  // what the three good steps produced reached the client first
  EXPECT_EQ(da.tokens, TestRunner::reference_greedy({1, 2, 3}, 3, kVocab));
  EXPECT_TRUE(dc.tokens.empty());
  expect_runner_failure(*a);
  expect_runner_failure(*b);
  expect_runner_failure(*c);

  EXPECT_TRUE(e.failed());
  EXPECT_EQ(e.failure().code(), StatusCode::kInternal);
  EXPECT_NE(e.failure().message().find("injected device fault at forward call 4"), std::string::npos);
  auto later = e.submit(request("later", {1}, 2));
  ASSERT_FALSE(later.ok());
  EXPECT_EQ(later.status().code(), StatusCode::kInternal);
  EXPECT_NE(later.status().message().find("the model runner failed"), std::string::npos);
  // Nothing is scheduled any more: no forward call after the fault.
  EXPECT_FALSE(e.step());
  EXPECT_EQ(runner.forward_calls(), 4);
  EXPECT_EQ(e.kv_cache()->num_used(), 0);  // every block came back
  EXPECT_TRUE(e.kv_cache()->check_invariants().ok());
  EngineStats st = e.stats();
  EXPECT_EQ(st.errors_total, 3);
  EXPECT_EQ(st.running, 0);
}

TEST(EngineFault, ThreadedEngineFailsInFlightRequestsAndKeepsTheProcess) {
  TestRunner runner(kVocab);
  Engine e(&runner, config());
  runner.fail_at_call(2);
  ASSERT_TRUE(e.start().ok());
  auto a = *e.submit(request("a", {1, 2, 3, 4, 5}, 100));
  TokenEvent ev;
  FinishReason finish = FinishReason::kNone;
  for (int i = 0; i < 1000 && finish == FinishReason::kNone; ++i) {
    if (a->pop(&ev, std::chrono::milliseconds(100)) == RequestHandle::Pop::kClosed) break;
    finish = ev.finish;
  }
  EXPECT_EQ(finish, FinishReason::kError);
  expect_runner_failure(*a);
  EXPECT_TRUE(e.failed());
  auto later = e.submit(request("later", {1}, 2));
  EXPECT_FALSE(later.ok());
  e.stop();  // joins cleanly
  EXPECT_EQ(runner.forward_calls(), 2);
}

TEST(EngineFault, CopyBlocksErrorFailsTheEngineToo) {
  TestRunner runner(kVocab);
  Engine e(&runner, config());
  ASSERT_TRUE(e.init().ok());
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  auto a = *e.submit(request("a", prompt, 20));
  ASSERT_TRUE(e.step());  // a's prompt is computed and cached; a keeps running (holds its blocks)
  // b's whole prompt is cached: its last token is recomputed into a block a still holds, so copy-on-write ->
  // copy_blocks, which faults.
  runner.fail_next_copy();
  const int64_t calls = runner.forward_calls();
  auto b = *e.submit(request("b", prompt, 3));
  while (!e.idle()) e.step();
  EXPECT_EQ(drain(*a).finish, FinishReason::kError);
  EXPECT_EQ(drain(*b).finish, FinishReason::kError);
  ASSERT_TRUE(b->finished());
  EXPECT_NE(b->final_status().message().find("the model runner failed: TestRunner: injected device fault in copy"),
            std::string::npos) << b->final_status().to_string();
  EXPECT_EQ(runner.forward_calls(), calls);  // forward never ran after the failed copy
  EXPECT_TRUE(e.failed());
  EXPECT_FALSE(e.submit(request("c", {5}, 1)).ok());
}

}  // namespace
}  // namespace citadel::engine
