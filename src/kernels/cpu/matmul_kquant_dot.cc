// AVX-512 row-dot kernels for q4_K / q5_K / q6_K weights against a q8_K activation row (decode: one token, where the
// GEMM of matmul_kquant.cc does not pay off). The AVX2 kernels (matmul_avx2.cc) decode the 12 packed scale bytes one
// sub-block at a time in scalar code and handle 32 codes per step; here a super-block's scales and mins come out of
// three 32-bit words at once, its 256 codes are four zmm in element order (the q8_K codes load as they lie), and each
// zmm meets its two sub-blocks' scales through one vpermw. Integer sums as the reference's (matmul.cc dot_q45_K,
// dot_q6_K): maddubs (u8 codes x s8 activations, no saturation: 2 x 63 x 127 < 2^15), then madd with the int16 scales.
#include "kernels/cpu/avx512_intrinsics.h"  // first: its diagnostic state covers <immintrin.h>

#include <cstring>

#include "kernels/cpu/matmul_kernels.h"

namespace citadel::cpu::detail {

#if defined(__x86_64__)
#define KQ_DOT_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace {

KQ_DOT_FN inline __m512i load64(const void* p) { return _mm512_loadu_si512(p); }
KQ_DOT_FN inline float h16(uint16_t h) { return _cvtsh_ss(h); }

// int16 lanes 0..15 = s[j], lanes 16..31 = s[j + 1] (s: 8 or 16 int16 scales in the low lanes of sv).
KQ_DOT_FN inline __m512i scale_pair(__m512i sv, int j) {
  const __m512i idx = _mm512_add_epi16(_mm512_set1_epi16(static_cast<short>(j)),
                                       _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21,
                                                                          20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10,
                                                                          9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                         4));
  return _mm512_permutexvar_epi16(idx, sv);
}

// The 8 scales and 8 mins of a q4_K / q5_K block (get_scale_min_k4 for j = 0..7), as bytes.
inline void scales_mins_k4(const uint8_t* q, uint64_t* sc, uint64_t* m) {
  uint32_t u[3];
  std::memcpy(u, q, 12);
  const uint32_t lo6 = 0x3f3f3f3f, nib = 0x0f0f0f0f, top2 = 0x30303030;
  *sc = (u[0] & lo6) | static_cast<uint64_t>((u[2] & nib) | ((u[0] >> 2) & top2)) << 32;
  *m = (u[1] & lo6) | static_cast<uint64_t>(((u[2] >> 4) & nib) | ((u[1] >> 2) & top2)) << 32;
}

template <bool kHas5th, typename Block>
KQ_DOT_FN float dot_q45_K(const void* w, const ActRow& x, int64_t n) {
  const Block* b = static_cast<const Block*>(w);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc = _mm512_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const BlockQ8_K& a = x.q8_K[i];
    uint64_t sc, m;
    scales_mins_k4(b[i].scales, &sc, &m);
    // mins: m_j x (bsums 2j + bsums 2j + 1) as 8 int32, through madd with (m_j, m_j) pairs.
    const __m128i m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(m)));
    const __m256i mdup = _mm256_set_m128i(_mm_unpackhi_epi16(m16, m16), _mm_unpacklo_epi16(m16, m16));
    const __m256i mins = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums)), mdup);
    accm = _mm256_fmadd_ps(_mm256_set1_ps(a.d * h16(b[i].dmin)), _mm256_cvtepi32_ps(mins), accm);
    const __m512i sv = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(sc))));
    __m512i hb;
    if constexpr (kHas5th) hb = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh)));
    __m512i sumi = _mm512_setzero_si512();
    for (int k = 0; k < 2; ++k) {
      // qs bytes 64k .. 64k + 63: low nibbles elements 128k + 0..31 and 128k + 64..95, high nibbles 32..63, 96..127.
      const __m512i v = load64(b[i].qs + 64 * k);
      const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      for (int e = 0; e < 2; ++e) {  // elements 128k + 64e .. + 63: sub-blocks 4k + 2e, 4k + 2e + 1
        const int j = 4 * k + 2 * e;
        __m512i c = _mm512_shuffle_i64x2(lo, hi, e == 0 ? 0x44 : 0xEE);
        if constexpr (kHas5th) {  // qh byte l, bit j: element 32j + l
          const __m512i bit = _mm512_and_si512(_mm512_srlv_epi64(hb, _mm512_set_epi64(j + 1, j + 1, j + 1, j + 1, j, j, j, j)),
                                               _mm512_set1_epi8(1));
          c = _mm512_or_si512(c, _mm512_slli_epi16(bit, 4));
        }
        const __m512i p = _mm512_maddubs_epi16(c, load64(a.qs + 128 * k + 64 * e));
        sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p, scale_pair(sv, j)));
      }
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(a.d * h16(b[i].d)), _mm512_cvtepi32_ps(sumi), acc);
  }
  return _mm512_reduce_add_ps(acc) - _mm512_reduce_add_ps(_mm512_zextps256_ps512(accm));
}

