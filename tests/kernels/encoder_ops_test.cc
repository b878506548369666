// The encoder ops (layernorm, exact GELU, row bias, packed bidirectional attention): fast against reference on
// seeded random inputs. Bounds: 1e-10 NMSE for all (f32 sums in another order than the double references; the fast
// erf is within 2e-7 absolute, far below that bound's scale), plus a max-abs check of GELU near 0 and in the tails.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/cpu_features.h"
#include "kernels/cpu/packed_kernels.h"
#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace citadel {
namespace {

using testing::nmse;
using testing::random_floats;

TEST(EncoderOps, LayernormMatchesReference) {
  for (int64_t dim : {1, 7, 384, 577}) {
    for (int64_t n_tok : {1, 5, 64}) {
      const int64_t n = dim * n_tok;
      std::vector<float> x = random_floats(n, 11 + dim, 3.0f), w = random_floats(dim, 12), b = random_floats(dim, 13);
      for (int64_t i = 0; i < n; ++i) x[i] += 5.0f;  // a mean far from 0, as residual streams have
      std::vector<float> want(n), got(n);
      cpu::layernorm_ref(x.data(), w.data(), b.data(), want.data(), n_tok, dim, 1e-12f);
      cpu::layernorm(x.data(), w.data(), b.data(), got.data(), n_tok, dim, 1e-12f);
      if (dim == 1) {
        for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
        continue;
      }
      EXPECT_LT(nmse(want, got), 1e-10) << dim << " x " << n_tok;
      got = x;
      cpu::layernorm(got.data(), w.data(), b.data(), got.data(), n_tok, dim, 1e-12f);  // in place
      EXPECT_LT(nmse(want, got), 1e-10) << "in place " << dim;
    }
  }
}

TEST(EncoderOps, GeluErfMatchesReference) {
  for (int64_t n : {1, 9, 1000, 70001}) {
    std::vector<float> x = random_floats(n, 21 + n, 3.0f), want(n), got(n);
    cpu::gelu_erf_ref(x.data(), want.data(), n);
    cpu::gelu_erf(x.data(), got.data(), n);
    EXPECT_LT(nmse(want, got), 1e-10) << n;
  }
  std::vector<float> x;
  for (float v = -12.0f; v <= 12.0f; v += 0.01f) x.push_back(v);
  x.insert(x.end(), {0.0f, -0.0f, 1e-30f, -1e-30f, -30.0f, 30.0f});
  std::vector<float> want(x.size()), got(x.size());
  cpu::gelu_erf_ref(x.data(), want.data(), static_cast<int64_t>(x.size()));
  cpu::gelu_erf(x.data(), got.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << x[i];
    EXPECT_NEAR(got[i], want[i], 4e-7 * std::max(1.0f, std::fabs(x[i]))) << x[i];
  }
}

TEST(EncoderOps, AddBiasMatchesReference) {
  for (int64_t n : {3, 384, 1537}) {
    const int64_t rows = 17;
    std::vector<float> y = random_floats(rows * n, 31), b = random_floats(n, 32), want = y, got = y;
    cpu::add_bias_ref(want.data(), b.data(), rows, n);
    cpu::add_bias(got.data(), b.data(), rows, n);
    EXPECT_LT(nmse(want, got), 1e-12) << n;
  }
}

// Head widths and lengths that take every path of the fast kernels: AVX2 32-key and 32-wide blocks, 8-blocks, scalar
// tails; AVX-512 16-key blocks with a masked last one, 32- and 16-wide value blocks, query groups of 4 and fewer.
TEST(EncoderOps, PackedAttentionMatchesReferenceOverShapes) {
  for (int hd : {8, 16, 20, 32, 44, 48, 64}) {  // AVX-512 kernel where hd % 16 == 0 (and the CPU has it)
    const int n_heads = 3;
    const int64_t width = n_heads * hd, stride = 3 * width;
    const std::vector<int32_t> starts = {0, 32, 72, 75, 139, 150};  // lengths 32, 40, 3, 64, 11
    const int n_seqs = static_cast<int>(starts.size()) - 1;
    const int64_t n_tok = starts.back();
    std::vector<float> qkv = random_floats(n_tok * stride, 43 + hd, 1.5f);
    std::vector<float> want(n_tok * width), got(n_tok * width);
    cpu::encoder_attention_ref(qkv.data(), qkv.data() + width, qkv.data() + 2 * width, stride, starts.data(), n_seqs,
                               n_heads, hd, 0.0f, want.data());
    cpu::encoder_attention(qkv.data(), qkv.data() + width, qkv.data() + 2 * width, stride, starts.data(), n_seqs,
                           n_heads, hd, 0.0f, got.data());
    EXPECT_LT(nmse(want, got), 1e-10) << "head_dim " << hd;
  }
}

TEST(EncoderOps, PackedAttentionMatchesReferenceAndIgnoresOtherSequences) {
  const int n_heads = 12, hd = 32;
  const int64_t width = n_heads * hd, stride = 3 * width;  // q | k | v planes of one row, as a fused projection
  const std::vector<int32_t> starts = {0, 1, 9, 9, 40, 297};  // lengths 1, 8, 0, 31, 257
  const int n_seqs = static_cast<int>(starts.size()) - 1;
  const int64_t n_tok = starts.back();
  std::vector<float> qkv = random_floats(n_tok * stride, 41, 1.5f);
  const float* q = qkv.data();
  const float* k = qkv.data() + width;
  const float* v = qkv.data() + 2 * width;
  std::vector<float> want(n_tok * width), got(n_tok * width);
  cpu::encoder_attention_ref(q, k, v, stride, starts.data(), n_seqs, n_heads, hd, 0.0f, want.data());
  cpu::encoder_attention(q, k, v, stride, starts.data(), n_seqs, n_heads, hd, 0.0f, got.data());
  EXPECT_LT(nmse(want, got), 1e-10);
  // A sequence alone gives the same rows as inside the batch: nothing leaks across sequences.
  const int64_t t0 = starts[1], t1 = starts[2];
  const int32_t one[2] = {0, static_cast<int32_t>(t1 - t0)};
  std::vector<float> alone((t1 - t0) * width);
  cpu::encoder_attention(q + t0 * stride, k + t0 * stride, v + t0 * stride, stride, one, 1, n_heads, hd, 0.0f,
                         alone.data());
  EXPECT_LT(nmse(alone.data(), got.data() + t0 * width, alone.size()), 1e-12);
  // A one-token sequence returns its own value rows.
  for (int h = 0; h < n_heads; ++h)
    for (int d = 0; d < hd; ++d) EXPECT_NEAR(got[h * hd + d], v[h * hd + d], 1e-6);
}


TEST(EncoderOps, PackedMatmulMatchesReferenceAndUnpackedMatmul) {
  for (int64_t rows : {1, 16, 17, 384, 1152}) {
    for (int64_t cols : {1, 7, 384}) {
      for (int64_t n_tok : {1, 5, 6, 7, 8, 13, 14, 32, 64}) {
        std::vector<float> w = random_floats(rows * cols, 51 + rows + cols), x = random_floats(n_tok * cols, 52);
        std::vector<float> bias = random_floats(rows, 53), want(n_tok * rows), got(n_tok * rows);
        const PackedMatrix p = cpu::pack_matrix(w.data(), rows, cols);
        std::vector<float> unpacked(rows * cols, -1.0f);  // unpack_matrix undoes pack_matrix exactly
        cpu::unpack_matrix(p, unpacked.data());
        ASSERT_EQ(unpacked, w) << rows << "x" << cols;
        cpu::matmul_packed_ref(p, x.data(), n_tok, bias.data(), want.data());
        cpu::matmul_packed(p, x.data(), n_tok, bias.data(), got.data());
        EXPECT_LT(nmse(want, got), 1e-10) << rows << "x" << cols << " tokens " << n_tok;
        // The reference agrees with the unpacked f32 matmul plus bias.
        std::vector<float> plain(n_tok * rows);
        ASSERT_TRUE(cpu::matmul_ref(WeightView{DType::kF32, w.data(), rows, cols}, x.data(), n_tok, plain.data()).ok());
        cpu::add_bias_ref(plain.data(), bias.data(), n_tok, rows);
        EXPECT_LT(nmse(plain, want), 1e-12) << rows << "x" << cols;
        // The GELU epilogue equals gelu_erf applied afterwards.
        std::vector<float> fused(n_tok * rows), fused_ref(n_tok * rows), after = want;
        cpu::matmul_packed(p, x.data(), n_tok, bias.data(), fused.data(), 0, cpu::Epilogue::kGeluErf);
        cpu::matmul_packed_ref(p, x.data(), n_tok, bias.data(), fused_ref.data(), 0, cpu::Epilogue::kGeluErf);
        cpu::gelu_erf_ref(after.data(), after.data(), n_tok * rows);
        EXPECT_LT(nmse(after, fused_ref), 1e-14);
        EXPECT_LT(nmse(fused_ref, fused), 1e-10);
      }
    }
  }
  // ldy: writing into a wider output leaves the other columns alone; no bias.
  const int64_t rows = 20, cols = 9, n_tok = 7, ldy = 50;
  std::vector<float> w = random_floats(rows * cols, 61), x = random_floats(n_tok * cols, 62);
  std::vector<float> want(n_tok * rows), got(n_tok * ldy, -7.0f);
  const PackedMatrix p = cpu::pack_matrix(w.data(), rows, cols);
  cpu::matmul_packed_ref(p, x.data(), n_tok, nullptr, want.data());
  cpu::matmul_packed(p, x.data(), n_tok, nullptr, got.data() + 10, ldy);
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t c = 0; c < ldy; ++c) {
      if (c >= 10 && c < 10 + rows) {
        EXPECT_NEAR(got[t * ldy + c], want[t * rows + c - 10], 1e-5);
      } else {
        EXPECT_EQ(got[t * ldy + c], -7.0f) << t << " " << c;
      }
    }
  }
}

