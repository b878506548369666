// AVX2 decode kernels over the 16-row interleaved layouts (kernels/ops.h) of q4_0, q4_K and q6_K, for CPUs without
// AVX-512 VNNI: each 64-byte word of codes is two ymm halves (rows 0..7, 8..15), and per activation pair one vpmaddwd
// + vpaddd per half stands in for vpdpwssd. The row-dot kernels (matmul_avx2.cc) pay their scale and activation work
// once per row and block; here it is paid once per 8 rows. Integer sums per block / sub-block are the references'
// (dot_interleaved_ref), so the results equal them up to the order of the f32 sums.
#include "kernels/cpu/avx512_intrinsics.h"  // first: its diagnostic state covers <immintrin.h>

#include <cstring>

#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"

namespace citadel::cpu::detail {

#if defined(__x86_64__)
#define IL_AVX2_FN __attribute__((target("avx2,fma,f16c")))

namespace {

IL_AVX2_FN inline __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
IL_AVX2_FN inline __m256i bcast_pair(const int16_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}
// 8 f16 (the half's rows) -> f32.
IL_AVX2_FN inline __m256 half8(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// 32 columns of 4-bit codes (4 words of the q4_0 layout at c) times xq[0..31]: int32 sums of both halves' rows.
IL_AVX2_FN inline void nibble_block_dot2(const uint8_t* c, const int16_t* xq, __m256i* s0, __m256i* s1) {
  const __m256i m = _mm256_set1_epi32(0x000F000F);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0;  // two chains per half
#pragma GCC unroll 4
  for (int w = 0; w < 4; ++w) {
    const __m256i v0 = load256(c + 64 * w), v1 = load256(c + 64 * w + 32);
    const int16_t* xp = xq + 8 * w;
    const __m256i x0 = bcast_pair(xp), x1 = bcast_pair(xp + 2), x2 = bcast_pair(xp + 4), x3 = bcast_pair(xp + 6);
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_and_si256(v0, m), x0));
    b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(_mm256_and_si256(v1, m), x0));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(v0, 4), m), x1));
    b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(v1, 4), m), x1));
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(v0, 8), m), x2));
    b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(v1, 8), m), x2));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(v0, 12), m), x3));
    b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(v1, 12), m), x3));
  }
  *s0 = _mm256_add_epi32(a0, a1);
  *s1 = _mm256_add_epi32(b0, b1);
}

IL_AVX2_FN void dot_il_q4_0(const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  constexpr int64_t cb = il_codes_bytes(DType::kQ4_0);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, accm0 = acc0, accm1 = acc0;
  for (int64_t i = 0; i < n / kQK; ++i) {
    __m256i s0, s1;
    nibble_block_dot2(group + il_col_codes(i, cb), x.q16 + kQK * i, &s0, &s1);
    const uint8_t* sc = group + il_col_scales(i, cb);
    const __m256 d0 = half8(sc), d1 = half8(sc + 16), dx = _mm256_set1_ps(x.q16_d[i]);
    const __m256 sums = _mm256_set1_ps(x.q16_sums[i]);
    acc0 = _mm256_fmadd_ps(_mm256_mul_ps(d0, dx), _mm256_cvtepi32_ps(s0), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_mul_ps(d1, dx), _mm256_cvtepi32_ps(s1), acc1);
    accm0 = _mm256_fmadd_ps(d0, sums, accm0);
    accm1 = _mm256_fmadd_ps(d1, sums, accm1);
  }
  const __m256 eight = _mm256_set1_ps(8.0f);
  _mm256_storeu_ps(y, _mm256_fnmadd_ps(eight, accm0, acc0));
  _mm256_storeu_ps(y + 8, _mm256_fnmadd_ps(eight, accm1, acc1));
}

// 8 bytes (one per row of a half) -> f32.
IL_AVX2_FN inline __m256 u8x8(const uint8_t* p, bool is_signed) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b));
}

IL_AVX2_FN void dot_il_q4_K(const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const uint8_t* u = group + i * kquant_unit_bytes(DType::kQ4_K);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, m0 = s0, m1 = s0;
    for (int j = 0; j < 8; ++j) {
      const int64_t blk = 8 * i + j;
      __m256i p0, p1;
      nibble_block_dot2(u + il_low_word(DType::kQ4_K, 4 * j), x.q16 + kQK * blk, &p0, &p1);
      const __m256 dx = _mm256_set1_ps(x.q16_d[blk]), sums = _mm256_set1_ps(x.q16_sums[blk]);
      s0 = _mm256_fmadd_ps(_mm256_mul_ps(u8x8(u + kIlScales + 16 * j, false), dx), _mm256_cvtepi32_ps(p0), s0);
      s1 = _mm256_fmadd_ps(_mm256_mul_ps(u8x8(u + kIlScales + 16 * j + 8, false), dx), _mm256_cvtepi32_ps(p1), s1);
      m0 = _mm256_fmadd_ps(u8x8(u + kIlMins + 16 * j, false), sums, m0);
      m1 = _mm256_fmadd_ps(u8x8(u + kIlMins + 16 * j + 8, false), sums, m1);
    }
    acc0 = _mm256_fnmadd_ps(half8(u + 32), m0, _mm256_fmadd_ps(half8(u), s0, acc0));
    acc1 = _mm256_fnmadd_ps(half8(u + 48), m1, _mm256_fmadd_ps(half8(u + 16), s1, acc1));
  }
  _mm256_storeu_ps(y, acc0);
  _mm256_storeu_ps(y + 8, acc1);
}