// q6_K: codes 0..63 unsigned; the -32 offset once per block as 32 x sum_j sc_j x bsums_j.
KQ_DOT_FN float dot_q6_K(const void* w, const ActRow& x, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(w);
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(3);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const BlockQ8_K& a = x.q8_K[i];
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].scales)));
    const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums)));
    const __m512i sv = _mm512_zextsi256_si512(sc16);
    __m512i sumi = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(corr)), 5);
    for (int h = 0; h < 2; ++h) {
      // ql bytes 64h + l: low nibble element 128h + l, high 128h + 64 + l; qh byte 32h + l, bits 2g: element
      // 128h + 32g + l (broadcast to both 256-bit halves, shifted 2g per half).
      const __m512i ql = load64(b[i].ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh + 32 * h)));
      for (int e = 0; e < 2; ++e) {  // elements 128h + 64e .. + 63: sub-blocks 8h + 4e .. 8h + 4e + 3
        const __m512i lo4 = e == 0 ? _mm512_and_si512(ql, m4) : _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4);
        const int s0 = 4 * e, s1 = 4 * e + 2;
        const __m512i hi2 = _mm512_and_si512(_mm512_srlv_epi64(qh, _mm512_set_epi64(s1, s1, s1, s1, s0, s0, s0, s0)), m2);
        const __m512i c = _mm512_or_si512(lo4, _mm512_slli_epi16(hi2, 4));
        const __m512i p = _mm512_maddubs_epi16(c, load64(a.qs + 128 * h + 64 * e));
        // int16 lanes of p: 8 per 16-code sub-block; scales 8h + 4e + L / 8.
        const __m512i idx = _mm512_add_epi16(_mm512_set1_epi16(static_cast<short>(8 * h + 4 * e)),
                                             _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22,
                                                                                21, 20, 19, 18, 17, 16, 15, 14, 13, 12,
                                                                                11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                               3));
        sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p, _mm512_permutexvar_epi16(idx, sv)));
      }
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(a.d * h16(b[i].d)), _mm512_cvtepi32_ps(sumi), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

}  // namespace

DotKernel avx512_kquant_dot_kernel(DType t) {
  switch (t) {
    case DType::kQ4_K: return {ActFormat::kQ8_K, dot_q45_K<false, BlockQ4_K>};
    case DType::kQ5_K: return {ActFormat::kQ8_K, dot_q45_K<true, BlockQ5_K>};
    case DType::kQ6_K: return {ActFormat::kQ8_K, dot_q6_K};
    default: return {ActFormat::kF32, nullptr};
  }
}
#else
DotKernel avx512_kquant_dot_kernel(DType) { return {ActFormat::kF32, nullptr}; }
#endif

}  // namespace citadel::cpu::detail
