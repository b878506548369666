// Rows of 16-bit float weights (f16, bf16) or f32 -> the f32 panels of the packed GEMM microkernel, per block of 16
// rows at prompt time: 16 rows x 16 columns converted into 16 zmm and transposed in registers (three shuffle
// stages), so a panel row (one column of the 16 weight rows) is one store. The prompt then runs through
// panel_gemm_avx2 (6 tokens x 16 rows, twelve FMA chains) instead of gemm_rows' 4 x 3 tile with horizontal sums.
#include "kernels/cpu/avx512_intrinsics.h"  // first: its diagnostic state covers <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "base/half.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"
#include "kernels/quant/quant.h"

namespace citadel::cpu::detail {
namespace {

float element(DType t, const uint8_t* row, int64_t k) {
  if (t == DType::kF32) {
    float v;
    std::memcpy(&v, row + 4 * k, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, row + 2 * k, 2);
  return t == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
}

}  // namespace

void rows_to_panel_ref(DType t, const uint8_t* w, size_t rb, int nr, int64_t K, float* panel) {
  std::vector<float> row(K);
  for (int r = 0; r < kInterleaveRows; ++r) {
    if (r < nr) CHECK(dequantize_row(t, w + r * rb, row.data(), K).ok());
    for (int64_t k = 0; k < K; ++k) panel[k * kInterleaveRows + r] = r < nr ? row[k] : 0.0f;
  }
}

void f32_panel_to_bf16_ref(const float* panel, int64_t K, uint16_t* pw) {
  for (int64_t k = 0; k < (K + 1) / 2 * 2; ++k)
    for (int r = 0; r < kInterleaveRows; ++r)
      pw[(k / 2) * 2 * kInterleaveRows + 2 * r + k % 2] = k < K ? f32_to_bf16(panel[k * kInterleaveRows + r]) : 0;
}

void bf16_panel_gemm_ref(const uint16_t* pw, int64_t K, int nr, const float* x, int64_t n_tokens, float* y,
                         int64_t ldy) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int r = 0; r < nr; ++r) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += static_cast<double>(bf16_to_f32(pw[(k / 2) * 2 * kInterleaveRows + 2 * r + k % 2])) *
             bf16_to_f32(f32_to_bf16(x[t * K + k]));
      y[t * ldy + r] = static_cast<float>(s);
    }
  }
}

#if defined(__x86_64__)
#define PANEL_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
namespace {

// 16 values of row `row` from column k on, as f32.
PANEL_FN inline __m512 load16(DType t, const uint8_t* row, int64_t k) {
  if (t == DType::kF32) return _mm512_loadu_ps(row + 4 * k);
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k));
  if (t == DType::kF16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// r[i] = row i (16 columns) -> r[c] = column c (16 rows).
PANEL_FN inline void transpose16(__m512* r) {
  __m512 a[16], b[16];
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane: rows 2i, 2i + 1 interleaved, elements 0-1 / 2-3
    a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // b[4i + e], lane L: rows 4i .. 4i + 3 of column 4L + e
    b[4 * i] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], 0x44);
    b[4 * i + 1] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], 0xEE);
    b[4 * i + 2] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0x44);
    b[4 * i + 3] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0xEE);
  }
  for (int e = 0; e < 4; ++e) {  // gather lane L of b[e], b[4 + e], b[8 + e], b[12 + e] into column 4L + e
    const __m512 x = _mm512_shuffle_f32x4(b[e], b[4 + e], 0x88), y = _mm512_shuffle_f32x4(b[e], b[4 + e], 0xDD);
    const __m512 z = _mm512_shuffle_f32x4(b[8 + e], b[12 + e], 0x88), v = _mm512_shuffle_f32x4(b[8 + e], b[12 + e], 0xDD);
    r[e] = _mm512_shuffle_f32x4(x, z, 0x88);
    r[8 + e] = _mm512_shuffle_f32x4(x, z, 0xDD);
    r[4 + e] = _mm512_shuffle_f32x4(y, v, 0x88);
    r[12 + e] = _mm512_shuffle_f32x4(y, v, 0xDD);
  }
}

}  // namespace

