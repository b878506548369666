// Shared helpers for the kernel tests: seeded random data and normalized mean squared error.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace citadel::testing {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = g(rng);
  return v;
}

// sum (got - want)^2 / sum want^2 (0 when both are all zero).
inline double nmse(const float* want, const float* got, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den == 0 ? num : num / den;
}
inline double nmse(const std::vector<float>& want, const std::vector<float>& got) {
  return nmse(want.data(), got.data(), want.size());
}

}  // namespace citadel::testing
