#include "chat/tool_calls.h"

#include <gtest/gtest.h>

namespace citadel::chat {
namespace {

TEST(HermesToolCalls, ParsesBlocksAndContent) {
  auto r = parse_hermes_tool_calls(
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"n\": 2}}\n"
      "</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->content, "Let me check.");
  ASSERT_EQ(r->calls.size(), 2u);
  EXPECT_EQ(r->calls[0].name, "get_weather");
  EXPECT_EQ(r->calls[0].arguments, "{\"city\": \"Zürich\", \"n\": 2}");
  EXPECT_EQ(r->calls[1].arguments, "{}");
}

TEST(HermesToolCalls, PlainTextHasNoCalls) {
  auto r = parse_hermes_tool_calls("  just text  ");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->content, "just text");
  EXPECT_TRUE(r->calls.empty());
}

TEST(HermesToolCalls, BadBlocksAreErrorsNamingTheBlock) {
  EXPECT_NE(parse_hermes_tool_calls("<tool_call>{\"name\": \"x\"").status().message().find("tool call 0"),
            std::string::npos);
  EXPECT_FALSE(parse_hermes_tool_calls("<tool_call>{not json}</tool_call>").ok());
  EXPECT_FALSE(parse_hermes_tool_calls("<tool_call>{\"arguments\": {}}</tool_call>").ok());
  EXPECT_FALSE(parse_hermes_tool_calls("<tool_call>[1]</tool_call>").ok());
}

}  // namespace
}  // namespace citadel::chat
