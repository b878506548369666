// The AVX-512 decode kernels (kernels/cpu/matmul_avx512.cc: f16, bf16) against the portable reference kernels on
// random weights and activations of odd sizes (column counts that are not multiples of 16, a single column). Only
// float summation order may differ. Skipped where the CPU lacks AVX-512 (or
// CITADEL_CPU=avx2 caps it): there matmul uses the AVX2 kernels, which matmul_rows_test.cc checks.
#include <gtest/gtest.h>

#include <vector>

#include "base/cpu_features.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"
#include "kernels/quant/quant.h"
#include "tests/kernels/kernel_test_util.h"

namespace citadel {
namespace {

using testing::nmse;
using testing::random_floats;

// Activations of one token in the format kernel k wants, kept alive for the ActRow.
struct Acts {
  std::vector<float> f32, d, sums;
  std::vector<int16_t> q16;
  std::vector<BlockQ8_K> q8_K;
  cpu::detail::ActRow row;
};

Acts make_acts(cpu::detail::ActFormat f, int64_t n, uint32_t seed) {
  Acts a;
  a.f32 = random_floats(n, seed, 2.0f);
  a.f32[n / 2] = 40.0f;  // an outlier, as real activations have
  if (f == cpu::detail::ActFormat::kF32) a.row.f32 = a.f32.data();
  if (f == cpu::detail::ActFormat::kQ16) {
    a.q16.resize(n);
    a.d.resize(n / kQK);
    a.sums.resize(n / kQK);
    cpu::detail::quantize_row_q16(a.f32.data(), a.q16.data(), a.d.data(), a.sums.data(), n);
    a.row.q16 = a.q16.data();
    a.row.q16_d = a.d.data();
    a.row.q16_sums = a.sums.data();
  }
  if (f == cpu::detail::ActFormat::kQ8_K) {
    a.q8_K.resize(n / kQK_K);
    quantize_row_q8_K(a.f32.data(), a.q8_K.data(), n);
    a.row.q8_K = a.q8_K.data();
  }
  return a;
}

// Every dtype with an AVX-512 kernel: dot and dot4 against the generic kernel (same activation format), rows 0..6
// (dot4 on rows 0..3, and on rows 3..6 at an odd offset).
TEST(MatmulAvx512, RowDotKernelsMatchReference) {
  if (!cpu_features().has_avx512()) GTEST_SKIP() << "no AVX-512 F/BW/VL/DQ on this CPU (or CITADEL_CPU caps it)";
  const DType types[] = {DType::kF16, DType::kBF16};
  int checked = 0;
  for (DType t : types) {
    const auto k = cpu::detail::avx512_dot_kernel(t), g = cpu::detail::generic_dot_kernel(t);
    ASSERT_TRUE(k.dot) << dtype_name(t);
    ASSERT_EQ(k.act, g.act) << dtype_name(t);
    const bool blocks = dtype_info(t)->block > 1;
    const std::vector<int64_t> sizes = blocks ? std::vector<int64_t>{32, 96, 608, 32 * 151}
                                              : std::vector<int64_t>{1, 15, 17, 37, 576, 4867};
    for (int64_t n : sizes) {
      const int64_t rows = 7;
      const size_t rb = dtype_row_bytes(t, n);
      std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 100 + static_cast<uint32_t>(n));
      Acts a = make_acts(k.act, n, 200 + static_cast<uint32_t>(n));
      std::vector<float> want(rows), got(rows, -1.0f);
      for (int64_t r = 0; r < rows; ++r) {
        want[r] = g.dot(w.data() + r * rb, a.row, n);
        got[r] = k.dot(w.data() + r * rb, a.row, n);
      }
      EXPECT_LT(nmse(want, got), 1e-11) << dtype_name(t) << " n " << n;
      if (k.dot4) {
        std::vector<float> four(2 * cpu::detail::kRows4, -1.0f);
        k.dot4(w.data(), rb, a.row, n, four.data());
        k.dot4(w.data() + 3 * rb, rb, a.row, n, four.data() + cpu::detail::kRows4);
        const std::vector<float> want4 = {want[0], want[1], want[2], want[3], want[3], want[4], want[5], want[6]};
        EXPECT_LT(nmse(want4, four), 1e-11) << dtype_name(t) << " dot4 n " << n;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * 6);
  // The dtypes without an AVX-512 kernel (matmul falls back to the AVX2 ones).
  for (DType t : {DType::kF32, DType::kQ4_0, DType::kQ8_0, DType::kQ4_K}) EXPECT_EQ(cpu::detail::avx512_dot_kernel(t).dot, nullptr);
}

// Through matmul (which picks the AVX-512 kernels here) for one token against matmul_ref.
TEST(MatmulAvx512, DecodeMatmulMatchesReference) {
  if (!cpu_features().has_avx512()) GTEST_SKIP() << "no AVX-512 F/BW/VL/DQ on this CPU (or CITADEL_CPU caps it)";
  for (DType t : {DType::kF16, DType::kBF16}) {
    const int64_t rows = 45, n = 32 * 23;
    std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 7);
    std::vector<float> x = random_floats(n, 8);
    std::vector<float> want(rows), got(rows, -1.0f);
    const WeightView wv{t, w.data(), rows, n};
    ASSERT_TRUE(cpu::matmul_ref(wv, x.data(), 1, want.data()).ok());
    ASSERT_TRUE(cpu::matmul(wv, x.data(), 1, got.data()).ok());
    EXPECT_LT(nmse(want, got), 1e-8) << dtype_name(t);
  }
}

}  // namespace
}  // namespace citadel
