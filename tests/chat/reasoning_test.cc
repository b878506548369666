#include "chat/reasoning.h"

#include <gtest/gtest.h>

namespace citadel::chat {
namespace {

struct Sample {
  std::string text;
  bool starts_in_think;
  std::string reasoning, content;
};

const Sample kSamples[] = {
    {"<think>\nLet me think.\n</think>\n\nThe answer is 4.", false, "\nLet me think.\n", "\n\nThe answer is 4."},
    {"Okay, 2+2.\n</think>\n\n4", true, "Okay, 2+2.\n", "\n\n4"},
    {"No think block here.", false, "", "No think block here."},
    {"  <think>a<b</thin</think>c</think>d", false, "a<b</thin", "c</think>d"},
    {"still thinking <", true, "still thinking <", ""},
    {"<thi", false, "", "<thi"},
    {"", true, "", ""},
};

TEST(Reasoning, OneShot) {
  for (const auto& s : kSamples) {
    ReasoningDelta d = split_reasoning(s.text, s.starts_in_think);
    EXPECT_EQ(d.reasoning, s.reasoning) << s.text;
    EXPECT_EQ(d.content, s.content) << s.text;
  }
}

TEST(Reasoning, EveryTwoWaySplitMatchesOneShot) {
  for (const auto& s : kSamples) {
    for (size_t cut = 0; cut <= s.text.size(); ++cut) {
      ReasoningSplitter sp(s.starts_in_think);
      ReasoningDelta a = sp.feed(s.text.substr(0, cut)), b = sp.feed(s.text.substr(cut)), c = sp.finish();
      EXPECT_EQ(a.reasoning + b.reasoning + c.reasoning, s.reasoning) << s.text << " cut " << cut;
      EXPECT_EQ(a.content + b.content + c.content, s.content) << s.text << " cut " << cut;
    }
  }
}

TEST(Reasoning, ByteAtATimeNeverEmitsTagBytes) {
  for (const auto& s : kSamples) {
    ReasoningSplitter sp(s.starts_in_think);
    std::string r, c;
    for (char ch : s.text) {
      ReasoningDelta d = sp.feed(std::string(1, ch));
      r += d.reasoning;
      c += d.content;
    }
    ReasoningDelta d = sp.finish();
    EXPECT_EQ(r + d.reasoning, s.reasoning) << s.text;
    EXPECT_EQ(c + d.content, s.content) << s.text;
  }
}

}  // namespace
}  // namespace citadel::chat
