// Environment switches: the before/after toggles of the kernels and runners (CITADEL_CPU_GEMM=off and the like),
// each read once by its caller into a static.
#pragma once

#include <cstdlib>
#include <cstring>

namespace citadel {

// True when the environment variable `name` is set to exactly `value`.
inline bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

// The environment variable `name` as an integer, or fallback when it is unset or not a whole number.
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return *end == 0 && n >= -(1L << 30) && n <= (1L << 30) ? static_cast<int>(n) : fallback;
}

}  // namespace citadel
