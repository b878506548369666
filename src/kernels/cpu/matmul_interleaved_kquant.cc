// The 16-row interleaved layout of q4_K / q6_K weights (kernels/ops.h) and its decode kernels: the q4_0 layout's idea
// (one row per int32 lane, activation pairs broadcast, vpdpwssd, no horizontal sums) with the K-quants' super-block
// scales. The row-dot kernels (matmul_avx2.cc, matmul_kquant_dot.cc) spend most of their instructions on per-row
// reductions and scalar scales: measured 29 GB/s for q4_K against 61 GB/s for interleaved q4_0 (kernels_bench gemv
// 896x4864, 2 threads, Zen 4).
//
// One super-block unit of a group (16 rows x 256 columns), every part 64-byte aligned:
//   q4_K (2368 bytes): [0, 64) d then dmin, 16 f16 each (row order); [64, 192) the 6-bit scales, byte 16j + r =
//     sub-block j's scale of row r; [192, 320) the mins, same order; [320, 2368) 32 words of codes, word w = columns
//     8w .. 8w + 7 in the q4_0 layout (lane r: pairs k = 4w + p, code 2k at bits 4p, 2k + 1 at bits 16 + 4p).
//   q6_K (3392 bytes): [0, 32) d, 16 f16; [32, 64) zero; [64, 320) the int8 scales, byte 16j + r = 16-column
//     sub-block j's scale of row r; then per sub-block j 192 bytes: the codes' low 4 bits of columns 16j .. 16j + 15
//     as two q4_K words, then their top 2 bits in one word (lane r: pairs k = 8j + p, p = 0..7, code 2k's at bits 2p,
//     2k + 1's at bits 16 + 2p). Codes unsigned (0..63); the kernels subtract 32. (matmul_kernels.h il_low_word,
//     il_high_word.) A first q6_K layout with all high words after all low ones ran 20% slower than the row dots on
//     DRAM-sized matrices with AVX2 (two streams); this one reads one.
// 148 (q4_K) and 212 (q6_K) bytes per row and super-block, against the GGUF blocks' 144 and 210.
#include "kernels/cpu/vnni_dot.h"  // first: its diagnostic state covers <immintrin.h>

#include <algorithm>
#include <cstring>

#include "base/half.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"
#include "kernels/quant/quant.h"

