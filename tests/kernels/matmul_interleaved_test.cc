// The 16-row interleaved decode layout (kernels/ops.h interleave_weights) and its kernels: the scalar reference over
// the layout against the row-dot reference on the original rows (so the packing is checked too), the AVX-512 VNNI
// kernel against the reference, and matmul with an interleaved view against matmul without one and matmul_ref.
// Odd row counts (padding rows in the last group), 1 to 151 blocks, an activation outlier.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

struct Q16Row {
  std::vector<int16_t> q;
  std::vector<float> d, sums;
  cpu::detail::ActRow row;
};

Q16Row q16_row(int64_t n, uint32_t seed) {
  std::vector<float> x = random_floats(n, seed, 2.0f);
  x[n / 3] = -35.0f;
  Q16Row a;
  a.q.resize(n);
  a.d.resize(n / kQK);
  a.sums.resize(n / kQK);
  cpu::detail::quantize_row_q16(x.data(), a.q.data(), a.d.data(), a.sums.data(), n);
  a.row.q16 = a.q.data();
  a.row.q16_d = a.d.data();
  a.row.q16_sums = a.sums.data();
  return a;
}

// n_tok kQ16 activation rows (seeds seed0 + tok * step + n) and their codes and scales packed for the GEMM.
struct Q16Batch {
  std::vector<Q16Row> acts;
  cpu::detail::Q16Tiles tiles;
};
Q16Batch q16_batch(int64_t n_tok, int64_t n, uint32_t seed0, uint32_t step) {
  Q16Batch b;
  std::vector<int16_t> q(n_tok * n);
  std::vector<float> d(n_tok * n / kQK), sums(n_tok * n / kQK);
  for (int64_t tok = 0; tok < n_tok; ++tok) {
    b.acts.push_back(q16_row(n, seed0 + static_cast<uint32_t>(tok * step + n)));
    std::copy(b.acts.back().q.begin(), b.acts.back().q.end(), q.begin() + tok * n);
    std::copy(b.acts.back().d.begin(), b.acts.back().d.end(), d.begin() + tok * (n / kQK));
    std::copy(b.acts.back().sums.begin(), b.acts.back().sums.end(), sums.begin() + tok * (n / kQK));
  }
  cpu::detail::pack_q16_tiles(q.data(), d.data(), sums.data(), n_tok, n, &b.tiles);
  return b;
}

std::vector<uint8_t> interleaved(const WeightView& w) {
  std::vector<uint8_t> out(cpu::interleaved_bytes(w.dtype, w.rows, w.cols), 0xAB);
  EXPECT_TRUE(cpu::interleave_weights(w, out.data()).ok());
  return out;
}

TEST(MatmulInterleaved, ReferenceOverLayoutMatchesRowDots) {
  int checked = 0;
  for (DType t : {DType::kQ4_0, DType::kQ8_0}) {
    for (int64_t n : {32, 96, 608, 32 * 151}) {
      const int64_t rows = 37;  // groups of 16, 16, 5 + 11 padding rows
      std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 40 + static_cast<uint32_t>(n));
      const WeightView wv{t, w.data(), rows, n};
      const size_t gb = cpu::interleaved_group_bytes(t, n);
      ASSERT_EQ(cpu::interleaved_bytes(t, rows, n), 3 * gb);
      ASSERT_GE(gb, 16 * wv.row_bytes());
      std::vector<uint8_t> il = interleaved(wv);
      Q16Row a = q16_row(n, 50 + static_cast<uint32_t>(n));
      const auto g = cpu::detail::generic_dot_kernel(t);
      std::vector<float> want(48, 0.0f), got(48, -1.0f);
      for (int64_t r = 0; r < rows; ++r) want[r] = g.dot(w.data() + r * wv.row_bytes(), a.row, n);
      for (int64_t gi = 0; gi < 3; ++gi)
        cpu::detail::dot_interleaved_ref(t, il.data() + gi * gb, a.row, n, got.data() + 16 * gi);
      EXPECT_LT(nmse(want, got), 1e-11) << dtype_name(t) << " n " << n;
      for (int64_t r = rows; r < 48; ++r) EXPECT_EQ(got[r], 0.0f) << "padding row " << r;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 8);
}