// q6_K pair P (0..3) of low word v whose top bits are pair 4 * Half + P of high word hv: (low | top << 4) - 32.
template <int P, int Half>
IL_AVX2_FN inline __m256i q6_pair(__m256i v, __m256i hv) {
  constexpr int hp = 2 * (4 * Half + P);
  const __m256i lo = _mm256_and_si256(_mm256_srli_epi32(v, 4 * P), _mm256_set1_epi32(0x000F000F));
  const __m256i hs = hp <= 4 ? _mm256_slli_epi32(hv, 4 - hp) : _mm256_srli_epi32(hv, hp - 4);
  const __m256i hi = _mm256_and_si256(hs, _mm256_set1_epi32(0x00300030));
  return _mm256_sub_epi16(_mm256_or_si256(lo, hi), _mm256_set1_epi16(32));
}
template <int Half>
IL_AVX2_FN inline __m256i q6_word_dot(const uint8_t* c, __m256i hv, const int16_t* xp) {
  const __m256i v = load256(c);
  const __m256i a = _mm256_add_epi32(_mm256_madd_epi16(q6_pair<0, Half>(v, hv), bcast_pair(xp)),
                                     _mm256_madd_epi16(q6_pair<1, Half>(v, hv), bcast_pair(xp + 2)));
  const __m256i b = _mm256_add_epi32(_mm256_madd_epi16(q6_pair<2, Half>(v, hv), bcast_pair(xp + 4)),
                                     _mm256_madd_epi16(q6_pair<3, Half>(v, hv), bcast_pair(xp + 6)));
  return _mm256_add_epi32(a, b);
}

IL_AVX2_FN void dot_il_q6_K(const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const uint8_t* u = group + i * kquant_unit_bytes(DType::kQ6_K);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    for (int j = 0; j < 16; ++j) {  // 16-column sub-block j: low words 2j, 2j + 1; high word j
      const int16_t* xp = x.q16 + kQK_K * i + 16 * j;
      const uint8_t* c = u + il_low_word(DType::kQ6_K, 2 * j);  // then word 2j + 1 at c + 64
      const uint8_t* h = u + il_high_word(j);
      const __m256i hv0 = load256(h), hv1 = load256(h + 32);
      const __m256i p0 = _mm256_add_epi32(q6_word_dot<0>(c, hv0, xp), q6_word_dot<1>(c + 64, hv0, xp + 8));
      const __m256i p1 = _mm256_add_epi32(q6_word_dot<0>(c + 32, hv1, xp), q6_word_dot<1>(c + 96, hv1, xp + 8));
      const __m256 dx = _mm256_set1_ps(x.q16_d[8 * i + j / 2]);
      s0 = _mm256_fmadd_ps(_mm256_mul_ps(u8x8(u + kIlScales + 16 * j, true), dx), _mm256_cvtepi32_ps(p0), s0);
      s1 = _mm256_fmadd_ps(_mm256_mul_ps(u8x8(u + kIlScales + 16 * j + 8, true), dx), _mm256_cvtepi32_ps(p1), s1);
    }
    acc0 = _mm256_fmadd_ps(half8(u), s0, acc0);
    acc1 = _mm256_fmadd_ps(half8(u + 16), s1, acc1);
  }
  _mm256_storeu_ps(y, acc0);
  _mm256_storeu_ps(y + 8, acc1);
}

// 8 panel entries (a half's rows) = codes c (int32 lanes) x scales d. A function, not a lambda: a lambda would not
// inherit IL_AVX2_FN's target.
IL_AVX2_FN inline void put8(float* row, __m256i c, __m256 d) {
  _mm256_storeu_ps(row, _mm256_mul_ps(_mm256_cvtepi32_ps(c), d));
}

}  // namespace

InterleavedDotFn interleaved_dot_kernel_avx2(DType t) {
  switch (t) {
    case DType::kQ4_0: return dot_il_q4_0;
    case DType::kQ4_K: return dot_il_q4_K;
    case DType::kQ6_K: return dot_il_q6_K;
    default: return nullptr;
  }
}

