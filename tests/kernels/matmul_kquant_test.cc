// The q4_K / q5_K / q6_K prompt GEMM (gemm_kquant_avx512) against its twin, the scalar row-dot reference
// (generic_dot_kernel) over the same 16-bit activation codes: the integer sums per sub-block are the same, only the
// f32 additions differ in order. Weights from the quantizer and raw random blocks (every code, scale and min value,
// q6_K's negative scales), an all-maximum block against +-32767 activation codes (the int32 sums' largest values),
// 1 to 33 tokens (short and balanced tiles), 1 to 19 super-blocks, groups with nr < 16 (masked stores). The AVX2
// row dots (decode) against the same reference.
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

// n_tok rows of kQ16 activations (normal, one outlier per token so its block reaches +-32767).
struct Acts {
  std::vector<int16_t> q;
  std::vector<float> d, sums;
  cpu::detail::ActRow row(int64_t tok, int64_t n) const {
    cpu::detail::ActRow a;
    a.q16 = q.data() + tok * n;
    a.q16_d = d.data() + tok * (n / kQK);
    a.q16_sums = sums.data() + tok * (n / kQK);
    return a;
  }
};
Acts q16_acts(const std::vector<float>& x, int64_t n_tok, int64_t n) {
  Acts a;
  a.q.resize(n_tok * n);
  a.d.resize(n_tok * n / kQK);
  a.sums.resize(n_tok * n / kQK);
  for (int64_t t = 0; t < n_tok; ++t)
    cpu::detail::quantize_row_q16(x.data() + t * n, a.q.data() + t * n, a.d.data() + t * (n / kQK),
                                  a.sums.data() + t * (n / kQK), n);
  return a;
}
Acts q16_acts(int64_t n_tok, int64_t n, uint32_t seed) {
  std::vector<float> x = random_floats(n_tok * n, seed, 1.5f);
  for (int64_t t = 0; t < n_tok; ++t) x[t * n + (t * 37 + 5) % n] = -20.0f;
  return q16_acts(x, n_tok, n);
}

// gemm_kquant_avx512 over groups of 16 rows vs the row-dot reference per row and token; returns the NMSE and checks
// that columns past the rows are untouched.
double gemm_vs_row_dots(DType t, const std::vector<uint8_t>& w, int64_t rows, int64_t n, const Acts& a,
                        int64_t n_tok) {
  const size_t rb = dtype_row_bytes(t, n);
  cpu::detail::Q16Tiles tiles;
  cpu::detail::pack_q16_tiles(a.q.data(), a.d.data(), a.sums.data(), n_tok, n, &tiles);
  const int64_t ldy = rows + 3;
  std::vector<float> want(n_tok * ldy, -7.0f), got(n_tok * ldy, -7.0f);
  const auto ref = cpu::detail::generic_dot_kernel(t);
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int nr = static_cast<int>(std::min<int64_t>(16, rows - r0));
    cpu::detail::gemm_kquant_avx512(t, w.data() + r0 * rb, rb, nr, tiles, got.data() + r0, ldy);
  }
  for (int64_t tok = 0; tok < n_tok; ++tok) {
    const cpu::detail::ActRow row = a.row(tok, n);
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
          const Acts a = q16_acts(n_tok, n, seed++);
          EXPECT_LT(gemm_vs_row_dots(t, w, rows, n, a, n_tok), 1e-11)
              << dtype_name(t) << (raw ? " random blocks" : " quantized") << " n " << n << " tokens " << n_tok;
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, 3 * 4 * 2 * 8);
}

