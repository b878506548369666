// Prompt GEMM over q4_K / q5_K / q6_K rows with AVX-512 VNNI (matmul_kernels.h). The rows stay in their GGUF
// layout; per call, each group of 16 rows is unpacked once into a per-thread buffer that puts one row in each int32
// lane: per super-block, 64 vectors of signed byte codes (vector Q: elements 4Q, 4Q + 2, 4Q + 1, 4Q + 3 of every row,
// the byte order of the q8_0 interleaved layout, so two shifts give the int16 pairs (4Q, 4Q + 1) and (4Q + 2, 4Q + 3)),
// then the f32 sub-block scales d * sc (16 for q6_K; 8 for q4_K / q5_K, then their mins dmin * m). The token tiles of
// 16-bit activation codes (Q16Tiles, as the q4_0 / q8_0 GEMM) then meet the whole buffer: per int16 pair of codes one
// vpdpwssd per token against the token's pair broadcast to all lanes; per sub-block the int32 sums to f32 with the
// scale times the token's block scale, and the min term from the token's block sum. The integer sums per sub-block
// are those of the row-dot reference (matmul.cc dot_q45_K, dot_q6_K); only the f32 order differs. No horizontal
// sums: the 16 lanes are the 16 rows' outputs.
#include "kernels/cpu/amx_tiles.h"  // first: its diagnostic state covers <immintrin.h>

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#include "base/check.h"
#include "kernels/cpu/matmul_kernels.h"

namespace citadel::cpu::detail {

bool kquant_gemm_supported(DType t) { return t == DType::kQ4_K || t == DType::kQ5_K || t == DType::kQ6_K; }

#if defined(__x86_64__)
#define KQ_VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

namespace {

// Vectors of one super-block of a 16-row group in the unpacked buffer: 64 of codes, then 16 of f32 scales (q4_K /
// q5_K: 8 scales, 8 mins).
constexpr int kCodeVecs = kQK_K / 4, kSbVecs = kCodeVecs + 16;

// The int32 at byte offset off of each of the 16 rows (idx: the rows' byte offsets).
KQ_VNNI_FN inline __m512i gather(const uint8_t* w, __m512i idx, int off) {
  return _mm512_i32gather_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(off)), w, 1);
}
// f16 in the low 16 bits of each lane -> f32.
KQ_VNNI_FN inline __m512 half_lo(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }
KQ_VNNI_FN inline __m512i bits(__m512i v, int shift, int mask) {
  return _mm512_and_si512(_mm512_srli_epi32(v, shift), _mm512_set1_epi32(mask));
}
// Codes in element order (bytes 0..3 of a lane: elements 4Q .. 4Q + 3) -> the stored order 4Q, 4Q + 2, 4Q + 1, 4Q + 3.
KQ_VNNI_FN inline __m512i stored(__m512i v) {
  return _mm512_shuffle_epi8(v, _mm512_broadcast_i32x4(_mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14,
                                                                     13, 15)));
}