namespace {

// q4_K / q6_K groups -> panel: per unit and half, d * sc (and dmin * m) per sub-block, the codes as dequantize_row
// forms them (q4_K: d1 * q - m1 as one fused multiply-subtract; q6_K: d1 * (q - 32)).
IL_AVX2_FN void dequantize_kquant_group_avx2(DType t, const uint8_t* group, int64_t n, float* panel) {
  const __m256i m4 = _mm256_set1_epi32(0xF), m2 = _mm256_set1_epi32(3), off = _mm256_set1_epi32(32);
  for (int64_t i = 0; i < n / kQK_K; ++i, panel += kQK_K * kInterleaveRows) {
    const uint8_t* u = group + i * kquant_unit_bytes(t);
    for (int h = 0; h < 2; ++h) {
      const __m256 d = half8(u + 16 * h);
      float* ph = panel + 8 * h;
      if (t == DType::kQ4_K) {
        const __m256 dmin = half8(u + 32 + 16 * h);
        for (int j = 0; j < 8; ++j) {
          const __m256 d1 = _mm256_mul_ps(d, u8x8(u + kIlScales + 16 * j + 8 * h, false));
          const __m256 m1 = _mm256_mul_ps(dmin, u8x8(u + kIlMins + 16 * j + 8 * h, false));
          for (int w = 4 * j; w < 4 * j + 4; ++w) {
            const __m256i v = load256(u + il_low_word(t, w) + 32 * h);
            for (int p = 0; p < 4; ++p) {
              const int col = 8 * w + 2 * p;
              const __m256i q0 = _mm256_and_si256(_mm256_srli_epi32(v, 4 * p), m4);
              const __m256i q1 = _mm256_and_si256(_mm256_srli_epi32(v, 16 + 4 * p), m4);
              _mm256_storeu_ps(ph + col * kInterleaveRows, _mm256_fmsub_ps(d1, _mm256_cvtepi32_ps(q0), m1));
              _mm256_storeu_ps(ph + (col + 1) * kInterleaveRows, _mm256_fmsub_ps(d1, _mm256_cvtepi32_ps(q1), m1));
            }
          }
        }
      } else {
        for (int j = 0; j < 16; ++j) {
          const __m256 d1 = _mm256_mul_ps(d, u8x8(u + kIlScales + 16 * j + 8 * h, true));
          const __m256i hv = load256(u + il_high_word(j) + 32 * h);
          for (int wi = 0; wi < 2; ++wi) {
            const __m256i v = load256(u + il_low_word(t, 2 * j + wi) + 32 * h);
            for (int p = 0; p < 4; ++p) {
              const int col = 16 * j + 8 * wi + 2 * p, hp = 2 * (4 * wi + p);
              for (int e = 0; e < 2; ++e) {
                const __m256i lo = _mm256_and_si256(_mm256_srli_epi32(v, 16 * e + 4 * p), m4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi32(hv, 16 * e + hp), m2);
                const __m256i q = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), off);
                _mm256_storeu_ps(ph + (col + e) * kInterleaveRows, _mm256_mul_ps(d1, _mm256_cvtepi32_ps(q)));
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace

IL_AVX2_FN void dequantize_group_avx2(DType t, const uint8_t* group, int64_t n, float* panel) {
  if (t == DType::kQ4_K || t == DType::kQ6_K) return dequantize_kquant_group_avx2(t, group, n, panel);
  const int64_t cb = il_codes_bytes(t);
  for (int64_t i = 0; i < n / kQK; ++i, panel += kQK * kInterleaveRows) {
    const uint8_t* c = group + il_col_codes(i, cb);
    for (int h = 0; h < 2; ++h) {
      const __m256 d = half8(group + il_col_scales(i, cb) + 16 * h);
      float* ph = panel + 8 * h;
      if (t == DType::kQ4_0) {
        const __m256i m = _mm256_set1_epi32(0xF), eight = _mm256_set1_epi32(8);
        for (int w = 0; w < 4; ++w) {
          const __m256i v = load256(c + 64 * w + 32 * h);
          for (int p = 0; p < 4; ++p) {  // pair k = 4w + p: codes 2k (bits 4p) and 2k + 1 (bits 16 + 4p)
            const int k = 4 * w + p;
            put8(ph + 2 * k * kInterleaveRows,
                 _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(v, 4 * p), m), eight), d);
            put8(ph + (2 * k + 1) * kInterleaveRows,
                 _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(v, 16 + 4 * p), m), eight), d);
          }
        }
      } else {
        for (int w = 0; w < 8; ++w) {  // bytes 0..3 of a lane: codes 4w, 4w + 2, 4w + 1, 4w + 3
          const __m256i v = load256(c + 64 * w + 32 * h);
          put8(ph + 4 * w * kInterleaveRows, _mm256_srai_epi32(_mm256_slli_epi32(v, 24), 24), d);
          put8(ph + (4 * w + 2) * kInterleaveRows, _mm256_srai_epi32(_mm256_slli_epi32(v, 16), 24), d);
          put8(ph + (4 * w + 1) * kInterleaveRows, _mm256_srai_epi32(_mm256_slli_epi32(v, 8), 24), d);
          put8(ph + (4 * w + 3) * kInterleaveRows, _mm256_srai_epi32(v, 24), d);
        }
      }
    }
  }
}
#else
InterleavedDotFn interleaved_dot_kernel_avx2(DType) { return nullptr; }
void dequantize_group_avx2(DType t, const uint8_t* group, int64_t n, float* panel) {
  dequantize_group_ref(t, group, n, panel);
}
#endif

}  // namespace citadel::cpu::detail
