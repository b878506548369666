// Decode kernels over 16-row interleaved q4_0 / q8_0 weights (layout in kernels/ops.h, interleave_weights), with the
// 16-bit activation codes of the row-dot kernels (ActFormat::kQ16). One zmm lane per weight row: per activation pair
// (x[2k], x[2k+1]), broadcast to all lanes, one vpdpwssd adds w[r][2k] x[2k] + w[r][2k+1] x[2k+1] for 16 rows at
// once, so a block needs no horizontal sums and its scales are one 16-wide multiply. The row-dot kernels spend most
// of their instructions on those per-row, per-block reductions and scalar scales.
#include "kernels/cpu/vnni_dot.h"  // first: its diagnostic state covers <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "base/check.h"
#include "base/half.h"
#include "base/thread_pool.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"

namespace citadel::cpu {

bool interleave_supported(DType t) {
  return t == DType::kQ4_0 || t == DType::kQ8_0 || detail::kquant_interleave_supported(t);
}

namespace {

int64_t codes_bytes(DType t) { return detail::il_codes_bytes(t); }
// A group is a run of units of two block columns: 64 bytes of scales (16 f16 for each column), then the two columns'
// codes; with an odd block count the last unit has one column (its second 32 bytes of scales are zero). Every
// 64-byte word of codes stays 64-byte aligned when the group is, and the group is read front to back.
int64_t group_bytes(DType t, int64_t nb) { return (nb + 1) / 2 * 64 + nb * codes_bytes(t); }
using detail::il_col_codes;
using detail::il_col_scales;

// Code j (0..31) of a q4_0 / q8_0 block: q4_0 unsigned 0..15, q8_0 signed.
int code_of(DType t, const uint8_t* block, int j) {
  if (t == DType::kQ4_0) {
    const uint8_t* qs = block + 2;
    return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
  }
  return static_cast<int8_t>(block[2 + j]);
}

// Where code j of lane (row) r of block column i lives: byte offset within the column's codes and bit shift.
// q4_0: 4 zmm words, word w = j / 8 holds pairs k = 4w + p (p = 0..3); the pair's first code at bits 4p, second at
// 16 + 4p. q8_0: 8 words, word w = j / 4 holds codes 4w, 4w + 2, 4w + 1, 4w + 3 in its bytes 0..3.
void code_place(DType t, int r, int j, int* byte, int* shift) {
  if (t == DType::kQ4_0) {
    const int k = j / 2, w = k / 4, p = k % 4;
    const int bit = (j % 2 ? 16 : 0) + 4 * p;
    *byte = 64 * w + 4 * r + bit / 8;
    *shift = bit % 8;
  } else {
    static constexpr int kByteOf[4] = {0, 2, 1, 3};
    *byte = 64 * (j / 4) + 4 * r + kByteOf[j % 4];
    *shift = 0;
  }
}

}  // namespace

Status interleave_weights(const WeightView& w, uint8_t* out) {
  const size_t bytes = interleaved_bytes(w.dtype, w.rows, w.cols);
  if (bytes == 0) return InvalidArgument(std::string("interleave_weights: ") + dtype_name(w.dtype) + " [" +
                                         std::to_string(w.rows) + ", " + std::to_string(w.cols) + "] has no layout");
  const size_t rb = w.row_bytes();
  const uint8_t* src = static_cast<const uint8_t*>(w.data);
  const int64_t n_groups = (w.rows + kInterleaveRows - 1) / kInterleaveRows;
  if (detail::kquant_interleave_supported(w.dtype)) {
    const size_t gb = detail::kquant_group_bytes(w.dtype, w.cols);
    ThreadPool::current().parallel_for(n_groups, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        const int nr = static_cast<int>(std::min<int64_t>(kInterleaveRows, w.rows - g * kInterleaveRows));
        detail::interleave_kquant_group(w.dtype, src + g * kInterleaveRows * rb, rb, nr, w.cols, out + g * gb);
      }
    });
    return OkStatus();
  }
  std::memset(out, 0, bytes);  // padding rows: zero codes and scales
  const int64_t nb = w.cols / kQK, cb = codes_bytes(w.dtype), bb = dtype_info(w.dtype)->block_bytes;
  const int64_t gb = group_bytes(w.dtype, nb);
  const int code_mask = w.dtype == DType::kQ4_0 ? 0xF : 0xFF;
  ThreadPool::current().parallel_for(n_groups, [&](int64_t g0, int64_t g1) {
    for (int64_t row = g0 * kInterleaveRows; row < std::min(w.rows, g1 * kInterleaveRows); ++row) {
      const int r = static_cast<int>(row % kInterleaveRows);
      uint8_t* group = out + row / kInterleaveRows * gb;
      for (int64_t i = 0; i < nb; ++i) {
        const uint8_t* block = src + row * rb + i * bb;
        std::memcpy(group + il_col_scales(i, cb) + 2 * r, block, 2);
        int q[kQK];
        for (int j = 0; j < kQK; ++j) q[j] = code_of(w.dtype, block, j) & code_mask;
        // One 4-byte lane per word (code_place's layout, a word at a time).
        for (int64_t wd = 0; wd < cb / 64; ++wd) {
          uint32_t lane = 0;
          if (w.dtype == DType::kQ4_0) {  // pairs 4wd + p: codes at bits 4p and 16 + 4p
            for (int p = 0; p < 4; ++p)
              lane |= static_cast<uint32_t>(q[8 * wd + 2 * p]) << (4 * p) |
                      static_cast<uint32_t>(q[8 * wd + 2 * p + 1]) << (16 + 4 * p);
          } else {  // bytes 0..3: codes 4wd, 4wd + 2, 4wd + 1, 4wd + 3
            lane = static_cast<uint32_t>(q[4 * wd]) | static_cast<uint32_t>(q[4 * wd + 2]) << 8 |
                   static_cast<uint32_t>(q[4 * wd + 1]) << 16 | static_cast<uint32_t>(q[4 * wd + 3]) << 24;
          }
          std::memcpy(group + il_col_codes(i, cb) + 64 * wd + 4 * r, &lane, 4);
        }
      }
    }
  });
  return OkStatus();
}

