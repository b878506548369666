#include "engine/stop.h"

#include <gtest/gtest.h>

namespace citadel::engine {
namespace {

TEST(StopStringMatcher, MatchAcrossPiecesEmitsTextBefore) {
  StopStringMatcher m({"</end>"});
  std::string out;
  out += m.feed("hello </");
  EXPECT_EQ(out, "hello ");  // "</" held back
  out += m.feed("en");
  EXPECT_EQ(out, "hello ");
  out += m.feed("d> trailing");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "hello ");
  EXPECT_EQ(m.feed("more"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopStringMatcher, FalseAlarmReleasesHeldText) {
  StopStringMatcher m({"STOP"});
  EXPECT_EQ(m.feed("abc ST"), "abc ");
  EXPECT_EQ(m.held(), 2u);
  EXPECT_EQ(m.feed("ART"), "START");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.feed("xS"), "x");
  EXPECT_EQ(m.flush(), "S");
}

TEST(StopStringMatcher, EarliestOfSeveralWins) {
  StopStringMatcher m({"world", "lo w"});
  EXPECT_EQ(m.feed("hello world"), "hel");
  EXPECT_EQ(m.matched_index(), 1);
}

TEST(StopStringMatcher, OverlappingPrefixIsHeldCorrectly) {
  StopStringMatcher m({"aab"});
  std::string out = m.feed("a");
  out += m.feed("a");
  out += m.feed("a");  // "aaa": keep the last "aa" (a possible start)
  EXPECT_EQ(out, "a");
  out += m.feed("b");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "a");
}

TEST(StopStringMatcher, ConcatenationOfOutputEqualsTextWhenNoStop) {
  StopStringMatcher m({"\n\n", "###"});
  const std::string text = "one\ntwo ## three # four\n";
  std::string out;
  for (char c : text) out += m.feed(std::string(1, c));
  out += m.flush();
  EXPECT_EQ(out, text);
}

}  // namespace
}  // namespace citadel::engine