// One super-block of the 16 rows (w: the rows' block; idx: row byte offsets, rows past nr repeat the last) -> g
// [kSbVecs].
template <DType T>
KQ_VNNI_FN void unpack_superblock(const uint8_t* w, __m512i idx, __m512i* g) {
  __m512i* codes = g;
  __m512* scales = reinterpret_cast<__m512*>(g + kCodeVecs);
  const __m512i nib = _mm512_set1_epi32(0x0F0F0F0F);
  if constexpr (T == DType::kQ4_K || T == DType::kQ5_K) {
    const int qs = T == DType::kQ4_K ? 16 : 48;  // byte offset of qs in the block; q5_K: qh at 16
    __m512i qh[8];
    if constexpr (T == DType::kQ5_K) {
      for (int p = 0; p < 8; ++p) qh[p] = gather(w, idx, 16 + 4 * p);
    }
    // qs byte 32c + l: low nibble element 64c + l, high nibble 64c + 32 + l; qh byte l, bit j: element 32j + l.
    for (int c = 0; c < 4; ++c) {
      for (int p = 0; p < 8; ++p) {
        const __m512i v = gather(w, idx, qs + 32 * c + 4 * p);
        __m512i lo = _mm512_and_si512(v, nib), hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), nib);
        if constexpr (T == DType::kQ5_K) {
          const __m512i one = _mm512_set1_epi32(0x01010101);
          lo = _mm512_or_si512(lo, _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(qh[p], 2 * c), one), 4));
          hi = _mm512_or_si512(hi, _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(qh[p], 2 * c + 1), one), 4));
        }
        codes[16 * c + p] = stored(lo);
        codes[16 * c + 8 + p] = stored(hi);
      }
    }
    // The 12 scale bytes q[0..11] as three words (get_scale_min_k4): j < 4: sc = q[j] & 63, m = q[j + 4] & 63;
    // j >= 4: sc = q[j + 4] low nibble | top 2 bits of q[j - 4] << 4, m = q[j + 4] high nibble | top 2 of q[j] << 4.
    const __m512i s0 = gather(w, idx, 4), s1 = gather(w, idx, 8), s2 = gather(w, idx, 12);
    const __m512i dd = gather(w, idx, 0);  // d, dmin
    const __m512 d = half_lo(dd), dmin = half_lo(_mm512_srli_epi32(dd, 16));
    for (int j = 0; j < 8; ++j) {
      __m512i sc, m;
      if (j < 4) {
        sc = bits(s0, 8 * j, 63);
        m = bits(s1, 8 * j, 63);
      } else {
        const int k = j - 4;
        sc = _mm512_or_si512(bits(s2, 8 * k, 0xF), _mm512_slli_epi32(bits(s0, 8 * k + 6, 3), 4));
        m = _mm512_or_si512(bits(s2, 8 * k + 4, 0xF), _mm512_slli_epi32(bits(s1, 8 * k + 6, 3), 4));
      }
      scales[j] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));  // exact: 11 x 6 bits
      scales[8 + j] = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(m));
    }
  } else {
    // Per half h: ql byte 64h + l: low nibble element 128h + l, high 128h + 64 + l; qh byte 128 + 32h + l, bits 2g:
    // element 128h + 32g + l (the codes' top 2 bits). Code vector 32h + 8g + p: elements 128h + 32g + 4p ...
    const __m512i two = _mm512_set1_epi32(0x03030303), off = _mm512_set1_epi8(32);
    for (int h = 0; h < 2; ++h) {
      for (int p = 0; p < 8; ++p) {
        const __m512i l0 = gather(w, idx, 64 * h + 4 * p), l1 = gather(w, idx, 64 * h + 32 + 4 * p);
        const __m512i hb = gather(w, idx, 128 + 32 * h + 4 * p);
        const __m512i lo4[4] = {_mm512_and_si512(l0, nib), _mm512_and_si512(l1, nib),
                                _mm512_and_si512(_mm512_srli_epi32(l0, 4), nib),
                                _mm512_and_si512(_mm512_srli_epi32(l1, 4), nib)};
        for (int g2 = 0; g2 < 4; ++g2) {
          const __m512i hi2 = _mm512_and_si512(_mm512_srli_epi32(hb, 2 * g2), two);
          const __m512i q = _mm512_or_si512(lo4[g2], _mm512_slli_epi32(hi2, 4));
          codes[32 * h + 8 * g2 + p] = stored(_mm512_sub_epi8(q, off));
        }
      }
    }
    // 16 int8 scales at 192; d: bytes 208, 209 (the block's last: read as the high half of the word at 206).
    const __m512 d = half_lo(_mm512_srli_epi32(gather(w, idx, 206), 16));
    for (int i = 0; i < 4; ++i) {
      const __m512i v = gather(w, idx, 192 + 4 * i);
      for (int b = 0; b < 4; ++b) {
        const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * b), 24);
        scales[4 * i + b] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
      }
    }
  }
}