size_t interleaved_bytes(DType t, int64_t rows, int64_t cols) {
  if (rows <= 0) return 0;
  return static_cast<size_t>((rows + kInterleaveRows - 1) / kInterleaveRows) * interleaved_group_bytes(t, cols);
}

size_t interleaved_group_bytes(DType t, int64_t cols) {
  if (detail::kquant_interleave_supported(t)) return detail::kquant_group_bytes(t, cols);
  return cols > 0 && cols % kQK == 0 && interleave_supported(t) ? static_cast<size_t>(group_bytes(t, cols / kQK)) : 0;
}

namespace detail {

void dot_interleaved_ref(DType t, const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  if (kquant_interleave_supported(t)) return dot_interleaved_kquant_ref(t, group, x, n, y);
  const int64_t nb = n / kQK, cb = codes_bytes(t);
  for (int r = 0; r < kInterleaveRows; ++r) {
    float s = 0;
    for (int64_t i = 0; i < nb; ++i) {
      int sumi = 0;
      for (int j = 0; j < kQK; ++j) {
        int byte, shift;
        code_place(t, r, j, &byte, &shift);
        const uint8_t b = group[il_col_codes(i, cb) + byte];
        const int q = t == DType::kQ4_0 ? ((b >> shift) & 0xF) - 8 : static_cast<int8_t>(b);
        sumi += q * x.q16[32 * i + j];
      }
      uint16_t h;
      std::memcpy(&h, group + il_col_scales(i, cb) + 2 * r, 2);
      s += f16_to_f32(h) * x.q16_d[i] * static_cast<float>(sumi);
    }
    y[r] = s;
  }
}

void dequantize_group_ref(DType t, const uint8_t* group, int64_t n, float* panel) {
  const int64_t cb = codes_bytes(t);
  for (int64_t i = 0; i < n / kQK; ++i) {
    for (int r = 0; r < kInterleaveRows; ++r) {
      uint16_t h;
      std::memcpy(&h, group + il_col_scales(i, cb) + 2 * r, 2);
      const float d = f16_to_f32(h);
      for (int j = 0; j < kQK; ++j) {
        int byte, shift;
        code_place(t, r, j, &byte, &shift);
        const uint8_t b = group[il_col_codes(i, cb) + byte];
        const int q = t == DType::kQ4_0 ? ((b >> shift) & 0xF) - 8 : static_cast<int8_t>(b);
        panel[(kQK * i + j) * kInterleaveRows + r] = static_cast<float>(q) * d;
      }
    }
  }
}

void pack_q16_tiles(const int16_t* q16, const float* d, const float* sums, int64_t n_tokens, int64_t n,
                    Q16Tiles* out) {
  const int64_t nb = n / kQK, tiles = (n_tokens + kQ16Tile - 1) / kQ16Tile;
  out->n_tokens = n_tokens;
  out->n = n;
  out->pairs.resize(static_cast<size_t>(tiles * (n / 2) * kQ16Tile));
  out->d.resize(static_cast<size_t>(tiles * nb * kQ16Tile));
  out->sums.resize(static_cast<size_t>(tiles * nb * kQ16Tile));
  ThreadPool::current().parallel_for(tiles, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const auto [t0, m] = balanced_tile(n_tokens, kQ16Tile, i);
      int32_t* pairs = out->pairs.data() + i * (n / 2) * kQ16Tile;
      float* dt = out->d.data() + i * nb * kQ16Tile;
      float* st = out->sums.data() + i * nb * kQ16Tile;
      for (int tm = 0; tm < m; ++tm) {
        const int16_t* q = q16 + (t0 + tm) * n;
        for (int64_t k = 0; k < n / 2; ++k)
          pairs[k * kQ16Tile + tm] = static_cast<int32_t>(static_cast<uint16_t>(q[2 * k]) |
                                                          static_cast<uint32_t>(static_cast<uint16_t>(q[2 * k + 1])) << 16);
        for (int64_t b = 0; b < nb; ++b) {
          dt[b * kQ16Tile + tm] = d[(t0 + tm) * nb + b];
          st[b * kQ16Tile + tm] = sums[(t0 + tm) * nb + b];
        }
      }
    }
  });
}

