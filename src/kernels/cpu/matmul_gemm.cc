// Prefill / batched matmul: a block of weight rows dequantized to f32 once per call, then register tiles of
// kGemmRows rows x kGemmCols tokens (4 x 3: per 8 columns, 4 weight loads and 3 token loads feed 12 FMAs).
// The row-dot kernels read each weight block once per token; here it is decoded once per call and every token
// reuses it from cache, and the math is f32 (no activation rounding at all).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/simd_math.h"

namespace citadel::cpu::detail {

void gemm_tile_ref(const float* w, const float* x, int64_t ldx, int64_t n, int nc, float* out) {
  for (int c = 0; c < nc; ++c) {
    for (int r = 0; r < kGemmRows; ++r) {
      float s = 0;
      for (int64_t k = 0; k < n; ++k) s += w[r * n + k] * x[c * ldx + k];
      out[c * kGemmRows + r] = s;
    }
  }
}

#if defined(__x86_64__)
namespace {

// 4 rows x C tokens: per 8 columns, 3 token loads and 4 weight loads (each used by C FMAs right away, so one register
// holds them in turn): 12 accumulators + 3 tokens + 1 weight = 16 registers. Named accumulators (an array was
// sometimes kept in memory by GCC: see matmul_packed.cc).
template <int C>
CITADEL_AVX2 void tile(const float* w, const float* x, int64_t ldx, int64_t n, float* out) {
  static_assert(C >= 1 && C <= kGemmCols && kGemmCols == 3 && kGemmRows == 4);
  const float* x1 = x + (C > 1 ? ldx : 0);
  const float* x2 = x + (C > 2 ? 2 * ldx : 0);
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00, a20 = a00, a21 = a00,
         a22 = a00, a30 = a00, a31 = a00, a32 = a00;
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 xa = _mm256_loadu_ps(x + k);
    const __m256 xb = C > 1 ? _mm256_loadu_ps(x1 + k) : xa;
    const __m256 xc = C > 2 ? _mm256_loadu_ps(x2 + k) : xa;
#define CITADEL_GEMM_ROW(r, c0, c1, c2)                   \
    {                                                     \
      const __m256 v = _mm256_loadu_ps(w + r * n + k);    \
      c0 = _mm256_fmadd_ps(v, xa, c0);                    \
      if constexpr (C > 1) c1 = _mm256_fmadd_ps(v, xb, c1); \
      if constexpr (C > 2) c2 = _mm256_fmadd_ps(v, xc, c2); \
    }
    CITADEL_GEMM_ROW(0, a00, a01, a02)
    CITADEL_GEMM_ROW(1, a10, a11, a12)
    CITADEL_GEMM_ROW(2, a20, a21, a22)
    CITADEL_GEMM_ROW(3, a30, a31, a32)
#undef CITADEL_GEMM_ROW
  }
  float s[3][4] = {{hsum8(a00), hsum8(a10), hsum8(a20), hsum8(a30)},
                   {hsum8(a01), hsum8(a11), hsum8(a21), hsum8(a31)},
                   {hsum8(a02), hsum8(a12), hsum8(a22), hsum8(a32)}};
  for (; k < n; ++k) {
    for (int c = 0; c < C; ++c) {
      for (int r = 0; r < 4; ++r) s[c][r] += w[r * n + k] * x[c * ldx + k];
    }
  }
  for (int c = 0; c < C; ++c) std::memcpy(out + c * kGemmRows, s[c], sizeof(s[c]));
}

}  // namespace

void gemm_tile_avx2(const float* w, const float* x, int64_t ldx, int64_t n, int nc, float* out) {
  if (nc >= 3) tile<3>(w, x, ldx, n, out);
  else if (nc == 2) tile<2>(w, x, ldx, n, out);
  else tile<1>(w, x, ldx, n, out);
}
#else
void gemm_tile_avx2(const float* w, const float* x, int64_t ldx, int64_t n, int nc, float* out) {
  gemm_tile_ref(w, x, ldx, n, nc, out);
}
#endif

bool gemm_rows(DType t, const uint8_t* w, size_t rb, int64_t nr, const float* x, int64_t n_tokens, int64_t n,
               float* y, int64_t ldy) {
  constexpr int64_t kTokenBlock = 32;  // tokens whose activations stay in L2 while they meet every row quad
  thread_local std::vector<float> wf;  // [round_up(nr, 4), n]
  const int64_t nq = (nr + kGemmRows - 1) / kGemmRows;
  wf.resize(static_cast<size_t>(nq * kGemmRows * n));
  if (!dequantize_rows_avx2(t, w, rb, nr, n, wf.data())) return false;
  std::fill(wf.begin() + nr * n, wf.end(), 0.0f);  // the last quad's missing rows
  float out[kGemmRows * kGemmCols];
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenBlock) {
    const int64_t t1 = std::min(n_tokens, t0 + kTokenBlock);
    for (int64_t q = 0; q < nq; ++q) {
      const int64_t r0 = q * kGemmRows, rn = std::min<int64_t>(kGemmRows, nr - r0);
      for (int64_t c0 = t0; c0 < t1; c0 += kGemmCols) {
        const int nc = static_cast<int>(std::min<int64_t>(kGemmCols, t1 - c0));
        gemm_tile_avx2(wf.data() + r0 * n, x + c0 * n, n, n, nc, out);
        for (int c = 0; c < nc; ++c) std::memcpy(y + (c0 + c) * ldy + r0, out + c * kGemmRows, sizeof(float) * rn);
      }
    }
  }
  return true;
}

}  // namespace citadel::cpu::detail