template <DType T>
KQ_VNNI_FN void unpack_group(const uint8_t* w, size_t rb, int nr, int64_t nsb, __m512i* g) {
  alignas(64) int32_t off[16];
  for (int r = 0; r < 16; ++r) off[r] = static_cast<int32_t>(std::min(r, nr - 1) * rb);
  const __m512i idx = _mm512_load_si512(off);
  const int64_t bb = T == DType::kQ4_K ? 144 : T == DType::kQ5_K ? 176 : 210;
  for (int64_t s = 0; s < nsb; ++s) unpack_superblock<T>(w + s * bb, idx, g + s * kSbVecs);
}

// One super-block unit of the interleaved layout (matmul_interleaved_kquant.cc: u at its d) -> g [kSbVecs], the same
// vectors unpack_superblock makes from the rows. Low word w (columns 8w .. 8w + 7, lane: pairs 4w + p, first codes at
// bits 4p, second at 16 + 4p) gives code vectors 2w (pairs 0, 1) and 2w + 1 (pairs 2, 3) in the stored byte order.
template <DType T>
KQ_VNNI_FN void unpack_superblock_il(const uint8_t* u, __m512i* g) {
  __m512i* codes = g;
  __m512* scales = reinterpret_cast<__m512*>(g + kCodeVecs);
  const __m512i m0 = _mm512_set1_epi32(0x000F000F), m1 = _mm512_set1_epi32(0x0F000F00);
  for (int w = 0; w < kCodeVecs / 2; ++w) {
    const __m512i v = _mm512_loadu_si512(u + il_low_word(T, w));
    __m512i q[2] = {_mm512_or_si512(_mm512_and_si512(v, m0), _mm512_and_si512(_mm512_slli_epi32(v, 4), m1)),
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(v, 8), m0),
                                    _mm512_and_si512(_mm512_srli_epi32(v, 4), m1))};
    if constexpr (T == DType::kQ6_K) {  // top 2 bits: high word w / 2, pairs 4 (w % 2) + 2h' .. at bits 2p, 16 + 2p
      const __m512i hv = _mm512_loadu_si512(u + il_high_word(w / 2));
      for (int k = 0; k < 2; ++k) {
        const __m512i t = _mm512_srli_epi32(hv, 2 * (2 * ((2 * w + k) % 4)));
        const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_slli_epi32(t, 4), _mm512_set1_epi32(0x00300030)),
                                           _mm512_and_si512(_mm512_slli_epi32(t, 10), _mm512_set1_epi32(0x30003000)));
        q[k] = _mm512_sub_epi8(_mm512_or_si512(q[k], hi), _mm512_set1_epi8(32));
      }
    }
    codes[2 * w] = q[0];
    codes[2 * w + 1] = q[1];
  }
  const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
  const auto bytes = [u](int64_t off) KQ_VNNI_FN {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(u + off));
  };
  if constexpr (T == DType::kQ6_K) {
    for (int j = 0; j < 16; ++j)
      scales[j] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes(kIlScales + 16 * j))));
  } else {
    const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + 32)));
    for (int j = 0; j < 8; ++j) {
      scales[j] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes(kIlScales + 16 * j))));
      scales[8 + j] = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes(kIlMins + 16 * j))));
    }
  }
}

// X(token, int32 accumulator, f32 accumulator) for each of the kQ16Tile tokens.
#define CITADEL_KQ_ACC(X) \
  X(0, i0, f0) X(1, i1, f1) X(2, i2, f2) X(3, i3, f3) X(4, i4, f4) X(5, i5, f5) \
  X(6, i6, f6) X(7, i7, f7) X(8, i8, f8) X(9, i9, f9) X(10, ia, fa) X(11, ib, fb)
// Code vectors V0 .. V1 - 1 of a block (4 codes, two int16 pairs each) into the int32 accumulators.
#define CITADEL_KQ_DP(m, iacc, facc) \
  if constexpr (M > m) iacc = _mm512_dpwssd_epi32(iacc, w_, _mm512_set1_epi32(x_[m]));
#define CITADEL_KQ_ZERO(m, iacc, facc) \
  if constexpr (M > m) iacc = _mm512_setzero_si512();