PANEL_FN void rows_to_panel_avx512(DType t, const uint8_t* w, size_t rb, int nr, int64_t K, float* panel) {
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = i < nr ? load16(t, w + i * rb, k) : _mm512_setzero_ps();
    transpose16(r);
    for (int c = 0; c < 16; ++c) _mm512_storeu_ps(panel + (k + c) * kInterleaveRows, r[c]);
  }
  for (; k < K; ++k)
    for (int r = 0; r < kInterleaveRows; ++r) panel[k * kInterleaveRows + r] = r < nr ? element(t, w + r * rb, k) : 0.0f;
}

// Per pair of panel rows: both rounded to bf16 (vcvtneps2bf16, as f32_to_bf16 for finite values), widened to 32-bit
// lanes, the second shifted up: one 64-byte row of pairs.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))
void f32_panel_to_bf16_avx512(const float* panel, int64_t K, uint16_t* pw) {
  for (int64_t k = 0; k < K; k += 2) {
    const __m512 a = _mm512_loadu_ps(panel + k * kInterleaveRows);
    const __m512 b = k + 1 < K ? _mm512_loadu_ps(panel + (k + 1) * kInterleaveRows) : _mm512_setzero_ps();
    const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
    const __m512i hi = _mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b)), 16);
    _mm512_storeu_si512(pw + k * kInterleaveRows, _mm512_or_si512(lo, hi));
  }
}

namespace {
// The 8 x 8 block in[8] (rows) -> out[8] (columns).
__attribute__((target("avx2,fma,f16c"))) inline void transpose8(const __m256* in, __m256* out) {
  __m256 a[8], b[8];
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = _mm256_unpacklo_ps(in[2 * i], in[2 * i + 1]);
    a[2 * i + 1] = _mm256_unpackhi_ps(in[2 * i], in[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      b[4 * i + j] = _mm256_shuffle_ps(a[4 * i + j], a[4 * i + 2 + j], 0x44);
      b[4 * i + 2 + j] = _mm256_shuffle_ps(a[4 * i + j], a[4 * i + 2 + j], 0xEE);
    }
  }
  // b[0..3]: rows 0-3 columns {0,4}, {2,6}, {1,5}, {3,7} per 128-bit lane; b[4..7] the same for rows 4-7.
  static constexpr int kCol[4] = {0, 2, 1, 3};
  for (int i = 0; i < 4; ++i) {
    out[kCol[i]] = _mm256_permute2f128_ps(b[i], b[4 + i], 0x20);
    out[kCol[i] + 4] = _mm256_permute2f128_ps(b[i], b[4 + i], 0x31);
  }
}
}  // namespace

// Rows dequantized (dequantize_rows_avx2) into a per-thread buffer [16, K], then 8 x 8 transposes into the panel.
__attribute__((target("avx2,fma,f16c")))
void rows_to_panel_avx2(DType t, const uint8_t* w, size_t rb, int nr, int64_t K, float* panel) {
  thread_local std::vector<float> rows;
  rows.resize(static_cast<size_t>(kInterleaveRows * K));
  CHECK(dequantize_rows_avx2(t, w, rb, nr, K, rows.data()));
  std::fill(rows.begin() + nr * K, rows.end(), 0.0f);  // padding rows only
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    for (int h = 0; h < 2; ++h) {
      __m256 in[8], out[8];
      for (int i = 0; i < 8; ++i) in[i] = _mm256_loadu_ps(rows.data() + (8 * h + i) * K + k);
      transpose8(in, out);
      for (int c = 0; c < 8; ++c) _mm256_storeu_ps(panel + (k + c) * kInterleaveRows + 8 * h, out[c]);
    }
  }
  for (; k < K; ++k)
    for (int r = 0; r < kInterleaveRows; ++r) panel[k * kInterleaveRows + r] = rows[r * K + k];
}
#else
void rows_to_panel_avx2(DType t, const uint8_t* w, size_t rb, int nr, int64_t K, float* panel) {
  rows_to_panel_ref(t, w, rb, nr, K, panel);
}
void f32_panel_to_bf16_avx512(const float* panel, int64_t K, uint16_t* pw) { f32_panel_to_bf16_ref(panel, K, pw); }
void rows_to_panel_avx512(DType t, const uint8_t* w, size_t rb, int nr, int64_t K, float* panel) {
  rows_to_panel_ref(t, w, rb, nr, K, panel);
}
#endif

}  // namespace citadel::cpu::detail