namespace citadel::cpu::detail {

namespace {

// Where the low 4 bits of column e (0..255) of row r live in a unit of t: byte offset and shift.
void nibble_place(DType t, int r, int e, int64_t* byte, int* shift) {
  const int w = e / 8, p = (e % 8) / 2, bit = (e % 2 ? 16 : 0) + 4 * p;
  *byte = il_low_word(t, w) + 4 * r + bit / 8;
  *shift = bit % 8;
}
// q6_K: where the top 2 bits of column e of row r live.
void high_place(int r, int e, int64_t* byte, int* shift) {
  const int h = e / 16, p = (e % 16) / 2, bit = (e % 2 ? 16 : 0) + 2 * p;
  *byte = il_high_word(h) + 4 * r + bit / 8;
  *shift = bit % 8;
}

// Column e's code (q4_K 0..15, q6_K 0..63) of row r in a unit.
int unit_code(DType t, const uint8_t* u, int r, int e) {
  int64_t byte;
  int shift;
  nibble_place(t, r, e, &byte, &shift);
  int q = (u[byte] >> shift) & 0xF;
  if (t == DType::kQ6_K) {
    high_place(r, e, &byte, &shift);
    q |= ((u[byte] >> shift) & 3) << 4;
  }
  return q;
}

// One row's GGUF block -> lane r of a unit. Codes one 32-bit lane word at a time (the unit was zeroed).
void put_block(DType t, const uint8_t* block, int r, uint8_t* u) {
  int code[kQK_K];
  if (t == DType::kQ4_K) {
    const BlockQ4_K* b = reinterpret_cast<const BlockQ4_K*>(block);
    std::memcpy(u + 2 * r, &b->d, 2);
    std::memcpy(u + 32 + 2 * r, &b->dmin, 2);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      get_scale_min_k4(j, b->scales, &sc, &m);
      u[kIlScales + 16 * j + r] = sc;
      u[kIlMins + 16 * j + r] = m;
      for (int l = 0; l < 32; ++l) code[32 * j + l] = (b->qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
    }
  } else {
    const BlockQ6_K* b = reinterpret_cast<const BlockQ6_K*>(block);
    std::memcpy(u + 2 * r, &b->d, 2);
    for (int j = 0; j < 16; ++j) u[kIlScales + 16 * j + r] = static_cast<uint8_t>(b->scales[j]);
    for (int h = 0; h < 2; ++h) {  // ql byte 64h + l: columns 128h + l, + 64; qh byte 32h + l, bits 2g: + 32g
      for (int l = 0; l < 32; ++l) {
        const int q0 = b->ql[64 * h + l], q1 = b->ql[64 * h + 32 + l], qh = b->qh[32 * h + l];
        int* c = code + 128 * h + l;
        c[0] = (q0 & 0xF) | ((qh & 3) << 4);
        c[32] = (q1 & 0xF) | (((qh >> 2) & 3) << 4);
        c[64] = (q0 >> 4) | (((qh >> 4) & 3) << 4);
        c[96] = (q1 >> 4) | (((qh >> 6) & 3) << 4);
      }
    }
  }
  for (int w = 0; w < 32; ++w) {
    uint32_t lane = 0;
    for (int p = 0; p < 4; ++p) {
      lane |= static_cast<uint32_t>(code[8 * w + 2 * p] & 0xF) << (4 * p);
      lane |= static_cast<uint32_t>(code[8 * w + 2 * p + 1] & 0xF) << (16 + 4 * p);
    }
    std::memcpy(u + il_low_word(t, w) + 4 * r, &lane, 4);
  }
  if (t == DType::kQ6_K) {
    for (int h = 0; h < 16; ++h) {
      uint32_t lane = 0;
      for (int p = 0; p < 8; ++p) {
        lane |= static_cast<uint32_t>(code[16 * h + 2 * p] >> 4) << (2 * p);
        lane |= static_cast<uint32_t>(code[16 * h + 2 * p + 1] >> 4) << (16 + 2 * p);
      }
      std::memcpy(u + il_high_word(h) + 4 * r, &lane, 4);
    }
  }
}

}  // namespace

bool kquant_interleave_supported(DType t) { return t == DType::kQ4_K || t == DType::kQ6_K; }

size_t kquant_group_bytes(DType t, int64_t n) {
  if (!kquant_interleave_supported(t) || n <= 0 || n % kQK_K != 0) return 0;
  return static_cast<size_t>(n / kQK_K * kquant_unit_bytes(t));
}

void interleave_kquant_group(DType t, const uint8_t* w, size_t rb, int nr, int64_t n, uint8_t* group) {
  const int64_t nsb = n / kQK_K, ub = kquant_unit_bytes(t), bb = dtype_info(t)->block_bytes;
  std::memset(group, 0, static_cast<size_t>(nsb * ub));  // padding rows: zero codes and scales
  for (int r = 0; r < nr; ++r) {
    for (int64_t s = 0; s < nsb; ++s) put_block(t, w + r * rb + s * bb, r, group + s * ub);
  }
}

// The row-dot references' formulas (matmul.cc dot_q45_K, dot_q6_K) over the layout, in the same order.
void dot_interleaved_kquant_ref(DType t, const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  const int64_t ub = kquant_unit_bytes(t);
  for (int r = 0; r < kInterleaveRows; ++r) {
    float s = 0;
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      const uint8_t* u = group + i * ub;
      uint16_t h[2];
      std::memcpy(&h[0], u + 2 * r, 2);
      std::memcpy(&h[1], u + 32 + 2 * r, 2);
      const float d = f16_to_f32(h[0]);
      const int16_t* xq = x.q16 + kQK_K * i;
      if (t == DType::kQ4_K) {
        const float dmin = f16_to_f32(h[1]);
        for (int j = 0; j < 8; ++j) {
          int sumi = 0;
          for (int l = 0; l < 32; ++l) sumi += unit_code(t, u, r, 32 * j + l) * xq[32 * j + l];
          const int64_t blk = 8 * i + j;
          s += d * u[kIlScales + 16 * j + r] * x.q16_d[blk] * static_cast<float>(sumi) -
               dmin * u[kIlMins + 16 * j + r] * x.q16_sums[blk];
        }
      } else {
        for (int j = 0; j < 16; ++j) {
          int sumi = 0;
          for (int l = 0; l < 16; ++l) sumi += (unit_code(t, u, r, 16 * j + l) - 32) * xq[16 * j + l];
          s += d * static_cast<int8_t>(u[kIlScales + 16 * j + r]) * x.q16_d[8 * i + j / 2] * static_cast<float>(sumi);
        }
      }
    }
    y[r] = s;
  }
}