#if defined(__x86_64__)
namespace {

// Block column i's 16 row scales (f16 in the group) as f32.
IL_VNNI_FN inline __m512 column_scales(const uint8_t* group, int64_t i, int64_t cb) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + il_col_scales(i, cb))));
}

// One block column of 16 rows: sum(q_w * q_x) per row (q4_0 codes still unsigned 0..15).
template <DType T>
IL_VNNI_FN inline __m512i column_dot(const uint8_t* c, const int16_t* xq) {
  if constexpr (T == DType::kQ4_0) {
    return nibble_block_dot(c, xq);
  } else {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    __m512i* s[4] = {&s0, &s1, &s2, &s3};
    for (int w = 0; w < 8; ++w) {
      const __m512i v = _mm512_loadu_si512(c + 64 * w);
      const int16_t* xp = xq + 4 * w;  // codes 4w .. 4w + 3
      *s[w % 4] = dp_pair(*s[w % 4], _mm512_srai_epi16(_mm512_slli_epi16(v, 8), 8), xp);
      *s[w % 4] = dp_pair(*s[w % 4], _mm512_srai_epi16(v, 8), xp + 2);
    }
    return _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3));
  }
}

template <DType T>
IL_VNNI_FN void dot_il(const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  const int64_t nb = n / kQK, cb = codes_bytes(T);
  __m512 acc = _mm512_setzero_ps(), accm = acc;
  for (int64_t i = 0; i < nb; ++i) {
    const __m512i p = column_dot<T>(group + il_col_codes(i, cb), x.q16 + 32 * i);
    const __m512 dw = column_scales(group, i, cb);
    acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x.q16_d[i])), _mm512_cvtepi32_ps(p), acc);
    if constexpr (T == DType::kQ4_0) accm = _mm512_fmadd_ps(dw, _mm512_set1_ps(x.q16_sums[i]), accm);
  }
  if constexpr (T == DType::kQ4_0) acc = _mm512_fnmadd_ps(_mm512_set1_ps(8.0f), accm, acc);
  _mm512_storeu_ps(y, acc);
}

}  // namespace

// panel row = codes q (int32 lanes) x scales d. A function, not a lambda: a lambda would not inherit IL_VNNI_FN's
// target, and without -march=native its AVX-512 intrinsics would not compile.
IL_VNNI_FN inline void put_panel_row(float* row, __m512i q, __m512 d) {
  _mm512_storeu_ps(row, _mm512_mul_ps(_mm512_cvtepi32_ps(q), d));
}

