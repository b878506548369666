// The engine's log lines about one request (written on the engine thread, outside any handler's LogRequestScope)
// carry that request's log_id: deadline, consumer too slow, cancel, runner error. Normal ends write nothing.
#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <vector>

#include "base/log.h"
#include "engine/engine.h"
#include "tests/engine/test_runner.h"

namespace citadel::engine {
namespace {

constexpr int kVocab = 64;

class EngineLog : public ::testing::Test {
 protected:
  void SetUp() override {
    set_log_sink_for_testing([this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.push_back(line);
    });
    set_log_format(LogFormat::kJson);
    set_log_level(LogLevel::kDebug);
  }
  void TearDown() override {
    set_log_sink_for_testing(nullptr);
    set_log_format(LogFormat::kText);
    set_log_level(LogLevel::kInfo);
  }
  // The lines of component "engine" that carry "request_id":"<id>".
  std::vector<std::string> engine_lines_for(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& l : lines_)
      if (l.find("\"component\":\"engine\"") != std::string::npos &&
          l.find("\"request_id\":\"" + id + "\"") != std::string::npos)
        out.push_back(l);
    return out;
  }
  static EngineConfig config(size_t event_buffer = 4096) {
    EngineConfig c;
    c.n_blocks = 64;
    c.block_size = 4;
    c.watermark = 0;
    c.event_buffer = event_buffer;
    return c;
  }
  static GenerateRequest request(const std::string& id, const std::string& log_id, int max_tokens) {
    GenerateRequest r;
    r.id = id;
    r.log_id = log_id;
    r.prompt = {1, 2, 3, 4, 5};
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    return r;
  }
  static void run(Engine& e) {
    for (int i = 0; i < 1000 && !e.idle(); ++i) e.step();
    ASSERT_TRUE(e.idle());
  }
  std::mutex mu_;
  std::vector<std::string> lines_;
};

bool has(const std::string& line, const std::string& part) { return line.find(part) != std::string::npos; }

TEST_F(EngineLog, DeadlineLineCarriesTheRequestsLogId) {
  testing::TestRunner runner(kVocab);
  Engine e(&runner, config());
  ASSERT_TRUE(e.init().ok());
  GenerateRequest r = request("chatcmpl-a-0", "req-deadline-1", 20);
  r.deadline = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  ASSERT_TRUE(e.submit(std::move(r)).ok());
  run(e);
  const auto lines = engine_lines_for("req-deadline-1");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(has(lines[0], "\"level\":\"warn\"")) << lines[0];
  EXPECT_TRUE(has(lines[0], "\"finish\":\"deadline\"")) << lines[0];
  EXPECT_TRUE(has(lines[0], "\"engine_request\":\"chatcmpl-a-0\"")) << lines[0];
}

TEST_F(EngineLog, ConsumerTooSlowAndCancelLinesCarryTheirIds) {
  testing::TestRunner runner(kVocab);
  Engine e(&runner, config(/*event_buffer=*/2));
  ASSERT_TRUE(e.init().ok());
  auto slow = e.submit(request("cmpl-s-0", "req-slow", 20));  // nobody pops: the buffer of 2 overflows
  auto cancelled = e.submit(request("cmpl-c-0", "req-cancel", 20));
  auto normal = e.submit(request("cmpl-n-0", "req-normal", 1));
  ASSERT_TRUE(slow.ok() && cancelled.ok() && normal.ok());
  (*cancelled)->cancel();
  run(e);
  const auto s = engine_lines_for("req-slow");
  ASSERT_EQ(s.size(), 1u);
  EXPECT_TRUE(has(s[0], "\"level\":\"warn\"") && has(s[0], "consumer too slow")) << s[0];
  const auto c = engine_lines_for("req-cancel");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(has(c[0], "\"level\":\"debug\"") && has(c[0], "\"finish\":\"cancelled\"")) << c[0];
  EXPECT_TRUE(engine_lines_for("req-normal").empty());  // a normal end: the access line says it
}

TEST_F(EngineLog, AFailedStepLogsAnErrorLinePerRequest) {
  testing::TestRunner runner(kVocab);
  Engine e(&runner, config());
  ASSERT_TRUE(e.init().ok());
  ASSERT_TRUE(e.submit(request("cmpl-e-0", "req-err-a", 5)).ok());
  ASSERT_TRUE(e.submit(request("cmpl-e-1", "req-err-b", 5)).ok());
  runner.fail_next_forward();  // one failed step; the device stays healthy
  run(e);
  for (const char* id : {"req-err-a", "req-err-b"}) {
    const auto lines = engine_lines_for(id);
    ASSERT_EQ(lines.size(), 1u) << id;
    EXPECT_TRUE(has(lines[0], "\"level\":\"error\"") && has(lines[0], "injected failure")) << lines[0];
  }
}

TEST_F(EngineLog, WithoutALogIdTheEngineIdIsUsedAndShutdownCancelsAreInfo) {
  testing::TestRunner runner(kVocab);
  Engine e(&runner, config());
  ASSERT_TRUE(e.init().ok());
  ASSERT_TRUE(e.submit(request("cmpl-z-0", "", 50)).ok());
  e.step();
  e.stop();  // not started: cancels what is left at once
  const auto lines = engine_lines_for("cmpl-z-0");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(has(lines[0], "\"level\":\"info\"") && has(lines[0], "engine stopped")) << lines[0];
}

}  // namespace
}  // namespace citadel::engine
