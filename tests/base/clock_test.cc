#include "base/clock.h"

#include <gtest/gtest.h>

namespace citadel {
namespace {

TEST(ParseTime, UnixSecondsAndRfc3339Utc) {
  EXPECT_EQ(parse_time_ms(""), 0);
  EXPECT_EQ(parse_time_ms("1796490000"), 1796490000000LL);
  EXPECT_EQ(parse_time_ms("1970-01-02"), 86400000LL);
  EXPECT_EQ(parse_time_ms("2026-12-05T10:00:00Z"), 1796464800000LL);  // date -u -d 2026-12-05T10:00:00Z +%s
  EXPECT_EQ(parse_time_ms("2026-12-05T10:00:00"), 1796464800000LL);
  for (const char* bad : {"yesterday", "2026-13-01", "2026-12-05T25:00:00Z", "2026-12-05T10:00:00+08:00",
                          "1e9", "-5", "2026-12-05x", "12345678901234"})
    EXPECT_FALSE(parse_time_ms(bad).has_value()) << bad;
}

}  // namespace
}  // namespace citadel
