#include "base/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace citadel {
namespace {

std::optional<size_t> first_bad(const std::string& s) { return first_invalid_utf8(s); }

TEST(Utf8, ValidSequencesOfEveryLength) {
  EXPECT_EQ(first_bad(""), std::nullopt);
  EXPECT_EQ(first_bad("plain ascii {\"a\":1}"), std::nullopt);
  EXPECT_EQ(first_bad(std::string("nul \0 inside", 12)), std::nullopt);  // U+0000 is valid UTF-8
  EXPECT_EQ(first_bad("\xC2\x80"), std::nullopt);          // U+0080, the smallest 2-byte
  EXPECT_EQ(first_bad("\xC3\xA9t\xC3\xA9"), std::nullopt); // "été"
  EXPECT_EQ(first_bad("\xDF\xBF"), std::nullopt);          // U+07FF
  EXPECT_EQ(first_bad("\xE0\xA0\x80"), std::nullopt);      // U+0800, the smallest 3-byte
  EXPECT_EQ(first_bad("\xE4\xB8\xAD\xE6\x96\x87"), std::nullopt);  // "中文"
  EXPECT_EQ(first_bad("\xED\x9F\xBF"), std::nullopt);      // U+D7FF, just below the surrogates
  EXPECT_EQ(first_bad("\xEE\x80\x80"), std::nullopt);      // U+E000, just above them
  EXPECT_EQ(first_bad("\xEF\xBF\xBF"), std::nullopt);      // U+FFFF
  EXPECT_EQ(first_bad("\xF0\x90\x80\x80"), std::nullopt);  // U+10000, the smallest 4-byte
  EXPECT_EQ(first_bad("\xF0\x9F\x98\x80"), std::nullopt);  // U+1F600
  EXPECT_EQ(first_bad("\xF4\x8F\xBF\xBF"), std::nullopt);  // U+10FFFF, the largest
  EXPECT_EQ(utf8_sequence_length("a", 0), 1u);
  EXPECT_EQ(utf8_sequence_length("\xC3\xA9", 0), 2u);
  EXPECT_EQ(utf8_sequence_length("\xE4\xB8\xAD", 0), 3u);
  EXPECT_EQ(utf8_sequence_length("\xF0\x9F\x98\x80", 0), 4u);
}

TEST(Utf8, OverlongFormsAreInvalid) {
  EXPECT_EQ(first_bad("\xC0\xAF"), 0u);              // '/' in 2 bytes
  EXPECT_EQ(first_bad("ab\xC1\xBF"), 2u);            // U+007F in 2 bytes
  EXPECT_EQ(first_bad("\xE0\x80\xAF"), 0u);          // '/' in 3 bytes
  EXPECT_EQ(first_bad("\xE0\x9F\xBF"), 0u);          // U+07FF in 3 bytes
  EXPECT_EQ(first_bad("\xF0\x80\x80\xAF"), 0u);      // '/' in 4 bytes
  EXPECT_EQ(first_bad("\xF0\x8F\xBF\xBF"), 0u);      // U+FFFF in 4 bytes
}

TEST(Utf8, SurrogatesAreInvalid) {
  EXPECT_EQ(first_bad("x\xED\xA0\x80"), 1u);                  // U+D800
  EXPECT_EQ(first_bad("xy\xED\xBF\xBF"), 2u);                 // U+DFFF
  EXPECT_EQ(first_bad("\xED\xA0\xBD\xED\xB8\x80"), 0u);       // a CESU-8 surrogate pair
}

TEST(Utf8, AboveU10FFFFIsInvalid) {
  EXPECT_EQ(first_bad("\xF4\x90\x80\x80"), 0u);  // U+110000
  EXPECT_EQ(first_bad("\xF5\x80\x80\x80"), 0u);
  EXPECT_EQ(first_bad("ok\xF7\xBF\xBF\xBF"), 2u);
  EXPECT_EQ(first_bad("\xF8\x88\x80\x80\x80"), 0u);  // the old 5-byte form
  EXPECT_EQ(first_bad("\xFE"), 0u);
  EXPECT_EQ(first_bad("\xFF"), 0u);
}

TEST(Utf8, TruncatedAndStrayBytesAreInvalid) {
  EXPECT_EQ(first_bad("\x80"), 0u);                   // a continuation byte with no lead
  EXPECT_EQ(first_bad("\xC3\xA9\xBF"), 2u);           // one too many continuation bytes
  EXPECT_EQ(first_bad("end\xC3"), 3u);                // cut by the end
  EXPECT_EQ(first_bad("\xE4\xB8"), 0u);
  EXPECT_EQ(first_bad("\xF0\x9F\x98"), 0u);
  EXPECT_EQ(first_bad("\xE4\xB8x"), 0u);              // cut by an ASCII byte
  EXPECT_EQ(first_bad("\xF0\x9F\x98\xC3\xA9"), 0u);   // cut by the next lead byte
  // The offset is that of the first bad byte, after valid multi-byte text.
  EXPECT_EQ(first_bad("\xE4\xB8\xAD\xF0\x9F\x98\x80!\xC3("), 8u);
}

}  // namespace
}  // namespace citadel
