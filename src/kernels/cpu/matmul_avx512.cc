// AVX-512 (F, BW, VL, DQ) row-dot kernels for decode: f16 and bf16 weights (16 converted per instruction, masked
// loads for the tail). Every function carries a target attribute, so this file builds in a portable build too;
// matmul.cc calls into it only when cpu_features().has_avx512().
//
// Not here, by measurement (kernels_bench gemv 896x4864, 2 threads, Zen 4): the 32-block formats as one block per
// zmm (codes widened to int16, one vpmaddwd per block) ran 10-45% slower than the AVX2 kernels (512-bit widening
// shuffles and the per-block scalar scale); q4_0 / q8_0 use the interleaved layout instead (matmul_interleaved.cc),
// the others keep the AVX2 kernels. f32 measured no gain (27-33 vs 34-48 GB/s, noisy).
#if defined(__x86_64__)
// GCC 12's AVX-512 intrinsics (_mm512_reduce_add_ps, _mm512_cvtepi32_ps, ...) pass an _mm512_undefined_*() operand
// that -Wuninitialized reports at every inlined use; the state applies to the header's lines, included first here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/matmul_kernels.h"

#define AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace citadel::cpu::detail {
namespace {

// 16 f16 or bf16 values -> 16 floats; m selects the lanes to load (zeros elsewhere).
template <bool kBf16>
AVX512_FN inline __m512 load_half16(const uint16_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  if constexpr (kBf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

template <bool kBf16>
AVX512_FN float dot_half(const void* w, const ActRow& x, int64_t n) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(load_half16<kBf16>(a + i, 0xFFFF), _mm512_loadu_ps(x.f32 + i), s0);
    s1 = _mm512_fmadd_ps(load_half16<kBf16>(a + i + 16, 0xFFFF), _mm512_loadu_ps(x.f32 + i + 16), s1);
  }
  for (; i < n; i += 16) {
    const int64_t r = n - i;
    const __mmask16 m = r >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << r) - 1);
    s0 = _mm512_fmadd_ps(load_half16<kBf16>(a + i, m), _mm512_maskz_loadu_ps(m, x.f32 + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

}  // namespace

DotKernel avx512_dot_kernel(DType t) {
  switch (t) {
    case DType::kF16: return {ActFormat::kF32, dot_half<false>};
    case DType::kBF16: return {ActFormat::kF32, dot_half<true>};
    default: return {ActFormat::kF32, nullptr};
  }
}

}  // namespace citadel::cpu::detail
#else
#include "kernels/cpu/matmul_kernels.h"
namespace citadel::cpu::detail {
DotKernel avx512_dot_kernel(DType) { return {ActFormat::kF32, nullptr}; }
}  // namespace citadel::cpu::detail
#endif
