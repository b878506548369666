// The AVX-512 block kernel of the CPU paged attention (attention_kernels.h). Per run of up to 16 key rows: every
// head's 16 scores (each key row read once for the whole group), one zmm max / exp / sum per head, then the value
// rows accumulated into up to 4 heads x 4 zmm of outputs at once: 16 independent FMA chains per value load, where
// the AVX2 block kernel ran one chain of 16 dependent FMAs per 8 outputs and head.
#include "kernels/cpu/avx512_intrinsics.h"  // first: its diagnostic state covers <immintrin.h>

#include <cmath>

#include "base/check.h"
#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/simd_math.h"

namespace citadel::cpu::detail {

#if defined(__x86_64__)
namespace {

constexpr int kMaxHeads = 128;

CITADEL_AVX512 inline __m512 exp16(__m512 x) {
  const __m256 lo = exp8(_mm512_castps512_ps256(x));
  const __m256 hi = exp8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
}

// o[g0 + i][c0 .. c0 + 16 NZ) = o * rescale[g0 + i] + sum_r w[g0 + i][r] * v_r[c0 ..] for i < GN.
template <int GN, int NZ>
CITADEL_AVX512 inline void accumulate_values(const float* w, const float* resc, const float* v, size_t vstride,
                                             int rows, float* o, int vd, int g0, int c0) {
  __m512 acc[GN][NZ];
  for (int i = 0; i < GN; ++i) {
    const __m512 rs = _mm512_set1_ps(resc[g0 + i]);
    for (int j = 0; j < NZ; ++j) acc[i][j] = _mm512_mul_ps(_mm512_loadu_ps(o + (g0 + i) * vd + c0 + 16 * j), rs);
  }
  for (int r = 0; r < rows; ++r) {
    const float* vr = v + r * vstride + c0;
    __m512 vv[NZ];
    for (int j = 0; j < NZ; ++j) vv[j] = _mm512_loadu_ps(vr + 16 * j);
    for (int i = 0; i < GN; ++i) {
      const __m512 wb = _mm512_set1_ps(w[(g0 + i) * kAttnRows + r]);
      for (int j = 0; j < NZ; ++j) acc[i][j] = _mm512_fmadd_ps(wb, vv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < GN; ++i)
    for (int j = 0; j < NZ; ++j) _mm512_storeu_ps(o + (g0 + i) * vd + c0 + 16 * j, acc[i][j]);
}

template <int NZ>
CITADEL_AVX512 inline void accumulate_heads(const float* w, const float* resc, const float* v, size_t vstride,
                                            int rows, float* o, int G, int vd, int c0) {
  int g = 0;
  for (; g + 4 <= G; g += 4) accumulate_values<4, NZ>(w, resc, v, vstride, rows, o, vd, g, c0);
  switch (G - g) {
    case 3: accumulate_values<3, NZ>(w, resc, v, vstride, rows, o, vd, g, c0); break;
    case 2: accumulate_values<2, NZ>(w, resc, v, vstride, rows, o, vd, g, c0); break;
    case 1: accumulate_values<1, NZ>(w, resc, v, vstride, rows, o, vd, g, c0); break;
    default: break;
  }
}

}  // namespace

CITADEL_AVX512 void attend_rows_avx512(const float* q, int G, int hd, int vd, const float* k, size_t kstride,
                                       const float* v, size_t vstride, int rows, float scale, float* m, float* l,
                                       float* o) {
  CHECK(G >= 1 && G <= kMaxHeads && rows >= 1 && rows <= kAttnRows && hd % 16 == 0 && vd % 16 == 0);
  alignas(64) float w[kMaxHeads * kAttnRows];  // [G][16]: scores, then weights
  float resc[kMaxHeads];
  // Scores: head g, row r (4 rows at a time: 4 independent chains per head).
  for (int g = 0; g < G; ++g) {
    const float* qg = q + g * hd;
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      const float* k0 = k + r * kstride;
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int i = 0; i < hd; i += 16) {
        const __m512 qv = _mm512_loadu_ps(qg + i);
        a0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + i), a0);
        a1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + kstride + i), a1);
        a2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + 2 * kstride + i), a2);
        a3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + 3 * kstride + i), a3);
      }
      w[g * kAttnRows + r] = _mm512_reduce_add_ps(a0) * scale;
      w[g * kAttnRows + r + 1] = _mm512_reduce_add_ps(a1) * scale;
      w[g * kAttnRows + r + 2] = _mm512_reduce_add_ps(a2) * scale;
      w[g * kAttnRows + r + 3] = _mm512_reduce_add_ps(a3) * scale;
    }
    for (; r < rows; ++r) {
      __m512 a = _mm512_setzero_ps();
      for (int i = 0; i < hd; i += 16)
        a = _mm512_fmadd_ps(_mm512_loadu_ps(qg + i), _mm512_loadu_ps(k + r * kstride + i), a);
      w[g * kAttnRows + r] = _mm512_reduce_add_ps(a) * scale;
    }
  }
  // Online softmax per head: lanes past `rows` are -inf (weight 0).
  const __mmask16 live = static_cast<__mmask16>((1u << rows) - 1);
  for (int g = 0; g < G; ++g) {
    const __m512 s = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), live, w + g * kAttnRows);
    const float new_m = std::max(m[g], _mm512_reduce_max_ps(s));
    resc[g] = std::exp(m[g] - new_m);  // 0 on the first rows (m = -inf)
    const __m512 e = exp16(_mm512_sub_ps(s, _mm512_set1_ps(new_m)));
    _mm512_store_ps(w + g * kAttnRows, e);
    l[g] = l[g] * resc[g] + _mm512_reduce_add_ps(e);
    m[g] = new_m;
  }
  int c0 = 0;
  for (; c0 + 64 <= vd; c0 += 64) accumulate_heads<4>(w, resc, v, vstride, rows, o, G, vd, c0);
  for (; c0 < vd; c0 += 16) accumulate_heads<1>(w, resc, v, vstride, rows, o, G, vd, c0);
}

CITADEL_AVX512 void f16_to_f32_avx512(const uint16_t* src, float* dst, int n) {
  for (int i = 0; i < n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
}
#else
void attend_rows_avx512(const float*, int, int, int, const float*, size_t, const float*, size_t, int, float, float*,
                        float*, float*) {
  CHECK(false) << "attend_rows_avx512 without x86";
}
void f16_to_f32_avx512(const uint16_t*, float*, int) { CHECK(false) << "f16_to_f32_avx512 without x86"; }
#endif

}  // namespace citadel::cpu::detail