// The AVX-512 kernel alone (matmul_packed picks it where the CPU has AVX-512, so the test above covers the AVX2
// kernel only under CITADEL_CPU=avx2): odd shapes, a panel range that starts mid-matrix and ends on an odd panel, the
// GELU epilogue, and bit-equality with the AVX2 kernel's FMA chain (bias, then k in order) through matmul_packed on
// another token count (a token's row does not depend on its batch mates).
TEST(EncoderOps, PackedMatmulAvx512MatchesReference) {
  if (!cpu_features().has_avx512()) GTEST_SKIP() << "no AVX-512 on this CPU";
  for (int64_t rows : {1, 15, 16, 17, 33, 48, 385}) {
    for (int64_t cols : {1, 3, 31, 97, 1537}) {
      for (int64_t n_tok : {1, 2, 11, 12, 13, 25, 300}) {
        if (cols * n_tok > 400000 || rows * cols > 300000) continue;
        std::vector<float> w = random_floats(rows * cols, 71 + rows + cols), x = random_floats(n_tok * cols, 72);
        std::vector<float> bias = random_floats(rows, 73), want(n_tok * rows), got(n_tok * rows, 9.0f);
        const PackedMatrix p = cpu::pack_matrix(w.data(), rows, cols);
        const int64_t panels = (rows + kPanelRows - 1) / kPanelRows;
        for (auto epi : {cpu::Epilogue::kNone, cpu::Epilogue::kGeluErf}) {
          cpu::matmul_packed_ref(p, x.data(), n_tok, bias.data(), want.data(), 0, epi);
          cpu::detail::packed_gemm_avx512(p, false, 0, panels, x.data(), n_tok, bias.data(), got.data(), rows, epi);
          EXPECT_LT(nmse(want, got), 1e-10) << rows << "x" << cols << " tokens " << n_tok;
        }
        // Panels [1, panels) only: panel 0's columns are left alone.
        std::vector<float> part(n_tok * rows, 5.0f);
        cpu::detail::packed_gemm_avx512(p, false, 1, panels, x.data(), n_tok, nullptr, part.data(), rows,
                                        cpu::Epilogue::kNone);
        for (int64_t t = 0; t < n_tok; ++t)
          for (int64_t r = 0; r < std::min<int64_t>(rows, kPanelRows); ++r) ASSERT_EQ(part[t * rows + r], 5.0f);
        // One token through matmul_packed equals its row of the batched call, bit for bit.
        std::vector<float> solo(rows);
        cpu::matmul_packed(p, x.data() + (n_tok - 1) * cols, 1, bias.data(), solo.data());
        cpu::detail::packed_gemm_avx512(p, false, 0, panels, x.data(), n_tok, bias.data(), got.data(), rows,
                                        cpu::Epilogue::kNone);
        for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(solo[r], got[(n_tok - 1) * rows + r]) << r;
      }
    }
  }
}