// The AVX2 kernel over the same layout (q4_0; q8_0 has none: its row dots stream at the memory's speed) against the
// reference, and the AVX2 group -> panel dequantizer (q4_0, q8_0) bit-equal to the reference's.
TEST(MatmulInterleaved, Avx2KernelAndPanelsMatchReference) {
  if (!cpu_features().has_avx2_fma()) GTEST_SKIP() << "no AVX2 on this CPU (or CITADEL_CPU caps it)";
  EXPECT_EQ(cpu::detail::interleaved_dot_kernel_avx2(DType::kQ8_0), nullptr);
  const auto k = cpu::detail::interleaved_dot_kernel_avx2(DType::kQ4_0);
  ASSERT_TRUE(k);
  for (DType t : {DType::kQ4_0, DType::kQ8_0}) {
    for (int64_t n : {32, 64, 608, 32 * 151}) {
      const int64_t rows = 21;
      std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 160 + static_cast<uint32_t>(n));
      std::vector<uint8_t> il = interleaved({t, w.data(), rows, n});
      Q16Row a = q16_row(n, 170 + static_cast<uint32_t>(n));
      std::vector<float> want(32), got(32, -1.0f), pref(16 * n), pfast(16 * n, -1.0f);
      for (int gi = 0; gi < 2; ++gi) {
        const uint8_t* group = il.data() + gi * cpu::interleaved_group_bytes(t, n);
        if (t == DType::kQ4_0) {
          cpu::detail::dot_interleaved_ref(t, group, a.row, n, want.data() + 16 * gi);
          k(group, a.row, n, got.data() + 16 * gi);
        }
        cpu::detail::dequantize_group_ref(t, group, n, pref.data());
        cpu::detail::dequantize_group_avx2(t, group, n, pfast.data());
        ASSERT_EQ(pref, pfast) << dtype_name(t) << " n " << n << " group " << gi;
      }
      if (t != DType::kQ4_0) continue;
      EXPECT_LT(nmse(want, got), 1e-11) << " n " << n;
      for (int r = rows; r < 32; ++r) EXPECT_EQ(got[r], 0.0f) << "padding row " << r;
    }
  }
}

TEST(MatmulInterleaved, Avx512VnniKernelMatchesReference) {
  if (!cpu_features().has_avx512() || !cpu_features().avx512vnni)
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or CITADEL_CPU caps it)";
  for (DType t : {DType::kQ4_0, DType::kQ8_0}) {
    const auto k = cpu::detail::interleaved_dot_kernel(t);
    ASSERT_TRUE(k) << dtype_name(t);
    for (int64_t n : {32, 64, 608, 32 * 151}) {
      const int64_t rows = 21;
      std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 60 + static_cast<uint32_t>(n));
      const WeightView wv{t, w.data(), rows, n};
      std::vector<uint8_t> il = interleaved(wv);
      Q16Row a = q16_row(n, 70 + static_cast<uint32_t>(n));
      std::vector<float> want(32), got(32, -1.0f);
      for (int gi = 0; gi < 2; ++gi) {
        const uint8_t* group = il.data() + gi * cpu::interleaved_group_bytes(t, n);
        cpu::detail::dot_interleaved_ref(t, group, a.row, n, want.data() + 16 * gi);
        k(group, a.row, n, got.data() + 16 * gi);
      }
      EXPECT_LT(nmse(want, got), 1e-11) << dtype_name(t) << " n " << n;
    }
  }
  EXPECT_EQ(cpu::detail::interleaved_dot_kernel(DType::kQ4_1), nullptr);
}

// matmul reads the interleaved copy where interleave_wanted() (decode kernel for 1..3 tokens, the vpdpwssd GEMM from
// 4), the row data otherwise: both agree with matmul_ref (16-bit activation codes: ~1e-9; the row path's prompts are
// f32) and, for 1..3 tokens, with each other (same integer sums).
TEST(MatmulInterleaved, MatmulWithInterleavedViewMatchesReference) {
  for (DType t : {DType::kQ4_0, DType::kQ8_0}) {
    const int64_t rows = 53, n = 32 * 27;
    std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 80);
    const WeightView wv{t, w.data(), rows, n};
    std::vector<uint8_t> il = interleaved(wv);
    for (int64_t n_tok : {1, 2, 3, 5, 70}) {
      const auto m =
          testing::matmul_three_ways(wv, il.data(), random_floats(n_tok * n, 90 + static_cast<uint32_t>(n_tok)), n_tok);
      EXPECT_LT(nmse(m.rows, m.interleaved), n_tok < 4 ? 1e-11 : 1e-8) << dtype_name(t) << " tokens " << n_tok;
      EXPECT_LT(nmse(m.ref, m.interleaved), 1e-8) << dtype_name(t) << " tokens " << n_tok;
    }
  }
}