// Every code, scale and min at its maximum (q6_K: scales -128 and 127, codes -32) against activation codes at
// +-32767: the largest int32 sums; the GEMM and the AVX2 row dots against the reference.
TEST(MatmulKquant, ExtremeBlocksMatchRowDots) {
  for (DType t : kTypes) {
    const int64_t n = 2 * kQK_K, rows = 16;
    std::vector<uint8_t> w = random_blocks(t, rows, n, 5);
    const size_t bb = dtype_info(t)->block_bytes;
    for (size_t i = 0; i < w.size() / bb; ++i) {
      uint8_t* blk = w.data() + i * bb;
      if (t == DType::kQ6_K) {
        std::fill(blk, blk + 192, 0);  // codes 0 - 32
        std::fill(blk + 192, blk + 208, i % 2 ? 0x80 : 0x7F);
      } else {
        std::fill(blk + 4, blk + bb, 0xFF);  // scales, mins 63; codes 15 / 31
      }
    }
    for (float sign : {1.0f, -1.0f}) {
      const Acts a = q16_acts(std::vector<float>(3 * n, sign), 3, n);
      if (vnni()) {
        EXPECT_LT(gemm_vs_row_dots(t, w, rows, n, a, 3), 1e-11) << dtype_name(t) << " sign " << sign;
      }
      if (!cpu_features().has_avx2_fma()) continue;
      const float want = cpu::detail::generic_dot_kernel(t).dot(w.data(), a.row(0, n), n);
      const float got = cpu::detail::avx2_dot_kernel(t).dot(w.data(), a.row(0, n), n);
      EXPECT_NEAR(got, want, 1e-5f * std::fabs(want)) << dtype_name(t) << " AVX2 row dot, sign " << sign;
      if (!cpu_features().has_avx512() || t != DType::kQ6_K) continue;
      const float got512 = cpu::detail::avx512_kquant_dot_kernel(t).dot(w.data(), a.row(0, n), n);
      EXPECT_NEAR(got512, want, 1e-5f * std::fabs(want)) << dtype_name(t) << " AVX-512 row dot, sign " << sign;
    }
  }
}

// Through matmul (which takes the GEMM from 4 tokens where the CPU has VNNI): the same as the tokens one at a time
// (the row-dot kernels) up to f32 order, and close to matmul_ref (16-bit activation codes: ~1e-9).
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
      EXPECT_LT(nmse(ref, fast), 1e-8) << dtype_name(t) << " tokens " << n_tok;
    }
  }
}