#define CITADEL_KQ_CODES(V0, V1)                                            \
  CITADEL_KQ_ACC(CITADEL_KQ_ZERO)                                           \
  _Pragma("GCC unroll 8") for (int v = (V0); v < (V1); ++v) {               \
    const __m512i c_ = _mm512_load_si512(codes + v);                         \
    {                                                                        \
      const __m512i w_ = _mm512_srai_epi16(_mm512_slli_epi16(c_, 8), 8);    \
      const int32_t* x_ = xb + (2 * v) * kQ16Tile;                          \
      CITADEL_KQ_ACC(CITADEL_KQ_DP)                                          \
    }                                                                        \
    {                                                                        \
      const __m512i w_ = _mm512_srai_epi16(c_, 8);                          \
      const int32_t* x_ = xb + (2 * v + 1) * kQ16Tile;                      \
      CITADEL_KQ_ACC(CITADEL_KQ_DP)                                          \
    }                                                                        \
  }
// f += (int32 sums) x scale x the token's block scale.
#define CITADEL_KQ_SCALE(m, iacc, facc) \
  if constexpr (M > m)                   \
    facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc), _mm512_mul_ps(sc_, _mm512_set1_ps(d_[m])), facc);
#define CITADEL_KQ_MIN(m, iacc, facc) \
  if constexpr (M > m) facc = _mm512_fnmadd_ps(mn_, _mm512_set1_ps(s_[m]), facc);

// M tokens (pairs xp [n / 2, kQ16Tile], block scales xd and sums xs [n / 32, kQ16Tile]) x the unpacked group g, nsb
// super-blocks. Named accumulators, as the q4_0 / q8_0 microkernel (an array was sometimes kept in memory by GCC).
template <DType T, int M>
KQ_VNNI_FN void kq_micro(const int32_t* group, int64_t nsb, const int32_t* xp, const float* xd, const float* xs,
                         float* y, int64_t ldy, __mmask16 mask) {
  static_assert(M >= 1 && M <= kQ16Tile && kQ16Tile == 12);
  const __m512i* g = reinterpret_cast<const __m512i*>(group);
  __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0, f8 = f0, f9 = f0,
         fa = f0, fb = f0;
  __m512i i0 = _mm512_setzero_si512(), i1 = i0, i2 = i0, i3 = i0, i4 = i0, i5 = i0, i6 = i0, i7 = i0, i8 = i0,
          i9 = i0, ia = i0, ib = i0;
  for (int64_t s = 0; s < nsb; ++s, g += kSbVecs) {
#pragma GCC unroll 1
    for (int b = 0; b < kQK_K / kQK; ++b) {  // activation block 8s + b: code vectors 8b .. 8b + 7
      const int64_t blk = 8 * s + b;
      const __m512i* codes = g + 8 * b;
      const int32_t* xb = xp + blk * (kQK / 2) * kQ16Tile;
      const float* d_ = xd + blk * kQ16Tile;
      const __m512* sc = reinterpret_cast<const __m512*>(g + kCodeVecs);
      if constexpr (T == DType::kQ6_K) {  // two 16-value sub-blocks, 2b and 2b + 1
        CITADEL_KQ_CODES(0, 4)
        {
          const __m512 sc_ = sc[2 * b];
          CITADEL_KQ_ACC(CITADEL_KQ_SCALE)
        }
        CITADEL_KQ_CODES(4, 8)
        {
          const __m512 sc_ = sc[2 * b + 1];
          CITADEL_KQ_ACC(CITADEL_KQ_SCALE)
        }
      } else {
        CITADEL_KQ_CODES(0, 8)
        const __m512 sc_ = sc[b], mn_ = sc[8 + b];
        const float* s_ = xs + blk * kQ16Tile;
        CITADEL_KQ_ACC(CITADEL_KQ_SCALE)
        CITADEL_KQ_ACC(CITADEL_KQ_MIN)
      }
    }
  }
#define CITADEL_KQ_STORE(m, iacc, facc) \
  if constexpr (M > m) _mm512_mask_storeu_ps(y + (m) * ldy, mask, facc);
  CITADEL_KQ_ACC(CITADEL_KQ_STORE)
#undef CITADEL_KQ_STORE
}
#undef CITADEL_KQ_MIN
#undef CITADEL_KQ_SCALE
#undef CITADEL_KQ_CODES
#undef CITADEL_KQ_ZERO
#undef CITADEL_KQ_DP
#undef CITADEL_KQ_ACC

