// The prefill / batched GEMM path (kernels/cpu/matmul_gemm.cc) against its reference twins: the AVX2 dequantizer
// against dequantize_row, the AVX2 FMA tile against gemm_tile_ref, and gemm_rows (and so matmul from
// kGemmMinTokens tokens) against matmul_ref; the f32 panels of f16 / bf16 rows (AVX-512). All f32 math: only float
// rounding / summation order may differ.
#include <gtest/gtest.h>

#include <vector>

#include "base/cpu_features.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/packed_kernels.h"
#include "kernels/ops.h"
#include "kernels/quant/quant.h"
#include "tests/kernels/kernel_test_util.h"

namespace citadel {
namespace {

using testing::nmse;
using testing::random_floats;

const DType kTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1,
                        DType::kQ5_0, DType::kQ5_1, DType::kQ8_0};

// matmul's prompt path rounds f16 / bf16 weights and the activations to bf16 where the CPU has AVX512_BF16 (fast
// mode; relative error 2^-9 per operand: NMSE ~1e-5 measured here), and runs q5_0 through the q8_0 GEMM's 16-bit
// activation codes where it has AVX-512 VNNI (~5e-10 measured here, as the row-dot kernels); f32 math elsewhere.
double matmul_tolerance(DType t) {
  if ((t == DType::kF16 || t == DType::kBF16) && cpu_features().has_avx512_bf16()) return 5e-5;
  if (t == DType::kQ5_0 && cpu_features().has_avx512() && cpu_features().avx512vnni) return 1e-8;
  return 1e-11;
}

TEST(MatmulGemm, Avx2DequantizerMatchesReference) {
  if (!cpu_features().has_avx2_fma()) GTEST_SKIP() << "no AVX2 on this CPU";
  for (DType t : kTypes) {
    ASSERT_TRUE(cpu::detail::gemm_supported(t));
    const int64_t rows = 3, n = 96;
    const size_t rb = dtype_row_bytes(t, n);
    std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 3);
    std::vector<float> want(rows * n), got(rows * n, -1.0f);
    for (int64_t r = 0; r < rows; ++r) ASSERT_TRUE(dequantize_row(t, w.data() + r * rb, want.data() + r * n, n).ok());
    ASSERT_TRUE(cpu::detail::dequantize_rows_avx2(t, w.data(), rb, rows, n, got.data())) << dtype_name(t);
    for (size_t i = 0; i < want.size(); ++i)  // q4_1 / q5_1: one FMA rounding instead of two
      ASSERT_NEAR(got[i], want[i], 1e-6f * (1.0f + std::fabs(want[i]))) << dtype_name(t) << " element " << i;
  }
  std::vector<float> out(256);
  EXPECT_FALSE(cpu::detail::dequantize_rows_avx2(DType::kQ4_K, nullptr, 0, 1, 256, out.data()));
  EXPECT_FALSE(cpu::detail::gemm_supported(DType::kQ6_K));
}

TEST(MatmulGemm, Avx2TileMatchesReference) {
  if (!cpu_features().has_avx2_fma()) GTEST_SKIP() << "no AVX2 on this CPU";
  for (int64_t n : {1, 8, 37, 576}) {
    for (int nc = 1; nc <= cpu::detail::kGemmCols; ++nc) {
      const int64_t ldx = n + 3;
      std::vector<float> w = random_floats(cpu::detail::kGemmRows * n, 11 + n);
      std::vector<float> x = random_floats(nc * ldx, 12 + n);
      std::vector<float> want(cpu::detail::kGemmRows * nc), got(want.size(), -1.0f);
      cpu::detail::gemm_tile_ref(w.data(), x.data(), ldx, n, nc, want.data());
      cpu::detail::gemm_tile_avx2(w.data(), x.data(), ldx, n, nc, got.data());
      EXPECT_LT(nmse(want, got), 1e-12) << "n " << n << " nc " << nc;
    }
  }
}