// The AVX2 row dots and q6_K's AVX-512 one (decode) against the scalar reference: quantized and raw random blocks,
// 1 to 19 super-blocks.
TEST(MatmulKquant, SimdRowDotsMatchReference) {
  if (!cpu_features().has_avx2_fma()) GTEST_SKIP() << "no AVX2 on this CPU (or CITADEL_CPU caps it)";
  uint32_t seed = 300;
  int checked = 0;
  for (DType t : kTypes) {
    const auto ref = cpu::detail::generic_dot_kernel(t);
    std::vector<cpu::detail::DotKernel> kernels = {cpu::detail::avx2_dot_kernel(t)};
    if (cpu_features().has_avx512() && t == DType::kQ6_K) kernels.push_back(cpu::detail::avx512_kquant_dot_kernel(t));
    for (const auto& fast : kernels) {
      ASSERT_TRUE(fast.dot) << dtype_name(t);
      ASSERT_EQ(fast.act, cpu::detail::ActFormat::kQ16);
      for (int64_t nsb : {1, 2, 7, 19}) {
        const int64_t n = nsb * kQK_K, rows = 9;
        const size_t rb = dtype_row_bytes(t, n);
        for (bool raw : {false, true}) {
          const std::vector<uint8_t> w =
              raw ? random_blocks(t, rows, n, seed++) : testing::quantized_weights(t, rows, n, seed++);
          const Acts a = q16_acts(1, n, seed++);
          std::vector<float> want(rows), got(rows);
          for (int64_t r = 0; r < rows; ++r) {
            want[r] = ref.dot(w.data() + r * rb, a.row(0, n), n);
            got[r] = fast.dot(w.data() + r * rb, a.row(0, n), n);
          }
          EXPECT_LT(nmse(want, got), 1e-11) << dtype_name(t) << (raw ? " random blocks" : " quantized") << " n " << n;
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, (3 + (cpu_features().has_avx512() ? 1 : 0)) * 4 * 2);
  EXPECT_EQ(cpu::detail::avx512_kquant_dot_kernel(DType::kQ4_K).dot, nullptr);
}

// scales_mins_k4 (all 8 pairs from three words) against get_scale_min_k4, over random scale bytes.
TEST(MatmulKquant, ScalesMinsAtOnceMatchOneByOne) {
  std::mt19937 rng(17);
  for (int rep = 0; rep < 200; ++rep) {
    uint8_t q[12];
    for (uint8_t& b : q) b = static_cast<uint8_t>(rng());
    uint64_t sc, m;
    scales_mins_k4(q, &sc, &m);
    for (int j = 0; j < 8; ++j) {
      uint8_t sj, mj;
      get_scale_min_k4(j, q, &sj, &mj);
      ASSERT_EQ((sc >> (8 * j)) & 0xFF, sj) << "scale " << j;
      ASSERT_EQ((m >> (8 * j)) & 0xFF, mj) << "min " << j;
    }
  }
}

TEST(MatmulKquant, SupportedTypes) {
  for (DType t : kTypes) EXPECT_TRUE(cpu::detail::kquant_gemm_supported(t)) << dtype_name(t);
  for (DType t : {DType::kQ4_0, DType::kQ8_0, DType::kQ3_K, DType::kF16})
    EXPECT_FALSE(cpu::detail::kquant_gemm_supported(t)) << dtype_name(t);
}

// ---- The interleaved layout of q4_K / q6_K (decode: 16 rows per zmm; matmul_interleaved_kquant.cc).
constexpr DType kIlTypes[] = {DType::kQ4_K, DType::kQ6_K};

std::vector<uint8_t> interleaved(DType t, const std::vector<uint8_t>& w, int64_t rows, int64_t n) {
  std::vector<uint8_t> out(cpu::interleaved_bytes(t, rows, n), 0xAB);
  EXPECT_TRUE(cpu::interleave_weights({t, w.data(), rows, n}, out.data()).ok());
  return out;
}

// The scalar reference over the layout against the row-dot reference over the rows it came from (so the packing is
// checked too: same integer sums, same f32 formula), and the VNNI and AVX2 kernels against it; padding rows give 0.
// Quantized and raw random blocks (every code, scale and min), the all-maximum blocks, 1 to 19 super-blocks.
TEST(MatmulKquant, InterleavedDotsMatchRowDots) {
  int checked = 0;
  uint32_t seed = 500;
  for (DType t : kIlTypes) {
    const auto ref = cpu::detail::generic_dot_kernel(t);
    const auto fast = cpu::detail::interleaved_dot_kernel(t);
    const auto fast2 = cpu::detail::interleaved_dot_kernel_avx2(t);
    ASSERT_NE(fast2, nullptr) << dtype_name(t);
    if (vnni()) {
      ASSERT_NE(fast, nullptr) << dtype_name(t);
    }
    for (int64_t nsb : {1, 2, 7, 19}) {
      const int64_t n = nsb * kQK_K, rows = 37;  // groups of 16, 16 and 5 + 11 padding rows
      const size_t rb = dtype_row_bytes(t, n), gb = cpu::interleaved_group_bytes(t, n);
      ASSERT_EQ(gb, static_cast<size_t>(nsb * (t == DType::kQ4_K ? 2368 : 3392)));
      ASSERT_EQ(cpu::interleaved_bytes(t, rows, n), 3 * gb);
      for (int kind = 0; kind < 3; ++kind) {
        std::vector<uint8_t> w =
            kind == 0 ? testing::quantized_weights(t, rows, n, seed++) : random_blocks(t, rows, n, seed++);
        if (kind == 2) {  // the largest codes and scales (q6_K: codes -32, scales -128 / 127)
          const size_t bb = dtype_info(t)->block_bytes;
          for (size_t i = 0; i < w.size() / bb; ++i) {
            uint8_t* blk = w.data() + i * bb;
            if (t == DType::kQ6_K) {
              std::fill(blk, blk + 192, 0);
              std::fill(blk + 192, blk + 208, i % 2 ? 0x80 : 0x7F);
            } else {
              std::fill(blk + 4, blk + bb, 0xFF);
            }
          }
        }
        const std::vector<uint8_t> il = interleaved(t, w, rows, n);
        const Acts a = kind == 2 ? q16_acts(std::vector<float>(n, -1.0f), 1, n) : q16_acts(1, n, seed++);
        std::vector<float> want(48, 0.0f), got(48, -1.0f), simd(48, -1.0f), avx2(48, -1.0f);
        for (int64_t r = 0; r < rows; ++r) want[r] = ref.dot(w.data() + r * rb, a.row(0, n), n);
        for (int g = 0; g < 3; ++g) {
          cpu::detail::dot_interleaved_ref(t, il.data() + g * gb, a.row(0, n), n, got.data() + 16 * g);
          if (vnni()) fast(il.data() + g * gb, a.row(0, n), n, simd.data() + 16 * g);
          if (cpu_features().has_avx2_fma()) fast2(il.data() + g * gb, a.row(0, n), n, avx2.data() + 16 * g);
        }
        if (cpu_features().has_avx2_fma()) {
          EXPECT_LT(nmse(want, avx2), 1e-11) << dtype_name(t) << " AVX2, kind " << kind << " n " << n;
          for (int64_t r = rows; r < 48; ++r) EXPECT_EQ(avx2[r], 0.0f) << "padding row " << r;
        }
        EXPECT_LT(nmse(want, got), 1e-12) << dtype_name(t) << " kind " << kind << " n " << n;
        for (int64_t r = rows; r < 48; ++r) EXPECT_EQ(got[r], 0.0f) << "padding row " << r;
        if (vnni()) {
          EXPECT_LT(nmse(want, simd), 1e-11) << dtype_name(t) << " VNNI, kind " << kind << " n " << n;
          for (int64_t r = rows; r < 48; ++r) EXPECT_EQ(simd[r], 0.0f) << "padding row " << r;
        }
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 2 * 4 * 3);
}

// The prompt GEMM over an interleaved group unpacks to the same buffer as over the rows: bit-equal outputs, nr 16
// and 5 (the last group), 1 to 29 tokens.
TEST(MatmulKquant, InterleavedGemmEqualsRowGemm) {
  if (!vnni()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or CITADEL_CPU caps it)";
  uint32_t seed = 700;
  for (DType t : kIlTypes) {
    const int64_t n = 3 * kQK_K, rows = 21;
    const size_t rb = dtype_row_bytes(t, n), gb = cpu::interleaved_group_bytes(t, n);
    const std::vector<uint8_t> w = random_blocks(t, rows, n, seed++);
    const std::vector<uint8_t> il = interleaved(t, w, rows, n);
    for (int64_t n_tok : {1, 5, 13, 29}) {
      const Acts a = q16_acts(n_tok, n, seed++);
      cpu::detail::Q16Tiles tiles;
      cpu::detail::pack_q16_tiles(a.q.data(), a.d.data(), a.sums.data(), n_tok, n, &tiles);
      const int64_t ldy = 35;
      std::vector<float> rows_y(n_tok * ldy, -7.0f), il_y(n_tok * ldy, -7.0f);
      for (int g = 0; g < 2; ++g) {
        const int nr = static_cast<int>(std::min<int64_t>(16, rows - 16 * g));
        cpu::detail::gemm_kquant_avx512(t, w.data() + 16 * g * rb, rb, nr, tiles, rows_y.data() + 16 * g, ldy);
        cpu::detail::gemm_kquant_il_avx512(t, il.data() + g * gb, nr, tiles, il_y.data() + 16 * g, ldy);
      }
      ASSERT_EQ(rows_y, il_y) << dtype_name(t) << " tokens " << n_tok;
    }
  }
}

// The AMX-INT8 twins against the vpdpwssd GEMMs, over the rows (q4_K, q5_K, q6_K) and over interleaved groups (q4_K,
// q6_K): bit-equal (the same integer sums per block or sub-block, the same f32 steps); raw random blocks (all code
// and scale values), 1 to 40 tokens (short last tiles), nr 16 and 5. Runs only where the CPU has AMX.
TEST(MatmulKquant, AmxGemmEqualsVnniGemm) {
  if (!cpu_features().has_amx_int8()) GTEST_SKIP() << "no AMX-INT8 on this CPU (or CITADEL_CPU caps it)";
  uint32_t seed = 1700;
  int checked = 0;
  for (DType t : {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    const int64_t n = 3 * kQK_K, rows = 21;
    const size_t rb = dtype_row_bytes(t, n);
    const std::vector<uint8_t> w = random_blocks(t, rows, n, seed++);
    const bool il_too = t != DType::kQ5_K;
    const std::vector<uint8_t> il = il_too ? interleaved(t, w, rows, n) : std::vector<uint8_t>{};
    const size_t gb = il_too ? cpu::interleaved_group_bytes(t, n) : 0;
    for (int64_t n_tok : {1, 5, 16, 17, 40}) {
      const Acts a = q16_acts(n_tok, n, seed++);
      cpu::detail::Q16Tiles tiles;
      cpu::detail::pack_q16_tiles(a.q.data(), a.d.data(), a.sums.data(), n_tok, n, &tiles);
      cpu::detail::AmxTiles amx;
      cpu::detail::pack_amx_tiles(a.q.data(), a.d.data(), a.sums.data(), n_tok, n, &amx);
      const int64_t ldy = 35;
      std::vector<float> want(n_tok * ldy, -7.0f), got(want), want_il(want), got_il(want);
      for (int g = 0; g < 2; ++g) {
        const int nr = static_cast<int>(std::min<int64_t>(16, rows - 16 * g));
        cpu::detail::gemm_kquant_avx512(t, w.data() + 16 * g * rb, rb, nr, tiles, want.data() + 16 * g, ldy);
        cpu::detail::gemm_kquant_amx(t, w.data() + 16 * g * rb, rb, nr, amx, got.data() + 16 * g, ldy);
        if (!il_too) continue;
        cpu::detail::gemm_kquant_il_avx512(t, il.data() + g * gb, nr, tiles, want_il.data() + 16 * g, ldy);
        cpu::detail::gemm_kquant_il_amx(t, il.data() + g * gb, nr, amx, got_il.data() + 16 * g, ldy);
      }
      ASSERT_EQ(want, got) << dtype_name(t) << " rows, tokens " << n_tok;
      ASSERT_EQ(want_il, got_il) << dtype_name(t) << " groups, tokens " << n_tok;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 15);
}

// matmul with an interleaved view (decode kernel for 1..3 tokens, the GEMM over the groups from 4) against matmul
// over the rows (the row dots, the row GEMM) and matmul_ref.
TEST(MatmulKquant, MatmulWithInterleavedViewMatchesRows) {
  uint32_t seed = 900;
  for (DType t : kIlTypes) {
    const int64_t rows = 53, n = 4 * kQK_K;
    const std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, seed++);
    const std::vector<uint8_t> il = interleaved(t, w, rows, n);
    for (int64_t n_tok : {1, 3, 4, 30}) {
      const auto m = testing::matmul_three_ways({t, w.data(), rows, n}, il.data(), random_floats(n_tok * n, seed++),
                                                n_tok);
      // Same integer sums for 1..3 tokens; from 4 the VNNI GEMM keeps them, the AVX2 panels are exact f32.
      const double bound = n_tok < 4 || vnni() ? 1e-11 : 1e-8;
      EXPECT_LT(nmse(m.rows, m.interleaved), bound) << dtype_name(t) << " tokens " << n_tok;
      EXPECT_LT(nmse(m.ref, m.interleaved), 1e-8) << dtype_name(t) << " tokens " << n_tok;
    }
  }
}

// AVX2 prompts over the groups: the f32 panel of a q4_K / q6_K group against dequantize_row on the rows it came from
// (q6_K bit-equal; q4_K's d * q - m as one fused operation: within an ulp of the value), padding rows zero.
TEST(MatmulKquant, InterleavedGroupPanelsMatchDequantizeRow) {
  if (!cpu_features().has_avx2_fma()) GTEST_SKIP() << "no AVX2 on this CPU (or CITADEL_CPU caps it)";
  uint32_t seed = 1100;
  for (DType t : kIlTypes) {
    const int64_t rows = 21, n = 3 * kQK_K;
    const size_t rb = dtype_row_bytes(t, n), gb = cpu::interleaved_group_bytes(t, n);
    const std::vector<uint8_t> w = random_blocks(t, rows, n, seed++);
    const std::vector<uint8_t> il = interleaved(t, w, rows, n);
    std::vector<float> want(n), panel(16 * n, -1.0f);
    for (int g = 0; g < 2; ++g) {
      cpu::detail::dequantize_group_avx2(t, il.data() + g * gb, n, panel.data());
      for (int r = 0; r < 16; ++r) {
        const int64_t row = 16 * g + r;
        if (row < rows) {
          ASSERT_TRUE(dequantize_row(t, w.data() + row * rb, want.data(), n).ok());
        }
        for (int64_t k = 0; k < n; ++k) {
          const float v = row < rows ? want[k] : 0.0f, got = panel[k * 16 + r];
          if (t == DType::kQ6_K || row >= rows) {
            ASSERT_EQ(got, v) << dtype_name(t) << " row " << row << " column " << k;
          } else {
            ASSERT_NEAR(got, v, 1e-6f * std::fabs(v) + 1e-9f) << dtype_name(t) << " row " << row << " column " << k;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace citadel
