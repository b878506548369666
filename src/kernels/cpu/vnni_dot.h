// Internal to the AVX-512 VNNI kernels over the 16-row interleaved layouts (matmul_interleaved.cc,
// matmul_interleaved_kquant.cc): one weight row per int32 lane of a zmm, the activation's 16-bit code pairs broadcast
// to every lane, so one vpdpwssd adds w[r][2k] x[2k] + w[r][2k+1] x[2k+1] for 16 rows at once.
#pragma once

#include "kernels/cpu/avx512_intrinsics.h"  // first: its diagnostic state covers <immintrin.h>

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#define IL_VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

namespace citadel::cpu::detail {

// acc + (w_lo x_lo + w_hi x_hi) per int32 lane (one vpdpwssd), the activation pair x_pair[0..1] broadcast.
IL_VNNI_FN inline __m512i dp_pair(__m512i acc, __m512i w, const int16_t* x_pair) {
  int32_t v;
  std::memcpy(&v, x_pair, 4);
  return _mm512_dpwssd_epi32(acc, w, _mm512_set1_epi32(v));
}

// 32 columns of 16 rows' unsigned 4-bit codes in 4 words of the q4_0 interleaved layout (word w, lane r: pairs
// k = 4w + p, p = 0..3, codes 2k at bits 4p and 2k + 1 at bits 16 + 4p) times the activation codes xq[0..31]:
// sum(q_w * q_x) per row.
IL_VNNI_FN inline __m512i nibble_block_dot(const uint8_t* c, const int16_t* xq) {
  const __m512i m = _mm512_set1_epi32(0x000F000F);
  __m512i s[4];
#pragma GCC unroll 4
  for (int w = 0; w < 4; ++w) {
    const __m512i v = _mm512_loadu_si512(c + 64 * w);
    const int16_t* xp = xq + 8 * w;  // pairs 4w .. 4w + 3
    s[w] = dp_pair(_mm512_setzero_si512(), _mm512_and_si512(v, m), xp);
    s[w] = dp_pair(s[w], _mm512_and_si512(_mm512_srli_epi32(v, 4), m), xp + 2);
    s[w] = dp_pair(s[w], _mm512_and_si512(_mm512_srli_epi32(v, 8), m), xp + 4);
    s[w] = dp_pair(s[w], _mm512_and_si512(_mm512_srli_epi32(v, 12), m), xp + 6);
  }
  return _mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_add_epi32(s[2], s[3]));
}

}  // namespace citadel::cpu::detail
#endif