using KqMicroFn = void (*)(const int32_t*, int64_t, const int32_t*, const float*, const float*, float*, int64_t,
                           __mmask16);

template <DType T, int... Ms>
constexpr std::array<KqMicroFn, kQ16Tile + 1> kq_micro_table(std::integer_sequence<int, Ms...>) {
  return {nullptr, &kq_micro<T, Ms + 1>...};
}

struct alignas(64) Vec { int32_t lanes[16]; };

// This thread's buffer for one group of n columns, unpacked: [n / 256 * kSbVecs].
__m512i* unpack_buffer(int64_t n) {
  thread_local std::vector<Vec> buf;
  buf.resize(static_cast<size_t>(n / kQK_K * kSbVecs));
  return reinterpret_cast<__m512i*>(buf.data());
}

// The unpacked group g (nr rows real) times every token of x.
KQ_VNNI_FN void gemm_unpacked(DType t, const __m512i* g, int nr, const Q16Tiles& x, float* y, int64_t ldy) {
  static constexpr auto k4 = kq_micro_table<DType::kQ4_K>(std::make_integer_sequence<int, kQ16Tile>());
  static constexpr auto k6 = kq_micro_table<DType::kQ6_K>(std::make_integer_sequence<int, kQ16Tile>());
  const int64_t nsb = x.n / kQK_K, nb = x.n / kQK;
  const auto& micro = t == DType::kQ6_K ? k6 : k4;  // q5_K's unpacked form is q4_K's
  const __mmask16 mask = static_cast<__mmask16>((1u << nr) - 1);
  for (int64_t i = 0; i * kQ16Tile < x.n_tokens; ++i) {
    const auto [t0, m] = balanced_tile(x.n_tokens, kQ16Tile, i);
    micro[m](reinterpret_cast<const int32_t*>(g), nsb, x.pairs.data() + i * (x.n / 2) * kQ16Tile,
             x.d.data() + i * nb * kQ16Tile, x.sums.data() + i * nb * kQ16Tile, y + t0 * ldy, ldy, mask);
  }
}

// The AMX twin of gemm_unpacked: per 32-column block the tile sums against the block's 8 code vectors (q6_K: per
// 16-column sub-block against 4), then kq_micro's f32 steps in its order.
AMX_FN void gemm_unpacked_amx(DType t, const __m512i* g, int nr, const AmxTiles& x, float* y, int64_t ldy) {
  const int64_t nsb = x.n / kQK_K, nb = x.n / kQK;
  amx_ensure_config();
  alignas(64) int32_t clo[kAmxTile * kInterleaveRows], chi[kAmxTile * kInterleaveRows];
  const __mmask16 mask = static_cast<__mmask16>((1u << nr) - 1);
  for (int64_t ti = 0; ti * kAmxTile < x.n_tokens; ++ti) {
    AMX_DECLARE_ACC;
    const uint8_t* a = x.codes.data() + ti * nb * 2 * kAmxTile * kQK;
    const float* xd_ = x.d.data() + ti * nb * kAmxTile;
    const float* xs_ = x.sums.data() + ti * nb * kAmxTile;
    for (int64_t s = 0; s < nsb; ++s) {
      const __m512i* sb = g + s * kSbVecs;
      const __m512* sc = reinterpret_cast<const __m512*>(sb + kCodeVecs);
      for (int b = 0; b < kQK_K / kQK; ++b, a += 2 * kAmxTile * kQK, xd_ += kAmxTile, xs_ += kAmxTile) {
        const __m512i* codes = sb + 8 * b;
        if (t == DType::kQ6_K) {  // two 16-value sub-blocks, 2b and 2b + 1
          AMX_HALF_SUMS(a, codes, clo, chi);
          {
            const __m512 sc_ = sc[2 * b];
            AMX_ROWS(AMX_SCALE_ROW)
          }
          AMX_HALF_SUMS(a + kQK / 2, codes + 4, clo, chi);
          {
            const __m512 sc_ = sc[2 * b + 1];
            AMX_ROWS(AMX_SCALE_ROW)
          }
        } else {
          AMX_BLOCK_SUMS(a, codes, clo, chi);
          const __m512 sc_ = sc[b], mn_ = sc[8 + b];
          AMX_ROWS(AMX_SCALE_ROW)
          AMX_ROWS(AMX_MIN_ROW)
        }
      }
    }
    AMX_STORE_ROWS(y + ti * kAmxTile * ldy, ldy, std::min<int64_t>(kAmxTile, x.n_tokens - ti * kAmxTile), mask)
  }
}

