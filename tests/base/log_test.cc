#include "base/log.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace citadel {
namespace {

std::string escaped(std::string_view s) {
  std::string out;
  json_escape_append(&out, s);
  return out;
}

// The global logger state, captured and restored around each test.
class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    set_log_sink_for_testing([this](const std::string& line) { lines_.push_back(line); });
    set_log_level(LogLevel::kInfo);
  }
  void TearDown() override {
    set_log_sink_for_testing(nullptr);
    set_log_filter(nullptr);
    set_log_format(LogFormat::kText);
    set_log_level(LogLevel::kInfo);
  }
  nlohmann::json only_line_as_json() {
    EXPECT_EQ(lines_.size(), 1u);
    if (lines_.empty()) return nullptr;
    EXPECT_EQ(lines_[0].back(), '\n');
    EXPECT_EQ(lines_[0].find('\n'), lines_[0].size() - 1);  // one line
    return nlohmann::json::parse(lines_[0]);              // throws (fails the test) when not valid JSON
  }
  std::vector<std::string> lines_;
};

TEST(JsonEscape, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(escaped("plain text"), "plain text");
  EXPECT_EQ(escaped("a\"b\\c"), "a\\\"b\\\\c");
  EXPECT_EQ(escaped("l1\nl2\r\t\b\f"), "l1\\nl2\\r\\t\\b\\f");
  EXPECT_EQ(escaped(std::string("\x01\x1f", 2)), "\\u0001\\u001f");
  EXPECT_EQ(escaped(std::string("a\0b", 3)), "a\\u0000b");
  EXPECT_EQ(escaped("\x7f"), "\x7f");  // DEL is legal in a JSON string
}

