// The q4_K / q5_K / q6_K prompt GEMM (gemm_kquant_avx512) against its twin, the scalar row-dot reference
// (generic_dot_kernel) over the same q8_K activation codes: the integer sums are the same, only the f32 additions
// differ in order. Weights from the quantizer and raw random blocks (every code, scale and min value, q6_K's negative
// scales), an all-maximum block against +-127 activations (the int32 sums' largest values), 1 to 33 tokens (short and
// balanced tiles), 1 to 19 super-blocks, groups with nr < 16 (masked stores).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "base/cpu_features.h"
#include "base/half.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"
#include "kernels/quant/quant.h"
#include "tests/kernels/kernel_test_util.h"

namespace citadel {
namespace {

using testing::nmse;
using testing::random_floats;

constexpr DType kTypes[] = {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

bool vnni() { return cpu_features().has_avx512() && cpu_features().avx512vnni; }

// rows x n of dtype t with every byte random except the f16 block scales (d, dmin: small positive normals).
std::vector<uint8_t> random_blocks(DType t, int64_t rows, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> w(rows * dtype_row_bytes(t, n));
  for (uint8_t& b : w) b = static_cast<uint8_t>(rng());
  const size_t bb = dtype_info(t)->block_bytes;
  for (size_t i = 0; i < w.size() / bb; ++i) {
    uint8_t* blk = w.data() + i * bb;
    const uint16_t d = f32_to_f16(0.001f * static_cast<float>(1 + rng() % 50));
    const uint16_t dmin = f32_to_f16(0.0005f * static_cast<float>(1 + rng() % 50));
    if (t == DType::kQ6_K) {
      std::memcpy(blk + 208, &d, 2);
    } else {
      std::memcpy(blk, &d, 2);
      std::memcpy(blk + 2, &dmin, 2);
    }
  }
  return w;
}

// n_tok rows of q8_K activations (normal, one outlier per token so its block reaches +-127).
std::vector<BlockQ8_K> q8_K_acts(int64_t n_tok, int64_t n, uint32_t seed) {
  std::vector<float> x = random_floats(n_tok * n, seed, 1.5f);
  for (int64_t t = 0; t < n_tok; ++t) x[t * n + (t * 37 + 5) % n] = -20.0f;
  std::vector<BlockQ8_K> a(n_tok * (n / kQK_K));
  for (int64_t t = 0; t < n_tok; ++t) quantize_row_q8_K(x.data() + t * n, a.data() + t * (n / kQK_K), n);
  return a;
}

// gemm_kquant_avx512 over groups of 16 rows vs the row-dot reference per row and token; returns the NMSE and checks
// that columns past the rows are untouched.
double gemm_vs_row_dots(DType t, const std::vector<uint8_t>& w, int64_t rows, int64_t n,
                        const std::vector<BlockQ8_K>& a, int64_t n_tok) {
  const size_t rb = dtype_row_bytes(t, n);
  cpu::detail::Q8KTiles tiles;
  cpu::detail::pack_q8_K_tiles(a.data(), n_tok, n, &tiles);
  const int64_t ldy = rows + 3;
  std::vector<float> want(n_tok * ldy, -7.0f), got(n_tok * ldy, -7.0f);
  const auto ref = cpu::detail::generic_dot_kernel(t);
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int nr = static_cast<int>(std::min<int64_t>(16, rows - r0));
    cpu::detail::gemm_kquant_avx512(t, w.data() + r0 * rb, rb, nr, tiles, got.data() + r0, ldy);
  }
  for (int64_t tok = 0; tok < n_tok; ++tok) {
    cpu::detail::ActRow row;
    row.q8_K = a.data() + tok * (n / kQK_K);
    for (int64_t r = 0; r < rows; ++r) want[tok * ldy + r] = ref.dot(w.data() + r * rb, row, n);
    for (int64_t c = rows; c < ldy; ++c) EXPECT_EQ(got[tok * ldy + c], -7.0f) << "column " << c << " written";
  }
  return nmse(want, got);
}

TEST(MatmulKquant, GemmMatchesRowDots) {
  if (!vnni()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or CITADEL_CPU caps it)";
  int checked = 0;
  uint32_t seed = 1;
  for (DType t : kTypes) {
    for (int64_t nsb : {1, 3, 7, 19}) {
      const int64_t n = nsb * kQK_K, rows = 27;  // groups of 16 and 11 rows
      for (bool raw : {false, true}) {
        const std::vector<uint8_t> w =
            raw ? random_blocks(t, rows, n, seed++) : testing::quantized_weights(t, rows, n, seed++);
        for (int64_t n_tok : {1, 2, 5, 8, 9, 13, 17, 33}) {
          const std::vector<BlockQ8_K> a = q8_K_acts(n_tok, n, seed++);
          EXPECT_LT(gemm_vs_row_dots(t, w, rows, n, a, n_tok), 1e-11)
              << dtype_name(t) << (raw ? " random blocks" : " quantized") << " n " << n << " tokens " << n_tok;
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, 3 * 4 * 2 * 8);
}

// Every code, scale and min at its maximum (q6_K: scales -128) against activations at +-127: the largest int32 sums.
TEST(MatmulKquant, ExtremeBlocksMatchRowDots) {
  if (!vnni()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or CITADEL_CPU caps it)";
  for (DType t : kTypes) {
    const int64_t n = 2 * kQK_K, rows = 16;
    std::vector<uint8_t> w = random_blocks(t, rows, n, 5);
    const size_t bb = dtype_info(t)->block_bytes;
    for (size_t i = 0; i < w.size() / bb; ++i) {
      uint8_t* blk = w.data() + i * bb;
      if (t == DType::kQ6_K) {
        std::fill(blk, blk + 192, 0xFF);  // codes 63
        std::fill(blk + 192, blk + 208, i % 2 ? 0x80 : 0x7F);
      } else {
        std::fill(blk + 4, blk + bb, 0xFF);  // scales, mins 63; codes 15 / 31
      }
    }
    for (float sign : {1.0f, -1.0f}) {
      std::vector<float> x(3 * n, sign);
      std::vector<BlockQ8_K> a(3 * (n / kQK_K));
      for (int tok = 0; tok < 3; ++tok) quantize_row_q8_K(x.data() + tok * n, a.data() + tok * (n / kQK_K), n);
      EXPECT_LT(gemm_vs_row_dots(t, w, rows, n, a, 3), 1e-11) << dtype_name(t) << " sign " << sign;
      cpu::detail::ActRow row;
      row.q8_K = a.data();
      const float want = cpu::detail::generic_dot_kernel(t).dot(w.data(), row, n);
      const float got = cpu::detail::avx512_kquant_dot_kernel(t).dot(w.data(), row, n);
      EXPECT_NEAR(got, want, 1e-5f * std::fabs(want)) << dtype_name(t) << " row dot, sign " << sign;
    }
  }
}

// Through matmul (which takes the GEMM from 4 tokens where the CPU has VNNI): the same as the tokens one at a time
// (the row-dot kernels) up to f32 order, and close to matmul_ref (q8_K activation rounding).
TEST(MatmulKquant, PromptMatchesTokensOneAtATime) {
  uint32_t seed = 100;
  for (DType t : kTypes) {
    const int64_t rows = 45, n = 5 * kQK_K;
    std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, seed++);
    const WeightView wv{t, w.data(), rows, n};
    for (int64_t n_tok : {4, 11, 31}) {
      std::vector<float> x = random_floats(n_tok * n, seed++);
      std::vector<float> ref(n_tok * rows), one(n_tok * rows), fast(n_tok * rows, -1.0f);
      ASSERT_TRUE(cpu::matmul_ref(wv, x.data(), n_tok, ref.data()).ok());
      for (int64_t tok = 0; tok < n_tok; ++tok)
        ASSERT_TRUE(cpu::matmul(wv, x.data() + tok * n, 1, one.data() + tok * rows).ok());
      ASSERT_TRUE(cpu::matmul(wv, x.data(), n_tok, fast.data()).ok());
      EXPECT_LT(nmse(one, fast), 1e-11) << dtype_name(t) << " tokens " << n_tok;
      EXPECT_LT(nmse(ref, fast), 1e-3) << dtype_name(t) << " tokens " << n_tok;
    }
  }
}

// The AVX-512 row dots (decode) against the scalar reference: quantized and raw random blocks, 1 to 19 super-blocks.
TEST(MatmulKquant, Avx512RowDotsMatchReference) {
  if (!cpu_features().has_avx512()) GTEST_SKIP() << "no AVX-512 on this CPU (or CITADEL_CPU caps it)";
  uint32_t seed = 300;
  int checked = 0;
  for (DType t : kTypes) {
    const auto fast = cpu::detail::avx512_kquant_dot_kernel(t);
    const auto ref = cpu::detail::generic_dot_kernel(t);
    ASSERT_TRUE(fast.dot) << dtype_name(t);
    ASSERT_EQ(fast.act, cpu::detail::ActFormat::kQ8_K);
    for (int64_t nsb : {1, 2, 7, 19}) {
      const int64_t n = nsb * kQK_K, rows = 9;
      const size_t rb = dtype_row_bytes(t, n);
      for (bool raw : {false, true}) {
        const std::vector<uint8_t> w =
            raw ? random_blocks(t, rows, n, seed++) : testing::quantized_weights(t, rows, n, seed++);
        const std::vector<BlockQ8_K> a = q8_K_acts(1, n, seed++);
        cpu::detail::ActRow row;
        row.q8_K = a.data();
        std::vector<float> want(rows), got(rows);
        for (int64_t r = 0; r < rows; ++r) {
          want[r] = ref.dot(w.data() + r * rb, row, n);
          got[r] = fast.dot(w.data() + r * rb, row, n);
        }
        EXPECT_LT(nmse(want, got), 1e-11) << dtype_name(t) << (raw ? " random blocks" : " quantized") << " n " << n;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 3 * 4 * 2);
  EXPECT_EQ(cpu::detail::avx512_kquant_dot_kernel(DType::kQ4_0).dot, nullptr);
}

TEST(MatmulKquant, SupportedTypes) {
  for (DType t : kTypes) EXPECT_TRUE(cpu::detail::kquant_gemm_supported(t)) << dtype_name(t);
  for (DType t : {DType::kQ4_0, DType::kQ8_0, DType::kQ3_K, DType::kF16})
    EXPECT_FALSE(cpu::detail::kquant_gemm_supported(t)) << dtype_name(t);
}

}  // namespace
}  // namespace citadel
