// Time helpers.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace citadel {

// "1796490000" (Unix seconds) or an RFC 3339 UTC time ("2026-12-05T10:00:00Z"; a date alone is midnight) as Unix
// milliseconds; "" is 0; nullopt when it is neither.
std::optional<int64_t> parse_time_ms(const std::string& s);

inline double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Seconds from a to b (negative when b is earlier).
inline double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace citadel