// Each 64-byte word of codes gives, per code position, one 16-lane vector over the rows: a panel row, stored whole.
IL_VNNI_FN void dequantize_group_avx512(DType t, const uint8_t* group, int64_t n, float* panel) {
  const int64_t cb = codes_bytes(t);
  for (int64_t i = 0; i < n / kQK; ++i, panel += kQK * kInterleaveRows) {
    const __m512 d = column_scales(group, i, cb);
    const uint8_t* c = group + il_col_codes(i, cb);
    auto put = [&](int j, __m512i q) IL_VNNI_FN { put_panel_row(panel + j * kInterleaveRows, q, d); };
    if (t == DType::kQ4_0) {
      const __m512i m = _mm512_set1_epi32(0xF), eight = _mm512_set1_epi32(8);
      for (int w = 0; w < 4; ++w) {
        const __m512i v = _mm512_loadu_si512(c + 64 * w);
        for (int p = 0; p < 4; ++p) {  // pair k = 4w + p: codes 2k (bits 4p) and 2k + 1 (bits 16 + 4p)
          const int k = 4 * w + p;
          put(2 * k, _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32(v, 4 * p), m), eight));
          put(2 * k + 1, _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32(v, 16 + 4 * p), m), eight));
        }
      }
    } else {
      for (int w = 0; w < 8; ++w) {  // bytes 0..3: codes 4w, 4w + 2, 4w + 1, 4w + 3
        const __m512i v = _mm512_loadu_si512(c + 64 * w);
        put(4 * w, _mm512_srai_epi32(_mm512_slli_epi32(v, 24), 24));
        put(4 * w + 2, _mm512_srai_epi32(_mm512_slli_epi32(v, 16), 24));
        put(4 * w + 1, _mm512_srai_epi32(_mm512_slli_epi32(v, 8), 24));
        put(4 * w + 3, _mm512_srai_epi32(v, 24));
      }
    }
  }
}