TEST(JsonEscape, KeepsValidUtf8AndReplacesInvalidBytes) {
  EXPECT_EQ(escaped("caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80");
  const std::string r = "\xef\xbf\xbd";  // U+FFFD
  EXPECT_EQ(escaped("a\xff" "b"), "a" + r + "b");
  EXPECT_EQ(escaped("\x80"), r);                     // stray continuation byte
  EXPECT_EQ(escaped("\xc3"), r);                     // truncated at the end
  EXPECT_EQ(escaped("\xe4\xb8" "x"), r + r + "x");  // truncated in the middle: each byte replaced
  EXPECT_EQ(escaped("\xc0\xaf"), r + r);             // overlong '/'
  EXPECT_EQ(escaped("\xe0\x80\xaf"), r + r + r);     // overlong, 3 bytes
  EXPECT_EQ(escaped("\xed\xa0\x80"), r + r + r);     // a UTF-16 surrogate
  EXPECT_EQ(escaped("\xf4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  // Whatever the bytes, the result parses as a JSON string.
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  EXPECT_NO_THROW(nlohmann::json::parse("\"" + escaped(all) + "\""));
}

TEST(Rfc3339, UtcWithMilliseconds) {
  EXPECT_EQ(rfc3339_utc_ms(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(rfc3339_utc_ms(1714566896789), "2024-05-01T12:34:56.789Z");
  EXPECT_EQ(rfc3339_utc_ms(-1), "1969-12-31T23:59:59.999Z");
}

TEST(FormatLogLine, JsonObjectWithOptionalKeys) {
  EXPECT_EQ(format_log_line(LogFormat::kJson, LogLevel::kWarn, 1714566896789, "", "", "disk \"low\"\n"),
            "{\"ts\":\"2024-05-01T12:34:56.789Z\",\"level\":\"warn\",\"msg\":\"disk \\\"low\\\"\\n\"}\n");
  const std::string line = format_log_line(LogFormat::kJson, LogLevel::kInfo, 0, "req-1", "access", "GET / 200",
                                           {{"status", 200}, {"duration_ms", 1.5}, {"tenant", "a\x01"}});
  const auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["request_id"], "req-1");
  EXPECT_EQ(j["component"], "access");
  EXPECT_EQ(j["status"], 200);
  EXPECT_DOUBLE_EQ(j["duration_ms"].get<double>(), 1.5);
  EXPECT_EQ(j["tenant"], "a\x01");
  EXPECT_EQ(j["level"], "info");
  const std::string nan_line =
      format_log_line(LogFormat::kJson, LogLevel::kInfo, 0, "", "", "x", {{"v", std::nan("")}});
  EXPECT_EQ(nlohmann::json::parse(nan_line)["v"], nullptr);  // JSON has no NaN
}

TEST(FormatLogLine, TextKeepsTodaysShapeAndQuotesOddValues) {
  EXPECT_EQ(format_log_line(LogFormat::kText, LogLevel::kInfo, 0, "", "", "hello"), "[citadel info] hello\n");
  EXPECT_EQ(format_log_line(LogFormat::kText, LogLevel::kInfo, 0, "r1", "access", "GET / 200",
                            {{"status", 200}, {"tenant", "a b"}, {"empty", ""}}),
            "[citadel info] GET / 200 component=access request_id=r1 status=200 tenant=\"a b\" empty=\"\"\n");
}

TEST_F(LogTest, TextLinesAreUnchanged) {
  LogRequestScope scope("req-7");
  log_info("hello");
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(lines_[0], "[citadel info] hello\n");
}

TEST_F(LogTest, JsonLineHasTimestampLevelAndMessage) {
  set_log_format(LogFormat::kJson);
  log_warn("quote \" tab \t bell \x07 bad \xfe end");
  const auto j = only_line_as_json();
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["msg"], "quote \" tab \t bell \x07 bad \xef\xbf\xbd end");
  const std::string ts = j["ts"];
  ASSERT_EQ(ts.size(), 24u) << ts;
  EXPECT_EQ(ts[10], 'T');
  EXPECT_EQ(ts[19], '.');
  EXPECT_EQ(ts.back(), 'Z');
  EXPECT_FALSE(j.contains("request_id"));
  EXPECT_FALSE(j.contains("component"));
}

TEST_F(LogTest, RequestScopeAddsTheIdOnThisThreadOnlyAndNests) {
  set_log_format(LogFormat::kJson);
  {
    LogRequestScope outer("req-outer");
    EXPECT_EQ(current_log_request_id(), "req-outer");
    {
      LogRequestScope inner("req-inner");
      log_info("in inner");
    }
    log_info("in outer");
    std::thread([] { log_info("other thread"); }).join();
  }
  log_info("after");
  EXPECT_EQ(current_log_request_id(), "");
  ASSERT_EQ(lines_.size(), 4u);
  EXPECT_EQ(nlohmann::json::parse(lines_[0])["request_id"], "req-inner");
  EXPECT_EQ(nlohmann::json::parse(lines_[1])["request_id"], "req-outer");
  EXPECT_FALSE(nlohmann::json::parse(lines_[2]).contains("request_id"));
  EXPECT_FALSE(nlohmann::json::parse(lines_[3]).contains("request_id"));
}

TEST_F(LogTest, RequestEventCarriesTheGivenIdOnAnyThread) {
  set_log_format(LogFormat::kJson);
  std::thread([] { log_request_event("req-engine", LogLevel::kWarn, "engine", "deadline", {{"n", 2}}); }).join();
  {
    LogRequestScope scope("req-handler");
    log_request_event("req-other", LogLevel::kInfo, "generation", "explicit wins");
    log_request_event("", LogLevel::kInfo, "generation", "empty means none");
  }
  log_request_event("req-x", LogLevel::kDebug, "engine", "below the level");  // filtered by level
  ASSERT_EQ(lines_.size(), 3u);
  const auto a = nlohmann::json::parse(lines_[0]);
  EXPECT_EQ(a["request_id"], "req-engine");
  EXPECT_EQ(a["component"], "engine");
  EXPECT_EQ(a["level"], "warn");
  EXPECT_EQ(a["n"], 2);
  EXPECT_EQ(nlohmann::json::parse(lines_[1])["request_id"], "req-other");
  EXPECT_FALSE(nlohmann::json::parse(lines_[2]).contains("request_id"));
  set_log_format(LogFormat::kText);
  log_request_event("req-t", LogLevel::kInfo, "engine", "text");
  ASSERT_EQ(lines_.size(), 4u);
  EXPECT_EQ(lines_[3], "[citadel info] text component=engine request_id=req-t\n");
}

TEST_F(LogTest, FilterIsAppliedBeforeEncoding) {
  set_log_format(LogFormat::kJson);
  // A filter whose output needs escaping itself: encoding must come after it.
  set_log_filter([](const std::string& s) {
    std::string out = s;
    for (size_t p; (p = out.find("secret")) != std::string::npos;) out.replace(p, 6, "[MASK \"x\"]");
    return out;
  });
  log_event(LogLevel::kInfo, "access", "the secret is out",
            {{"principal", "secret-user"}, {"n", 3}, LogField::unfiltered("config", "secret: kept")});
  const auto j = only_line_as_json();
  EXPECT_EQ(j["msg"], "the [MASK \"x\"] is out");
  EXPECT_EQ(j["principal"], "[MASK \"x\"]-user");
  EXPECT_EQ(j["n"], 3);
  EXPECT_EQ(j["config"], "secret: kept");
  EXPECT_EQ(lines_[0].find("the secret"), std::string::npos);
}

TEST_F(LogTest, LevelFiltersEvents) {
  set_log_format(LogFormat::kJson);
  set_log_level(LogLevel::kWarn);
  EXPECT_FALSE(log_enabled(LogLevel::kInfo));
  log_event(LogLevel::kInfo, "access", "dropped");
  log_debug("dropped");
  log_error("kept");
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(lines_[0])["level"], "error");
}

}  // namespace
}  // namespace citadel