// The bf16 GEMM (AVX512_BF16) against its reference (bf16 inputs, double sums): equal up to f32 summation order;
// and the bf16 reference against the f32 one: within bf16 rounding (8-bit mantissas: NMSE ~1e-5 on random data).
TEST(EncoderOps, PackedMatmulBf16MatchesReference) {
  for (int64_t rows : {1, 16, 17, 33, 385}) {
    for (int64_t cols : {1, 2, 3, 31, 384, 1537}) {
      for (int64_t n_tok : {1, 7, 12, 13, 40}) {
        std::vector<float> w = random_floats(rows * cols, 81 + rows + cols), x = random_floats(n_tok * cols, 82);
        std::vector<float> bias = random_floats(rows, 83), want(n_tok * rows), got(n_tok * rows), f32(n_tok * rows);
        PackedMatrix p = cpu::pack_matrix(w.data(), rows, cols);
        cpu::matmul_packed_ref(p, x.data(), n_tok, bias.data(), f32.data());
        cpu::pack_matrix_bf16(&p);
        for (auto epi : {cpu::Epilogue::kNone, cpu::Epilogue::kGeluErf}) {
          cpu::matmul_packed_bf16_ref(p, x.data(), n_tok, bias.data(), want.data(), 0, epi);
          cpu::matmul_packed(p, x.data(), n_tok, bias.data(), got.data(), 0, epi);
          // Without AVX512_BF16 matmul_packed runs the f32 path: then within bf16 rounding of the reference.
          EXPECT_LT(nmse(want, got), cpu_features().has_avx512_bf16() ? 1e-10 : 1e-4)
              << rows << "x" << cols << " tokens " << n_tok;
        }
        cpu::matmul_packed_bf16_ref(p, x.data(), n_tok, bias.data(), want.data());
        EXPECT_LT(nmse(f32, want), 1e-4) << rows << "x" << cols;
        if (cols >= 31) {
          EXPECT_GT(nmse(f32, want), 1e-8) << "the bf16 reference rounds";
        }
        if (!cpu_features().has_avx512_bf16()) continue;
        // A token alone gives its row of the batch bit for bit.
        std::vector<float> solo(rows);
        cpu::matmul_packed(p, x.data() + (n_tok - 1) * cols, 1, bias.data(), solo.data());
        cpu::matmul_packed(p, x.data(), n_tok, bias.data(), got.data());
        for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(solo[r], got[(n_tok - 1) * rows + r]) << r;
      }
    }
  }
}

}  // namespace
}  // namespace citadel