namespace {

// X(token, int32 block accumulator, f32 accumulator) for each of the tile's kQ16Tile tokens.
#define CITADEL_Q16_ACC(X) \
  X(0, i0, f0) X(1, i1, f1) X(2, i2, f2) X(3, i3, f3) X(4, i4, f4) X(5, i5, f5) \
  X(6, i6, f6) X(7, i7, f7) X(8, i8, f8) X(9, i9, f9) X(10, ia, fa) X(11, ib, fb)
// One activation pair step: the weight vector W (16 rows' codes 2k, 2k + 1 as int16 pairs) times pair KK of every
// token of the tile (xb: the block's first pair entry).
#define CITADEL_Q16_DP(m, iacc, facc) \
  if constexpr (M > m) iacc = _mm512_dpwssd_epi32(iacc, w_, _mm512_set1_epi32(x_[m]));
#define CITADEL_Q16_STEP(W, KK)                     \
  {                                                 \
    const __m512i w_ = (W);                         \
    const int32_t* x_ = xb + (KK) * kQ16Tile;       \
    CITADEL_Q16_ACC(CITADEL_Q16_DP)                 \
  }

constexpr int kPrefetchBlocks = 2;

// M tokens (packed pairs xp [n / 2, kQ16Tile], scales xd [n / 32, kQ16Tile]) x one group of 16 rows. Named
// accumulators, as the packed GEMM's microkernels (an array was sometimes kept in memory by GCC).
template <DType T, int M>
IL_VNNI_FN void q16_micro(const uint8_t* group, int64_t nb, const int32_t* xp, const float* xd, float* y, int64_t ldy,
                          __mmask16 mask) {
  static_assert(M >= 1 && M <= kQ16Tile);
  const int64_t cb = codes_bytes(T);
  __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0, f8 = f0, f9 = f0,
         fa = f0, fb = f0;
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* c = group + il_col_codes(i, cb);
    const int32_t* xb = xp + i * (kQK / 2) * kQ16Tile;
    {
      const char* pa = reinterpret_cast<const char*>(xb + kPrefetchBlocks * (kQK / 2) * kQ16Tile);
      for (int l = 0; l < (kQK / 2) * kQ16Tile * 4; l += 64) _mm_prefetch(pa + l, _MM_HINT_T0);
      const char* pw = reinterpret_cast<const char*>(group + il_col_codes(i + kPrefetchBlocks, cb));
      for (int l = 0; l < cb; l += 64) _mm_prefetch(pw + l, _MM_HINT_T0);
    }
    __m512i i0 = _mm512_setzero_si512(), i1 = i0, i2 = i0, i3 = i0, i4 = i0, i5 = i0, i6 = i0, i7 = i0, i8 = i0,
            i9 = i0, ia = i0, ib = i0;
    if constexpr (T == DType::kQ4_0) {  // word w: pairs 4w + p at bits 4p (code 2k) and 16 + 4p (code 2k + 1)
      const __m512i m4 = _mm512_set1_epi32(0x000F000F), eight = _mm512_set1_epi16(8);
#pragma GCC unroll 4
      for (int w = 0; w < 4; ++w) {
        const __m512i v = _mm512_loadu_si512(c + 64 * w);
        CITADEL_Q16_STEP(_mm512_sub_epi16(_mm512_and_si512(v, m4), eight), 4 * w)
        CITADEL_Q16_STEP(_mm512_sub_epi16(_mm512_and_si512(_mm512_srli_epi32(v, 4), m4), eight), 4 * w + 1)
        CITADEL_Q16_STEP(_mm512_sub_epi16(_mm512_and_si512(_mm512_srli_epi32(v, 8), m4), eight), 4 * w + 2)
        CITADEL_Q16_STEP(_mm512_sub_epi16(_mm512_and_si512(_mm512_srli_epi32(v, 12), m4), eight), 4 * w + 3)
      }
    } else {  // word w: bytes 0..3 of a lane are codes 4w, 4w + 2, 4w + 1, 4w + 3
#pragma GCC unroll 8
      for (int w = 0; w < 8; ++w) {
        const __m512i v = _mm512_loadu_si512(c + 64 * w);
        CITADEL_Q16_STEP(_mm512_srai_epi16(_mm512_slli_epi16(v, 8), 8), 2 * w)
        CITADEL_Q16_STEP(_mm512_srai_epi16(v, 8), 2 * w + 1)
      }
    }
    const __m512 dw = column_scales(group, i, cb);
    const float* d_ = xd + i * kQ16Tile;
#define CITADEL_Q16_SCALE(m, iacc, facc) \
    if constexpr (M > m) facc = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(d_[m])), _mm512_cvtepi32_ps(iacc), facc);
    CITADEL_Q16_ACC(CITADEL_Q16_SCALE)
#undef CITADEL_Q16_SCALE
  }
#define CITADEL_Q16_STORE(m, iacc, facc) \
  if constexpr (M > m) _mm512_mask_storeu_ps(y + (m) * ldy, mask, facc);
  CITADEL_Q16_ACC(CITADEL_Q16_STORE)
#undef CITADEL_Q16_STORE
}
#undef CITADEL_Q16_STEP
#undef CITADEL_Q16_DP
#undef CITADEL_Q16_ACC

using Q16MicroFn = void (*)(const uint8_t*, int64_t, const int32_t*, const float*, float*, int64_t, __mmask16);

template <DType T, int... Ms>
constexpr std::array<Q16MicroFn, kQ16Tile + 1> q16_micro_table(std::integer_sequence<int, Ms...>) {
  return {nullptr, &q16_micro<T, Ms + 1>...};
}

}  // namespace

void gemm_interleaved_avx512(DType t, const uint8_t* group, const Q16Tiles& x, int nr, float* y, int64_t ldy) {
  static constexpr auto kQ4 = q16_micro_table<DType::kQ4_0>(std::make_integer_sequence<int, kQ16Tile>());
  static constexpr auto kQ8 = q16_micro_table<DType::kQ8_0>(std::make_integer_sequence<int, kQ16Tile>());
  const auto& micro = t == DType::kQ4_0 ? kQ4 : kQ8;
  const int64_t nb = x.n / kQK;
  const __mmask16 mask = static_cast<__mmask16>((1u << nr) - 1);
  for (int64_t i = 0; i * kQ16Tile < x.n_tokens; ++i) {
    const auto [t0, m] = balanced_tile(x.n_tokens, kQ16Tile, i);
    micro[m](group, nb, x.pairs.data() + i * (x.n / 2) * kQ16Tile, x.d.data() + i * nb * kQ16Tile, y + t0 * ldy, ldy,
             mask);
  }
}