// The group -> f32 panel dequantizers (prompt path) against dequantize_row on the original rows: bit-equal.
TEST(MatmulInterleaved, GroupPanelsMatchDequantizeRow) {
  const bool simd = cpu_features().has_avx512() && cpu_features().avx512vnni;
  for (DType t : {DType::kQ4_0, DType::kQ8_0}) {
    const int64_t rows = 19, n = 32 * 5;
    std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 33);
    const WeightView wv{t, w.data(), rows, n};
    std::vector<uint8_t> il = interleaved(wv);
    std::vector<float> want(rows * n), ref(32 * n), fast(32 * n, -1.0f);
    for (int64_t r = 0; r < rows; ++r)
      ASSERT_TRUE(dequantize_row(t, w.data() + r * wv.row_bytes(), want.data() + r * n, n).ok());
    for (int g = 0; g < 2; ++g) {
      const uint8_t* group = il.data() + g * cpu::interleaved_group_bytes(t, n);
      cpu::detail::dequantize_group_ref(t, group, n, ref.data() + g * 16 * n);
      if (simd) cpu::detail::dequantize_group_avx512(t, group, n, fast.data() + g * 16 * n);
    }
    for (int64_t r = 0; r < 32; ++r) {
      for (int64_t k = 0; k < n; ++k) {
        const float v = r < rows ? want[r * n + k] : 0.0f;
        const float got = ref[(r / 16) * 16 * n + k * 16 + r % 16];
        ASSERT_EQ(got, v) << dtype_name(t) << " row " << r << " col " << k;
        if (simd) {
          ASSERT_EQ(fast[(r / 16) * 16 * n + k * 16 + r % 16], v) << dtype_name(t) << " row " << r;
        }
      }
    }
  }
}

// The prompt GEMM (16-bit codes packed per token tile, vpdpwssd) against the reference over the layout, token by
// token: 1 to 29 tokens (short and balanced tiles), 1 to 151 blocks (odd counts end in a one-column unit), padding
// rows in the last group and nr < 16 (the masked stores leave the columns past nr untouched).
TEST(MatmulInterleaved, Avx512VnniGemmMatchesReference) {
  if (!cpu_features().has_avx512() || !cpu_features().avx512vnni)
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or CITADEL_CPU caps it)";
  int checked = 0;
  for (DType t : {DType::kQ4_0, DType::kQ8_0}) {
    for (int64_t n : {32, 96, 608, 32 * 151}) {
      const int64_t rows = 27;  // groups: 16 rows, then 11 + 5 padding rows
      std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 110 + static_cast<uint32_t>(n));
      std::vector<uint8_t> il = interleaved({t, w.data(), rows, n});
      for (int64_t n_tok : {1, 5, 12, 13, 29}) {
        const auto [acts, tiles] = q16_batch(n_tok, n, 120, 7);
        const int64_t ldy = 32 + 3;
        std::vector<float> want(n_tok * ldy, -7.0f), got(n_tok * ldy, -7.0f);
        for (int gi = 0; gi < 2; ++gi) {
          const uint8_t* group = il.data() + gi * cpu::interleaved_group_bytes(t, n);
          const int nr = static_cast<int>(std::min<int64_t>(16, rows - 16 * gi));
          cpu::detail::gemm_interleaved_avx512(t, group, tiles, nr, got.data() + 16 * gi, ldy);
          for (int64_t tok = 0; tok < n_tok; ++tok) {
            float y16[16];
            cpu::detail::dot_interleaved_ref(t, group, acts[tok].row, n, y16);
            std::copy(y16, y16 + nr, want.begin() + tok * ldy + 16 * gi);
          }
        }
        EXPECT_LT(nmse(want, got), 1e-11) << dtype_name(t) << " n " << n << " tokens " << n_tok;
        for (int64_t tok = 0; tok < n_tok; ++tok) {
          for (int64_t c = rows; c < ldy; ++c) ASSERT_EQ(got[tok * ldy + c], -7.0f) << "column " << c << " written";
        }
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 40);
}

