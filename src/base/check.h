// CHECK(cond) for invariants: a failure is a bug in Citadel, never a user error (those are Status).
#pragma once

#include <cstdio>
#include <cstdlib>

namespace citadel::detail {
[[noreturn]] inline void check_failed(const char* file, int line, const char* expr, const char* msg) {
  std::fprintf(stderr, "%s:%d: CHECK failed: %s %s\n", file, line, expr, msg ? msg : "");
  std::abort();
}
}  // namespace citadel::detail

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) ::citadel::detail::check_failed(__FILE__, __LINE__, #cond, nullptr); \
  } while (0)
#define CHECK_MSG(cond, msg)                                                      \
  do {                                                                            \
    if (!(cond)) ::citadel::detail::check_failed(__FILE__, __LINE__, #cond, msg); \
  } while (0)

#ifdef __CUDACC__
#define CUDA_CHECK(expr)                                                                   \
  do {                                                                                     \
    cudaError_t _e = (expr);                                                               \
    if (_e != cudaSuccess)                                                                 \
      ::citadel::detail::check_failed(__FILE__, __LINE__, #expr, cudaGetErrorString(_e));  \
  } while (0)
#endif
