// AVX-512 row dot for q6_K weights against a 16-bit activation row (kQ16; decode: one token, where the GEMM of
// matmul_kquant.cc does not pay off). One zmm holds an activation block's 32 codes as int16, so each pair of 16-value
// sub-blocks is one widening of its codes, one vpmaddwd and one FMA with a vector of the pair's two f32 factors
// d * sc * dx (the 16 of a super-block computed at once). Integer sums per sub-block as the reference's (matmul.cc
// dot_q6_K); only the f32 order differs. q4_K / q5_K keep the AVX2 kernels: the same scheme with zmm measured no
// faster (kernels_bench gemv 896x4864, 1 thread: 173 vs 163 us q4_K; q6_K 215 vs 303 us).
#include "kernels/cpu/avx512_intrinsics.h"  // first: its diagnostic state covers <immintrin.h>

#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/simd_math.h"

namespace citadel::cpu::detail {

#if defined(__x86_64__)
#define KQ_DOT_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace {

// q6_K: signed codes q - 32; each activation block holds two 16-value sub-blocks, whose factors fill the low and high
// 8 lanes of the madd result.
KQ_DOT_FN float dot_q6_K(const void* w, const ActRow& x, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(w);
  __m512 acc = _mm512_setzero_ps();
  // Lane L of the factor vector for sub-block pair k: factor 2k + L / 8.
  const __m512i half_idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    // factors[k] = d * sc_k * dx_(k / 2), k = 0..15.
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].scales));
    const __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8));
    const __m512 dx = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(x.q16_d + 8 * i)));
    const __m512 factors = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), sc), dx);
    const int16_t* xq = x.q16 + kQK_K * i;
    for (int h = 0; h < 2; ++h) {
      __m256i codes[4];
      q6_K_codes(b[i].ql, b[i].qh, h, codes);
      for (int g = 0; g < 4; ++g) {  // elements 128h + 32g .. + 31: activation block 8i + 4h + g
        const int k = 4 * h + g;
        const __m512i p = _mm512_madd_epi16(_mm512_cvtepi8_epi16(codes[g]), _mm512_loadu_si512(xq + 32 * k));
        const __m512 fk = _mm512_permutexvar_ps(_mm512_add_epi32(half_idx, _mm512_set1_epi32(2 * k)), factors);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), fk, acc);
      }
    }
  }
  return _mm512_reduce_add_ps(acc);
}

}  // namespace

DotKernel avx512_kquant_dot_kernel(DType t) {
  switch (t) {
    case DType::kQ6_K: return {ActFormat::kQ16, dot_q6_K};
    default: return {ActFormat::kF32, nullptr};
  }
}
#else
DotKernel avx512_kquant_dot_kernel(DType) { return {ActFormat::kF32, nullptr}; }
#endif

}  // namespace citadel::cpu::detail