TEST(MatmulInterleaved, UnsupportedShapesAreErrors) {
  std::vector<uint8_t> buf(1024);
  EXPECT_EQ(cpu::interleaved_bytes(DType::kQ5_K, 16, 256), 0u);
  EXPECT_EQ(cpu::interleaved_bytes(DType::kQ4_K, 16, 32), 0u);
  EXPECT_EQ(cpu::interleaved_bytes(DType::kQ4_0, 16, 48), 0u);
  EXPECT_EQ(cpu::interleave_weights({DType::kQ4_1, buf.data(), 2, 32}, buf.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(cpu::interleave_wanted(DType::kQ5_K));
}

// q5_0 rows repacked per call into one q8_0 group: byte-equal to interleave_weights of the q8_0 matrix with the same
// scales and codes q - 16 (lanes past nr: row nr - 1 again), and through the q8_0 GEMM equal to the q5_0 row-dot
// reference token by token (same integer sums). 1 to 151 blocks (odd counts), nr 16 and 5, 1 to 29 tokens.
TEST(MatmulInterleaved, RepackedQ5_0GroupsMatchQ8_0LayoutAndRowDots) {
  if (!cpu_features().has_avx512() || !cpu_features().avx512vnni)
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or CITADEL_CPU caps it)";
  int checked = 0;
  for (int64_t n : {32, 96, 608, 32 * 151}) {
    const int64_t rows = 21;  // groups of 16 and 5 rows
    std::vector<uint8_t> w = testing::quantized_weights(DType::kQ5_0, rows, n, 130 + static_cast<uint32_t>(n));
    const size_t rb = dtype_row_bytes(DType::kQ5_0, n), rb8 = dtype_row_bytes(DType::kQ8_0, n);
    std::vector<uint8_t> w8(32 * rb8);  // the q8_0 twin, rows nr..15 of each group repeating row nr - 1
    std::vector<float> row(n);
    for (int64_t r = 0; r < 32; ++r) {
      const int64_t src = std::min(r, r < 16 ? int64_t{15} : rows - 1);
      const auto* b5 = reinterpret_cast<const BlockQ5_0*>(w.data() + src * rb);
      auto* b8 = reinterpret_cast<BlockQ8_0*>(w8.data() + r * rb8);
      ASSERT_TRUE(dequantize_row(DType::kQ5_0, b5, row.data(), n).ok());
      for (int64_t i = 0; i < n / kQK; ++i) {
        b8[i].d = b5[i].d;
        const float d = f16_to_f32(b5[i].d);
        for (int j = 0; j < kQK; ++j) b8[i].qs[j] = static_cast<int8_t>(std::lround(row[i * kQK + j] / d));
      }
    }
    const std::vector<uint8_t> want_il = interleaved({DType::kQ8_0, w8.data(), 32, n});
    const size_t gb = cpu::interleaved_group_bytes(DType::kQ8_0, n);
    std::vector<uint8_t> got_il(2 * gb, 0xAB);
    for (int gi = 0; gi < 2; ++gi) {
      const int nr = gi == 0 ? 16 : static_cast<int>(rows - 16);
      cpu::detail::repack_q5_0_group_avx512(w.data() + 16 * gi * rb, rb, nr, n, got_il.data() + gi * gb);
    }
    ASSERT_EQ(want_il, got_il) << "n " << n;
    for (int64_t n_tok : {1, 12, 29}) {
      const auto [acts, tiles] = q16_batch(n_tok, n, 140, 5);
      std::vector<float> want(n_tok * rows), got(n_tok * rows, -1.0f);
      const auto ref = cpu::detail::generic_dot_kernel(DType::kQ5_0);
      for (int gi = 0; gi < 2; ++gi) {
        const int nr = gi == 0 ? 16 : static_cast<int>(rows - 16);
        cpu::detail::gemm_interleaved_avx512(DType::kQ8_0, got_il.data() + gi * gb, tiles, nr, got.data() + 16 * gi,
                                             rows);
      }
      for (int64_t tok = 0; tok < n_tok; ++tok) {
        for (int64_t r = 0; r < rows; ++r) want[tok * rows + r] = ref.dot(w.data() + r * rb, acts[tok].row, n);
      }
      EXPECT_LT(nmse(want, got), 1e-11) << "n " << n << " tokens " << n_tok;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 12);
}

// The batch's codes and scales as AMX byte planes.
cpu::detail::AmxTiles amx_tiles(const std::vector<Q16Row>& acts, int64_t n) {
  std::vector<int16_t> q;
  std::vector<float> d, sums;
  for (const Q16Row& a : acts) {
    q.insert(q.end(), a.q.begin(), a.q.end());
    d.insert(d.end(), a.d.begin(), a.d.end());
    sums.insert(sums.end(), a.sums.begin(), a.sums.end());
  }
  cpu::detail::AmxTiles out;
  cpu::detail::pack_amx_tiles(q.data(), d.data(), sums.data(), static_cast<int64_t>(acts.size()), n, &out);
  return out;
}

// The AMX-INT8 prompt GEMM against the vpdpwssd GEMM on the same groups: bit-equal (the same integer sums, the same
// f32 steps), over q4_0 and q8_0 groups, a q5_0 group repacked to q8_0 (its codes span -16..15), 1 to 151 blocks,
// 1 to 40 tokens (short last tiles), nr 16 and 11 (the columns past nr untouched). Runs only where the CPU has AMX.
TEST(MatmulInterleaved, AmxGemmEqualsVnniGemm) {
  if (!cpu_features().has_amx_int8()) GTEST_SKIP() << "no AMX-INT8 on this CPU (or CITADEL_CPU caps it)";
  ASSERT_TRUE(cpu::detail::amx_config_in_effect()) << "the tile configuration did not read back as written";
  int checked = 0;
  for (DType t : {DType::kQ4_0, DType::kQ8_0, DType::kQ5_0}) {
    for (int64_t n : {32, 96, 608, 32 * 151}) {
      const int64_t rows = 27;  // groups: 16 rows, then 11 + 5 padding rows
      std::vector<uint8_t> w = testing::quantized_weights(t, rows, n, 150 + static_cast<uint32_t>(n));
      const DType gt = t == DType::kQ5_0 ? DType::kQ8_0 : t;  // the groups' layout
      const size_t gb = cpu::interleaved_group_bytes(gt, n);
      std::vector<uint8_t> il;
      if (t == DType::kQ5_0) {
        il.resize(2 * gb);
        const size_t rb = dtype_row_bytes(t, n);
        for (int gi = 0; gi < 2; ++gi) {
          const int nr = static_cast<int>(std::min<int64_t>(16, rows - 16 * gi));
          cpu::detail::repack_q5_0_group_avx512(w.data() + 16 * gi * rb, rb, nr, n, il.data() + gi * gb);
        }
      } else {
        il = interleaved({t, w.data(), rows, n});
      }
      for (int64_t n_tok : {1, 5, 16, 17, 40}) {
        const auto [acts, tiles] = q16_batch(n_tok, n, 160, 3);
        const cpu::detail::AmxTiles amx = amx_tiles(acts, n);
        const int64_t ldy = 32 + 3;
        std::vector<float> want(n_tok * ldy, -7.0f), got(n_tok * ldy, -7.0f);
        for (int gi = 0; gi < 2; ++gi) {
          const uint8_t* group = il.data() + gi * gb;
          const int nr = static_cast<int>(std::min<int64_t>(16, rows - 16 * gi));
          cpu::detail::gemm_interleaved_avx512(gt, group, tiles, nr, want.data() + 16 * gi, ldy);
          cpu::detail::gemm_interleaved_amx(gt, group, amx, nr, got.data() + 16 * gi, ldy);
        }
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_EQ(want[i], got[i]) << dtype_name(t) << " n " << n << " tokens " << n_tok << " at " << i;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 60);
}

}  // namespace
}  // namespace citadel