// gemm_rows for row counts that are not multiples of 4 and token counts across the token block, and matmul itself
// (which takes this path from 4 tokens on AVX2 machines): f32 math, so quantized weights agree with matmul_ref to
// float rounding too (the row-dot kernels' 16-bit activation codes measure ~1e-10 here).
TEST(MatmulGemm, GemmRowsAndMatmulMatchReference) {
  if (!cpu_features().has_avx2_fma()) GTEST_SKIP() << "no AVX2 on this CPU";
  uint32_t seed = 40;
  for (DType t : kTypes) {
    const int64_t n = 160;
    for (int64_t rows : {1, 6, 17}) {
      std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, seed++);
      const WeightView wv{t, w.data(), rows, n};
      for (int64_t n_tok : {4, 5, 70}) {
        std::vector<float> x = random_floats(n_tok * n, seed++);
        std::vector<float> want(n_tok * rows), got(want.size(), -1.0f), mm(want.size(), -1.0f);
        ASSERT_TRUE(cpu::matmul_ref(wv, x.data(), n_tok, want.data()).ok());
        ASSERT_TRUE(cpu::detail::gemm_rows(t, w.data(), wv.row_bytes(), rows, x.data(), n_tok, n, got.data(), rows));
        ASSERT_TRUE(cpu::matmul(wv, x.data(), n_tok, mm.data()).ok());
        EXPECT_LT(nmse(want, got), 1e-11) << dtype_name(t) << " rows " << rows << " tokens " << n_tok;
        EXPECT_LT(nmse(want, mm), matmul_tolerance(t)) << dtype_name(t) << " rows " << rows << " tokens " << n_tok;
      }
    }
  }
}

// f16 / bf16 / f32 rows -> f32 panels (the prompt path of f16 / bf16 weights on AVX-512): the in-register transposes
// against the reference, bit-equal, for 1 to 16 rows (zero padding rows) and K with and without a tail past the
// 16-column steps; then matmul through those panels against matmul_ref.
using PanelFn = void (*)(DType, const uint8_t*, size_t, int, int64_t, float*);

// nr rows of t (n columns) -> panel through `fast`, bit-equal to rows_to_panel_ref, whose last real row equals
// dequantize_row and whose padding rows are zero.
void check_panel(PanelFn fast, DType t, int64_t n, int nr, uint32_t seed) {
  std::vector<uint8_t> w = testing::quantized_weights(t, nr, n, seed);
  const size_t rb = dtype_row_bytes(t, n);
  std::vector<float> want(n * 16, -1.0f), got(n * 16, -2.0f);
  cpu::detail::rows_to_panel_ref(t, w.data(), rb, nr, n, want.data());
  fast(t, w.data(), rb, nr, n, got.data());
  ASSERT_EQ(want, got) << dtype_name(t) << " n " << n << " rows " << nr;
  std::vector<float> row(n);
  ASSERT_TRUE(dequantize_row(t, w.data() + (nr - 1) * rb, row.data(), n).ok());
  for (int64_t k = 0; k < n; ++k) ASSERT_EQ(want[k * 16 + nr - 1], row[k]) << "column " << k;
  if (nr < 16) {
    ASSERT_EQ(want[(n - 1) * 16 + 15], 0.0f);
  }
}

// rows x n weights of t times 4 and 13 tokens through matmul (the prompt paths) against matmul_ref.
void check_prompt_matmul(DType t, int64_t rows, int64_t n, uint32_t* seed) {
  std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, (*seed)++);
  const WeightView wv{t, w.data(), rows, n};
  for (int64_t n_tok : {4, 13}) {
    std::vector<float> x = random_floats(n_tok * n, (*seed)++);
    std::vector<float> want(n_tok * rows), got(want.size(), -1.0f);
    ASSERT_TRUE(cpu::matmul_ref(wv, x.data(), n_tok, want.data()).ok());
    ASSERT_TRUE(cpu::matmul(wv, x.data(), n_tok, got.data()).ok());
    EXPECT_LT(nmse(want, got), matmul_tolerance(t)) << dtype_name(t) << " rows " << rows << " tokens " << n_tok;
  }
}

TEST(MatmulGemm, Avx512PanelsMatchReference) {
  if (!cpu_features().has_avx512()) GTEST_SKIP() << "no AVX-512 on this CPU (or CITADEL_CPU caps it)";
  uint32_t seed = 70;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t n : {2, 16, 40, 583}) {
      for (int nr : {1, 7, 16}) {
        ASSERT_NO_FATAL_FAILURE(check_panel(cpu::detail::rows_to_panel_avx512, t, n, nr, seed++));
      }
    }
    for (int64_t rows : {5, 37}) check_prompt_matmul(t, rows, 40, &seed);
  }
}

