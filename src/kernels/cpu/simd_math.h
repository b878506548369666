// Small AVX2 (and AVX-512) math helpers shared by the CPU kernels (internal). Include only from files whose functions
// carry the matching target attributes (CITADEL_AVX2, CITADEL_AVX512).
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>

#define CITADEL_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace citadel::cpu::detail {

CITADEL_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

CITADEL_AVX2 inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) for 8 floats, ~2 ulp: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n via the exponent
// bits. Inputs below -87.3 give 0 (so -inf maps to 0), above 88.7 saturate.
CITADEL_AVX2 inline __m256 exp8(__m256 x) {
  const __m256 zero_mask = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // 2^n, split in two factors so n = 128 (x near 88.7) does not overflow the exponent field.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i h = _mm256_srai_epi32(ni, 1);
  const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
  const __m256 f2 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
  return _mm256_and_ps(_mm256_mul_ps(_mm256_mul_ps(p, f1), f2), zero_mask);
}

// erfc(|z|) = t exp(-z^2 + P(t)), t = 1 / (1 + |z| / 2): the Chebyshev-fitted form with relative error < 1.2e-7.
// gelu(x) = x / 2 * (1 + erf(x / sqrt(2))) for 8 floats, |error| < 2e-7 (kernels/ops.h gelu_erf).
CITADEL_AVX2 inline __m256 gelu8(__m256 x) {
  const __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
  const __m256 az = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(az, _mm256_set1_ps(0.5f), one));
  __m256 p = _mm256_set1_ps(0.17087277f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
  const __m256 e = exp8(_mm256_sub_ps(p, _mm256_mul_ps(az, az)));
  const __m256 erfc_abs = _mm256_mul_ps(t, e);
  // erf(z) = sign(z) (1 - erfc(|z|)); 1 + erf(z) = 2 - erfc(|z|) for z >= 0, erfc(|z|) for z < 0.
  const __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 one_plus = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), erfc_abs), erfc_abs, neg);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), one_plus);
}

// The polynomials of gelu8xn and gelu16xn, highest degree first: P(t) of gelu8's erfc, then exp8's Taylor terms of
// exp(r) after 1/720.
inline constexpr float kErfcPoly[10] = {0.17087277f, -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                                        -0.18628806f, 0.09678418f,  0.37409196f, 1.00002368f, -1.26551223f};
inline constexpr float kExpPoly[6] = {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};

// gelu8 on N vectors at once, step by step across the vectors (same math, the division as a refined reciprocal).
// gelu8 is one dependency chain of ~40 operations; run back to back, a few chains fill the FP scheduler and the
// core waits on latency (~90 cycles per vector on Zen 1). Interleaved, N chains advance together.
template <int N>
CITADEL_AVX2 inline void gelu8xn(__m256* v) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 az[N], t[N], p[N];
  for (int j = 0; j < N; ++j) {
    // |z| capped at 10 (erfc(10) < 1e-44, below any float term here): keeps an infinite x from making NaN in t.
    az[j] = _mm256_min_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_mul_ps(v[j], _mm256_set1_ps(0.70710678118654752f))),
                          _mm256_set1_ps(10.0f));
    const __m256 den = _mm256_fmadd_ps(az[j], _mm256_set1_ps(0.5f), one);
    const __m256 r = _mm256_rcp_ps(den);  // 12 bits; one Newton step: ~23 bits
    t[j] = _mm256_mul_ps(r, _mm256_fnmadd_ps(den, r, _mm256_set1_ps(2.0f)));
  }
  for (int j = 0; j < N; ++j) p[j] = _mm256_set1_ps(kErfcPoly[0]);
  for (int c = 1; c < 10; ++c)
    for (int j = 0; j < N; ++j) p[j] = _mm256_fmadd_ps(p[j], t[j], _mm256_set1_ps(kErfcPoly[c]));
  for (int j = 0; j < N; ++j) p[j] = _mm256_fnmadd_ps(az[j], az[j], p[j]);
  // exp(p), as exp8, across the vectors.
  __m256 n[N], r[N], e[N];
  for (int j = 0; j < N; ++j) {
    p[j] = _mm256_max_ps(p[j], _mm256_set1_ps(-87.3f));  // p <= -1.26 + 0.x: no upper clamp needed
    n[j] = _mm256_round_ps(_mm256_mul_ps(p[j], _mm256_set1_ps(1.44269504088896341f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r[j] = _mm256_fnmadd_ps(n[j], _mm256_set1_ps(0.693359375f), p[j]);
    r[j] = _mm256_fnmadd_ps(n[j], _mm256_set1_ps(-2.12194440e-4f), r[j]);
    e[j] = _mm256_set1_ps(1.0f / 720);
  }
  for (int c = 0; c < 6; ++c)
    for (int j = 0; j < N; ++j) e[j] = _mm256_fmadd_ps(e[j], r[j], _mm256_set1_ps(kExpPoly[c]));
  for (int j = 0; j < N; ++j) {
    // 2^n for n in [-126, 0]: one exponent factor suffices (p >= -87.3 keeps n >= -126).
    const __m256 two_n = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n[j]), _mm256_set1_epi32(127)), 23));
    const __m256 erfc_abs = _mm256_mul_ps(t[j], _mm256_mul_ps(e[j], two_n));
    const __m256 neg = _mm256_cmp_ps(v[j], _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 one_plus = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), erfc_abs), erfc_abs, neg);
    v[j] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v[j]), one_plus);
  }
}

