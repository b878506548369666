#include "base/clock.h"

#include <cstdio>
#include <ctime>

namespace citadel {

std::optional<int64_t> parse_time_ms(const std::string& s) {
  if (s.empty()) return int64_t{0};
  if (s.size() <= 12 && s.find_first_not_of("0123456789") == std::string::npos) return std::stoll(s) * 1000;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  char tail = 0;
  const int n = std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &sec, &tail);
  const bool date_only = n == 3 && s.size() == 10;
  const bool date_time = (n == 6 || (n == 7 && (tail == 'Z' || tail == 'z'))) && s.size() <= 20;
  if (!(date_only || date_time) || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
    return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d, tm.tm_hour = h, tm.tm_min = mi, tm.tm_sec = sec;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

}  // namespace citadel