// The rows' group (nr of them) or an interleaved group, unpacked into this thread's buffer.
KQ_VNNI_FN const __m512i* unpack_rows(DType t, const uint8_t* w, size_t rb, int nr, int64_t n) {
  CHECK(kquant_gemm_supported(t) && nr >= 1 && nr <= 16);
  const int64_t nsb = n / kQK_K;
  __m512i* group = unpack_buffer(n);
  if (t == DType::kQ4_K) unpack_group<DType::kQ4_K>(w, rb, nr, nsb, group);
  if (t == DType::kQ5_K) unpack_group<DType::kQ5_K>(w, rb, nr, nsb, group);
  if (t == DType::kQ6_K) unpack_group<DType::kQ6_K>(w, rb, nr, nsb, group);
  return group;
}
KQ_VNNI_FN const __m512i* unpack_il(DType t, const uint8_t* il, int nr, int64_t n) {
  CHECK(kquant_interleave_supported(t) && nr >= 1 && nr <= 16);
  const int64_t nsb = n / kQK_K, ub = kquant_unit_bytes(t);
  __m512i* group = unpack_buffer(n);
  for (int64_t s = 0; s < nsb; ++s) {
    if (t == DType::kQ4_K) unpack_superblock_il<DType::kQ4_K>(il + s * ub, group + s * kSbVecs);
    if (t == DType::kQ6_K) unpack_superblock_il<DType::kQ6_K>(il + s * ub, group + s * kSbVecs);
  }
  return group;
}

}  // namespace

void gemm_kquant_avx512(DType t, const uint8_t* w, size_t rb, int nr, const Q16Tiles& x, float* y, int64_t ldy) {
  gemm_unpacked(t, unpack_rows(t, w, rb, nr, x.n), nr, x, y, ldy);
}
void gemm_kquant_il_avx512(DType t, const uint8_t* il, int nr, const Q16Tiles& x, float* y, int64_t ldy) {
  gemm_unpacked(t, unpack_il(t, il, nr, x.n), nr, x, y, ldy);
}
void gemm_kquant_amx(DType t, const uint8_t* w, size_t rb, int nr, const AmxTiles& x, float* y, int64_t ldy) {
  gemm_unpacked_amx(t, unpack_rows(t, w, rb, nr, x.n), nr, x, y, ldy);
}
void gemm_kquant_il_amx(DType t, const uint8_t* il, int nr, const AmxTiles& x, float* y, int64_t ldy) {
  gemm_unpacked_amx(t, unpack_il(t, il, nr, x.n), nr, x, y, ldy);
}
#else
void gemm_kquant_avx512(DType, const uint8_t*, size_t, int, const Q16Tiles&, float*, int64_t) {
  CHECK(false) << "gemm_kquant_avx512 without x86";
}
void gemm_kquant_il_avx512(DType, const uint8_t*, int, const Q16Tiles&, float*, int64_t) {
  CHECK(false) << "gemm_kquant_il_avx512 without x86";
}
void gemm_kquant_amx(DType, const uint8_t*, size_t, int, const AmxTiles&, float*, int64_t) { CHECK(false); }
void gemm_kquant_il_amx(DType, const uint8_t*, int, const AmxTiles&, float*, int64_t) { CHECK(false); }
#endif

}  // namespace citadel::cpu::detail