#if defined(__x86_64__)
namespace {

// Per super-block: the sub-blocks' int32 sums to f32 times scale x the activation block's scale, summed, then times
// d (and the mins' term times dmin) once.
IL_VNNI_FN void dot_il_q4_K(const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const uint8_t* u = group + i * kquant_unit_bytes(DType::kQ4_K);
    __m512 accs = _mm512_setzero_ps(), accm = accs;
    for (int j = 0; j < 8; ++j) {
      const int64_t blk = 8 * i + j;
      const __m512i p = nibble_block_dot(u + il_low_word(DType::kQ4_K, 4 * j), x.q16 + 32 * blk);
      const __m512 sc = _mm512_cvtepi32_ps(
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + kIlScales + 16 * j))));
      const __m512 mn = _mm512_cvtepi32_ps(
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + kIlMins + 16 * j))));
      accs = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(sc, _mm512_set1_ps(x.q16_d[blk])), accs);
      accm = _mm512_fmadd_ps(mn, _mm512_set1_ps(x.q16_sums[blk]), accm);
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
    const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + 32)));
    acc = _mm512_fmadd_ps(d, accs, acc);
    acc = _mm512_fnmadd_ps(dmin, accm, acc);
  }
  _mm512_storeu_ps(y, acc);
}

// The signed codes (low 4 bits | top 2 bits << 4) - 32 of pair p (0..3) of low word v, whose top bits are pair
// 4 * half + p of high word hv, as int16 pairs.
template <int P, int Half>
IL_VNNI_FN inline __m512i q6_pair(__m512i v, __m512i hv) {
  constexpr int hp = 2 * (4 * Half + P);  // the top bits' position; wanted at 4
  const __m512i lo = _mm512_and_si512(_mm512_srli_epi32(v, 4 * P), _mm512_set1_epi32(0x000F000F));
  const __m512i hs = hp <= 4 ? _mm512_slli_epi32(hv, 4 - hp) : _mm512_srli_epi32(hv, hp - 4);
  const __m512i hi = _mm512_and_si512(hs, _mm512_set1_epi32(0x00300030));
  return _mm512_sub_epi16(_mm512_or_si512(lo, hi), _mm512_set1_epi16(32));
}

template <int Half>
IL_VNNI_FN inline __m512i q6_half_dot(__m512i acc, const uint8_t* c, __m512i hv, const int16_t* xp) {
  const __m512i v = _mm512_loadu_si512(c);
  acc = dp_pair(acc, q6_pair<0, Half>(v, hv), xp);
  acc = dp_pair(acc, q6_pair<1, Half>(v, hv), xp + 2);
  acc = dp_pair(acc, q6_pair<2, Half>(v, hv), xp + 4);
  return dp_pair(acc, q6_pair<3, Half>(v, hv), xp + 6);
}

IL_VNNI_FN void dot_il_q6_K(const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const uint8_t* u = group + i * kquant_unit_bytes(DType::kQ6_K);
    __m512 accs = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int j = 0; j < 16; ++j) {  // 16-column sub-block j: low words 2j, 2j + 1; high word j
      const __m512i hv = _mm512_loadu_si512(u + il_high_word(j));
      const int16_t* xp = x.q16 + kQK_K * i + 16 * j;
      const __m512i p0 = q6_half_dot<0>(_mm512_setzero_si512(), u + il_low_word(DType::kQ6_K, 2 * j), hv, xp);
      const __m512i p1 = q6_half_dot<1>(_mm512_setzero_si512(), u + il_low_word(DType::kQ6_K, 2 * j + 1), hv, xp + 8);
      const __m512 sc = _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u + kIlScales + 16 * j))));
      accs = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1)),
                             _mm512_mul_ps(sc, _mm512_set1_ps(x.q16_d[8 * i + j / 2])), accs);
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
    acc = _mm512_fmadd_ps(d, accs, acc);
  }
  _mm512_storeu_ps(y, acc);
}

}  // namespace

InterleavedDotFn interleaved_kquant_dot_kernel(DType t) {
  if (t == DType::kQ4_K) return dot_il_q4_K;
  if (t == DType::kQ6_K) return dot_il_q6_K;
  return nullptr;
}
#else
InterleavedDotFn interleaved_kquant_dot_kernel(DType) { return nullptr; }
#endif

}  // namespace citadel::cpu::detail