// Half h (0, 1) of a q6_K block's codes (ql, qh: the block's arrays) as signed bytes q - 32: codes[g] = elements
// 128h + 32g .. 128h + 32g + 31 in order. ql byte 64h + l: low nibble element 128h + l, high 128h + 64 + l; qh byte
// 32h + l, bits 2g: the top 2 bits of element 128h + 32g + l.
CITADEL_AVX2 inline void q6_K_codes(const uint8_t* ql, const uint8_t* qh, int h, __m256i* codes) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
  const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * h));
  const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * h + 32));
  const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + 32 * h));
  const __m256i lo4[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                          _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                          _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
  for (int g = 0; g < 4; ++g) {
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * g), m2);
    codes[g] = _mm256_sub_epi8(_mm256_or_si256(lo4[g], _mm256_slli_epi16(hi, 4)), off);
  }
}

// ---- AVX-512 (include only from files whose functions carry CITADEL_AVX512 or a superset).
#define CITADEL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

// gelu8xn with zmm: the same math and constants, 16 floats a vector (the reciprocal from rcp14 plus one Newton step).
// GCC 12 warns of the `__Y = __Y` placeholder inside its own AVX-512 intrinsics here (a false positive, gone in GCC
// 13); where the function is inlined, its caller needs the same pragmas (matmul_packed_avx512.cc).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
template <int N>
CITADEL_AVX512 inline void gelu16xn(__m512* v) {
  const __m512 one = _mm512_set1_ps(1.0f);
  __m512 az[N], t[N], p[N];
  for (int j = 0; j < N; ++j) {
    az[j] = _mm512_min_ps(_mm512_abs_ps(_mm512_mul_ps(v[j], _mm512_set1_ps(0.70710678118654752f))),
                          _mm512_set1_ps(10.0f));
    const __m512 den = _mm512_fmadd_ps(az[j], _mm512_set1_ps(0.5f), one);
    const __m512 r = _mm512_rcp14_ps(den);
    t[j] = _mm512_mul_ps(r, _mm512_fnmadd_ps(den, r, _mm512_set1_ps(2.0f)));
  }
  for (int j = 0; j < N; ++j) p[j] = _mm512_set1_ps(kErfcPoly[0]);
  for (int c = 1; c < 10; ++c)
    for (int j = 0; j < N; ++j) p[j] = _mm512_fmadd_ps(p[j], t[j], _mm512_set1_ps(kErfcPoly[c]));
  for (int j = 0; j < N; ++j) p[j] = _mm512_fnmadd_ps(az[j], az[j], p[j]);
  __m512 n[N], r[N], e[N];
  for (int j = 0; j < N; ++j) {
    p[j] = _mm512_max_ps(p[j], _mm512_set1_ps(-87.3f));
    n[j] = _mm512_roundscale_ps(_mm512_mul_ps(p[j], _mm512_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r[j] = _mm512_fnmadd_ps(n[j], _mm512_set1_ps(0.693359375f), p[j]);
    r[j] = _mm512_fnmadd_ps(n[j], _mm512_set1_ps(-2.12194440e-4f), r[j]);
    e[j] = _mm512_set1_ps(1.0f / 720);
  }
  for (int c = 0; c < 6; ++c)
    for (int j = 0; j < N; ++j) e[j] = _mm512_fmadd_ps(e[j], r[j], _mm512_set1_ps(kExpPoly[c]));
  for (int j = 0; j < N; ++j) {
    const __m512 two_n = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n[j]), _mm512_set1_epi32(127)), 23));
    const __m512 erfc_abs = _mm512_mul_ps(t[j], _mm512_mul_ps(e[j], two_n));
    const __mmask16 neg = _mm512_cmp_ps_mask(v[j], _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 one_plus = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), erfc_abs), erfc_abs);
    v[j] = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v[j]), one_plus);
  }
}
#pragma GCC diagnostic pop

}  // namespace citadel::cpu::detail
#endif
