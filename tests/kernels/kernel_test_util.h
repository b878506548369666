// Shared helpers for the kernel tests: seeded random data, quantized weight matrices and normalized mean squared
// error.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kernels/quant/quant.h"

namespace citadel::testing {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = g(rng);
  return v;
}

// rows x cols normal(0, 0.05) weights quantized row by row to dtype t: [rows, dtype_row_bytes(t, cols)] bytes.
inline std::vector<uint8_t> quantized_weights(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  std::vector<float> f = random_floats(rows * cols, seed, 0.05f);
  std::vector<uint8_t> w(rows * dtype_row_bytes(t, cols));
  for (int64_t r = 0; r < rows; ++r)
    EXPECT_TRUE(quantize_row(t, f.data() + r * cols, w.data() + r * dtype_row_bytes(t, cols), cols).ok());
  return w;
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

// x [n_tok, w.cols] times w three ways: matmul_ref, matmul over the rows, matmul over the interleaved copy il.
struct MatmulThreeWays {
  std::vector<float> ref, rows, interleaved;
};
inline MatmulThreeWays matmul_three_ways(WeightView w, const void* il, const std::vector<float>& x, int64_t n_tok) {
  MatmulThreeWays m;
  m.ref.resize(n_tok * w.rows);
  m.rows.resize(n_tok * w.rows);
  m.interleaved.assign(n_tok * w.rows, -1.0f);
  w.interleaved = nullptr;
  EXPECT_TRUE(cpu::matmul_ref(w, x.data(), n_tok, m.ref.data()).ok());
  EXPECT_TRUE(cpu::matmul(w, x.data(), n_tok, m.rows.data()).ok());
  w.interleaved = il;
  EXPECT_TRUE(cpu::matmul(w, x.data(), n_tok, m.interleaved.data()).ok());
  return m;
}

}  // namespace citadel::testing