// Per block column i: the 16 rows' d (f16) and 32 codes from gathers at the rows' block i (qh at 2, qs at 6): word
// w < 4 holds elements 4w .. 4w + 3 (low nibbles of qs dword w), w >= 4 elements 4w .. (high nibbles of dword w - 4);
// the fifth bits of a word's 4 elements (qh >> 4w, bits 0..3) spread to bit 4 of each byte by one multiply (bit b to
// bit 8b: the shifted copies never overlap), then -16 per byte and bytes 1, 2 of each lane swapped (code_place's
// order 4w, 4w + 2, 4w + 1, 4w + 3).
IL_VNNI_FN void repack_q5_0_group_avx512(const uint8_t* w, size_t rb, int nr, int64_t n, uint8_t* group) {
  constexpr int64_t cb = 512;  // codes_bytes(kQ8_0)
  alignas(64) int32_t off[kInterleaveRows];
  for (int r = 0; r < kInterleaveRows; ++r) off[r] = static_cast<int32_t>(std::min(r, nr - 1) * rb);
  const __m512i nib = _mm512_set1_epi32(0x0F0F0F0F), sixteen = _mm512_set1_epi8(16);
  const __m512i swap12 = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15));
  const int64_t nb = n / kQK;
  if (nb % 2) std::memset(group + il_col_scales(nb - 1, cb) + 32, 0, 32);  // an odd count's unused scales
  for (int64_t i = 0; i < nb; ++i) {
    const __m512i idx = _mm512_add_epi32(_mm512_load_si512(off), _mm512_set1_epi32(static_cast<int>(i * 22)));
    const auto at = [&](int o) IL_VNNI_FN {
      return _mm512_i32gather_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(o)), w, 1);
    };
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(group + il_col_scales(i, cb)), _mm512_cvtepi32_epi16(at(0)));
    const __m512i qh = at(2);
    uint8_t* c = group + il_col_codes(i, cb);
    for (int p = 0; p < 4; ++p) {
      const __m512i qs = at(6 + 4 * p);
      for (int hi = 0; hi < 2; ++hi) {
        const int wd = p + 4 * hi;
        const __m512i lo4 = hi ? _mm512_and_si512(_mm512_srli_epi32(qs, 4), nib) : _mm512_and_si512(qs, nib);
        const __m512i b4 = _mm512_and_si512(_mm512_srli_epi32(qh, 4 * wd), _mm512_set1_epi32(0xF));
        const __m512i fifth = _mm512_slli_epi32(
            _mm512_and_si512(_mm512_mullo_epi32(b4, _mm512_set1_epi32(0x00204081)), _mm512_set1_epi32(0x01010101)), 4);
        const __m512i v = _mm512_sub_epi8(_mm512_or_si512(lo4, fifth), sixteen);
        _mm512_storeu_si512(c + 64 * wd, _mm512_shuffle_epi8(v, swap12));
      }
    }
  }
}

InterleavedDotFn interleaved_dot_kernel(DType t) {
  if (t == DType::kQ4_0) return dot_il<DType::kQ4_0>;
  if (t == DType::kQ8_0) return dot_il<DType::kQ8_0>;
  return interleaved_kquant_dot_kernel(t);
}
#else
InterleavedDotFn interleaved_dot_kernel(DType t) { return interleaved_kquant_dot_kernel(t); }
void gemm_interleaved_avx512(DType t, const uint8_t* group, const Q16Tiles& x, int nr, float* y, int64_t ldy) {
  CHECK(false) << "gemm_interleaved_avx512 without x86";
}
void dequantize_group_avx512(DType t, const uint8_t* group, int64_t n, float* panel) {
  dequantize_group_ref(t, group, n, panel);
}
void repack_q5_0_group_avx512(const uint8_t*, size_t, int, int64_t, uint8_t*) {
  CHECK(false) << "repack_q5_0_group_avx512 without x86";
}
#endif

}  // namespace detail
}  // namespace citadel::cpu
