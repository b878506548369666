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

}  // namespace citadel
