// The 4-row SIMD kernels against the single-row ones (same math, float summation order may differ: 1e-10), and
// matmul_multi against separate matmul calls (identical kernels and tiles: bit-equal).
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

TEST(MatmulRows, FourRowKernelsMatchSingleRow) {
  if (!cpu_features().has_avx2_fma()) GTEST_SKIP() << "no AVX2 on this CPU";
  int checked = 0;
  for (DType t : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1}) {
    const int64_t n = 608, rows = 8;
    const size_t rb = dtype_row_bytes(t, n);
    std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 7);
    std::vector<float> x = random_floats(n, 8);
    std::vector<int16_t> q16(n);
    std::vector<float> d(n / kQK), sums(n / kQK);
    cpu::detail::quantize_row_q16(x.data(), q16.data(), d.data(), sums.data(), n);
    cpu::detail::ActRow a;
    a.q16 = q16.data();
    a.q16_d = d.data();
    a.q16_sums = sums.data();
    const auto k = cpu::detail::avx2_dot_kernel(t), g = cpu::detail::generic_dot_kernel(t);
    ASSERT_TRUE(k.dot && k.dot4) << dtype_name(t);
    std::vector<float> one(rows), four(rows), gen(rows);
    for (int64_t r = 0; r < rows; ++r) {
      one[r] = k.dot(w.data() + r * rb, a, n);
      gen[r] = g.dot(w.data() + r * rb, a, n);
    }
    for (int64_t r = 0; r < rows; r += cpu::detail::kRows4) k.dot4(w.data() + r * rb, rb, a, n, four.data() + r);
    EXPECT_LT(nmse(one, four), 1e-10) << dtype_name(t);
    EXPECT_LT(nmse(gen, four), 1e-10) << dtype_name(t);
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

TEST(MatmulRows, MultiEqualsSeparateCalls) {
  const int64_t n_tok = 3;
  const DType types[3] = {DType::kQ4_1, DType::kQ8_0, DType::kQ4_K};
  const int64_t n_out[3] = {37, 64, 5};
  std::vector<float> x;
  std::vector<std::vector<uint8_t>> w;
  std::vector<std::vector<float>> want(3), got(3);
  cpu::MatmulTarget targets[3];
  // q4_K needs n_in % 256: use 768 columns for all three targets.
  const int64_t cols = 768;
  x = random_floats(n_tok * cols, 12);
  for (int i = 0; i < 3; ++i) {
    w.push_back(testing::quantized_weights(types[i], n_out[i], cols, 30 + i));
    want[i].assign(n_tok * n_out[i], 0.0f);
    got[i].assign(n_tok * n_out[i], -1.0f);
    ASSERT_TRUE(cpu::matmul({types[i], w[i].data(), n_out[i], cols}, x.data(), n_tok, want[i].data()).ok());
    targets[i] = {{types[i], w[i].data(), n_out[i], cols}, got[i].data()};
  }
  ASSERT_TRUE(cpu::matmul_multi(targets, 3, x.data(), n_tok).ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(want[i], got[i]) << dtype_name(types[i]);
  targets[1].w.cols = 576;
  EXPECT_EQ(cpu::matmul_multi(targets, 3, x.data(), n_tok).code(), StatusCode::kInvalidArgument);
}
}  // namespace
}  // namespace citadel

namespace citadel {
namespace {

// The AVX2 activation quantizer must be bit-exact with quantize_row_q16, ties (x / d = k + 0.5) included.
TEST(MatmulRows, Avx2QuantizerBitExact) {
  if (!cpu_features().has_avx2_fma()) GTEST_SKIP() << "no AVX2 on this CPU";
  const int64_t n = 32 * 40;
  std::vector<float> x = testing::random_floats(n, 5, 3.0f);
  for (int64_t j = 0; j < 32; ++j) x[j] = (static_cast<float>(j) - 15.5f) / 4096.0f;
  x[31] = 32767.0f / 4096.0f;                                                  // block 0: d = 1/4096, x / d = k + 0.5
  for (int64_t j = 32; j < 64; ++j) x[j] = (static_cast<float>(j) - 47.5f) / 8192.0f;
  x[63] = -32767.0f / 8192.0f;                                                 // block 1: d = 1/8192, x / d = k + 0.5
  for (int64_t j = 64; j < 96; ++j) x[j] = 0.0f;                               // block 2: all zero (d = 0)
  std::vector<int16_t> want(n), got(n);
  std::vector<float> wd(n / kQK), ws(n / kQK), gd(n / kQK), gs(n / kQK);
  cpu::detail::quantize_row_q16(x.data(), want.data(), wd.data(), ws.data(), n);
  cpu::detail::quantize_q16_avx2(x.data(), got.data(), gd.data(), gs.data(), n);
  EXPECT_EQ(want, got);
  EXPECT_EQ(wd, gd);
  EXPECT_EQ(ws, gs);
  EXPECT_EQ(want[31], 32767);
  EXPECT_EQ(want[63], -32767);
  EXPECT_EQ(wd[2], 0.0f);
}

}  // namespace
}  // namespace citadel