// Rows of every gemm_supported dtype -> f32 panels on AVX2 (the prompt path without AVX-512 or an interleaved copy):
// bit-equal to the reference for 1 to 16 rows and K with and without a tail past the 8-column transposes; then
// matmul through them (4+ tokens) against matmul_ref.
TEST(MatmulGemm, Avx2PanelsMatchReference) {
  if (!cpu_features().has_avx2_fma()) GTEST_SKIP() << "no AVX2 on this CPU (or CITADEL_CPU caps it)";
  uint32_t seed = 170;
  int checked = 0;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
                  DType::kQ8_0}) {
    ASSERT_TRUE(cpu::detail::gemm_supported(t));
    const bool blocks = dtype_info(t)->block > 1;
    for (int64_t n : blocks ? std::vector<int64_t>{32, 96, 608} : std::vector<int64_t>{3, 8, 40, 583}) {
      for (int nr : {1, 7, 16}) {
        ASSERT_NO_FATAL_FAILURE(check_panel(cpu::detail::rows_to_panel_avx2, t, n, nr, seed++));
        ++checked;
      }
    }
    check_prompt_matmul(t, 37, 96, &seed);
  }
  EXPECT_EQ(checked, 3 * 4 * 3 + 5 * 3 * 3);
}

// The fast mode's bf16 panels: f32 panel -> bf16 pairs (AVX-512 against the reference, bit-equal, odd K padded), and
// the vdpbf16ps GEMM over a panel against bf16_panel_gemm_ref (same rounded operands: only summation order differs),
// 1 to 29 tokens (balanced tiles), 1 to 16 rows, odd K.
TEST(MatmulGemm, Avx512Bf16PanelGemmMatchesReference) {
  if (!cpu_features().has_avx512_bf16()) GTEST_SKIP() << "no AVX512_BF16 on this CPU (or CITADEL_CPU caps it)";
  uint32_t seed = 90;
  for (int64_t n : {1, 2, 33, 583}) {
    for (int nr : {1, 16}) {
      std::vector<uint8_t> w = testing::quantized_weights(DType::kF16, nr, n, seed++);
      std::vector<float> panel(n * 16);
      cpu::detail::rows_to_panel_ref(DType::kF16, w.data(), dtype_row_bytes(DType::kF16, n), nr, n, panel.data());
      const size_t pairs = static_cast<size_t>((n + 1) / 2 * 32);
      std::vector<uint16_t> want_pw(pairs, 1), pw(pairs, 2);
      cpu::detail::f32_panel_to_bf16_ref(panel.data(), n, want_pw.data());
      cpu::detail::f32_panel_to_bf16_avx512(panel.data(), n, pw.data());
      ASSERT_EQ(want_pw, pw) << "n " << n;
      for (int64_t n_tok : {1, 5, 13, 29}) {
        std::vector<float> x = random_floats(n_tok * n, seed++);
        std::vector<uint16_t> xp(static_cast<size_t>(cpu::detail::packed_tokens_bf16_size(n_tok, n)));
        cpu::detail::pack_tokens_bf16(x.data(), n_tok, n, xp.data());
        const int64_t ldy = 19;
        std::vector<float> want(n_tok * ldy, -3.0f), got(n_tok * ldy, -3.0f);
        cpu::detail::bf16_panel_gemm_ref(pw.data(), n, nr, x.data(), n_tok, want.data(), ldy);
        cpu::detail::bf16_panel_gemm_avx512(pw.data(), n, nr, xp.data(), n_tok, got.data(), ldy);
        EXPECT_LT(nmse(want, got), 1e-11) << "n " << n << " rows " << nr << " tokens " << n_tok;
        for (int64_t tok = 0; tok < n_tok; ++tok)
          for (int64_t c = nr; c < ldy; ++c) ASSERT_EQ(got[tok * ldy + c], -3.0f) << "column " << c << " written";
      }
    }
  }
}

}  // namespace
}  // namespace citadel
