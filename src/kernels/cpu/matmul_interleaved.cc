// Decode kernels over 16-row interleaved q4_0 / q8_0 weights (layout in kernels/ops.h, interleave_weights), with the
// 16-bit activation codes of the row-dot kernels (ActFormat::kQ16). One zmm lane per weight row: per activation pair
// (x[2k], x[2k+1]), broadcast to all lanes, one vpdpwssd adds w[r][2k] x[2k] + w[r][2k+1] x[2k+1] for 16 rows at
// once, so a block needs no horizontal sums and its scales are one 16-wide multiply. The row-dot kernels spend most
// of their instructions on those per-row, per-block reductions and scalar scales.
#if defined(__x86_64__)
// GCC 12's AVX-512 intrinsics pass an _mm512_undefined_*() operand that -Wuninitialized reports at every inlined
// use; the state applies to the header's lines, included first here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>

#include "base/half.h"
#include "base/thread_pool.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/ops.h"

namespace citadel::cpu {

bool interleave_supported(DType t) { return t == DType::kQ4_0 || t == DType::kQ8_0; }

namespace {

// Bytes of one block column's codes (16 rows x 32 codes) in a group.
int64_t codes_bytes(DType t) { return t == DType::kQ4_0 ? 256 : 512; }

// A group is a run of units of two block columns: 64 bytes of scales (16 f16 for each column), then the two columns'
// codes; with an odd block count the last unit has one column (its second 32 bytes of scales are zero). Every
// 64-byte word of codes stays 64-byte aligned when the group is, and the group is read front to back.
int64_t group_bytes(DType t, int64_t nb) { return (nb + 1) / 2 * 64 + nb * codes_bytes(t); }
int64_t col_scales(int64_t i, int64_t cb) { return i / 2 * (64 + 2 * cb) + 32 * (i % 2); }
int64_t col_codes(int64_t i, int64_t cb) { return i / 2 * (64 + 2 * cb) + 64 + (i % 2) * cb; }

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
  std::memset(out, 0, bytes);  // padding rows: zero codes and scales
  const int64_t nb = w.cols / kQK, cb = codes_bytes(w.dtype), bb = dtype_info(w.dtype)->block_bytes;
  const int64_t gb = group_bytes(w.dtype, nb), n_groups = (w.rows + kInterleaveRows - 1) / kInterleaveRows;
  const size_t rb = w.row_bytes();
  const uint8_t* src = static_cast<const uint8_t*>(w.data);
  const int code_mask = w.dtype == DType::kQ4_0 ? 0xF : 0xFF;
  ThreadPool::current().parallel_for(n_groups, [&](int64_t g0, int64_t g1) {
    for (int64_t row = g0 * kInterleaveRows; row < std::min(w.rows, g1 * kInterleaveRows); ++row) {
      const int r = static_cast<int>(row % kInterleaveRows);
      uint8_t* group = out + row / kInterleaveRows * gb;
      for (int64_t i = 0; i < nb; ++i) {
        const uint8_t* block = src + row * rb + i * bb;
        std::memcpy(group + col_scales(i, cb) + 2 * r, block, 2);
        for (int j = 0; j < kQK; ++j) {
          int byte, shift;
          code_place(w.dtype, r, j, &byte, &shift);
          group[col_codes(i, cb) + byte] |= static_cast<uint8_t>((code_of(w.dtype, block, j) & code_mask) << shift);
        }
      }
    }
  });
  return OkStatus();
}

size_t interleaved_bytes(DType t, int64_t rows, int64_t cols) {
  if (!interleave_supported(t) || cols % kQK != 0 || rows <= 0) return 0;
  const int64_t groups = (rows + kInterleaveRows - 1) / kInterleaveRows;
  return static_cast<size_t>(groups * group_bytes(t, cols / kQK));
}

size_t interleaved_group_bytes(DType t, int64_t cols) {
  return cols % kQK == 0 && interleave_supported(t) ? static_cast<size_t>(group_bytes(t, cols / kQK)) : 0;
}

namespace detail {

void dot_interleaved_ref(DType t, const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  const int64_t nb = n / kQK, cb = codes_bytes(t);
  for (int r = 0; r < kInterleaveRows; ++r) {
    float s = 0;
    for (int64_t i = 0; i < nb; ++i) {
      int sumi = 0;
      for (int j = 0; j < kQK; ++j) {
        int byte, shift;
        code_place(t, r, j, &byte, &shift);
        const uint8_t b = group[col_codes(i, cb) + byte];
        const int q = t == DType::kQ4_0 ? ((b >> shift) & 0xF) - 8 : static_cast<int8_t>(b);
        sumi += q * x.q16[32 * i + j];
      }
      uint16_t h;
      std::memcpy(&h, group + col_scales(i, cb) + 2 * r, 2);
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
      std::memcpy(&h, group + col_scales(i, cb) + 2 * r, 2);
      const float d = f16_to_f32(h);
      for (int j = 0; j < kQK; ++j) {
        int byte, shift;
        code_place(t, r, j, &byte, &shift);
        const uint8_t b = group[col_codes(i, cb) + byte];
        const int q = t == DType::kQ4_0 ? ((b >> shift) & 0xF) - 8 : static_cast<int8_t>(b);
        panel[(kQK * i + j) * kInterleaveRows + r] = static_cast<float>(q) * d;
      }
    }
  }
}

#if defined(__x86_64__)
#define IL_VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

namespace {

// acc + (w_lo x_lo + w_hi x_hi) per int32 lane (one vpdpwssd), the activation pair broadcast to every lane.
IL_VNNI_FN inline __m512i dp(__m512i acc, __m512i w, const int16_t* x_pair) {
  int32_t v;
  std::memcpy(&v, x_pair, 4);
  return _mm512_dpwssd_epi32(acc, w, _mm512_set1_epi32(v));
}

// One block column of 16 rows: sum(q_w * q_x) per row (q4_0 codes still unsigned 0..15).
template <DType T>
IL_VNNI_FN inline __m512i column_dot(const uint8_t* c, const int16_t* xq) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  if constexpr (T == DType::kQ4_0) {
    const __m512i m = _mm512_set1_epi32(0x000F000F);
    __m512i* s[4] = {&s0, &s1, &s2, &s3};
    for (int w = 0; w < 4; ++w) {
      const __m512i v = _mm512_loadu_si512(c + 64 * w);
      const int16_t* xp = xq + 8 * w;  // pairs 4w .. 4w + 3
      *s[w] = dp(*s[w], _mm512_and_si512(v, m), xp);
      *s[w] = dp(*s[w], _mm512_and_si512(_mm512_srli_epi32(v, 4), m), xp + 2);
      *s[w] = dp(*s[w], _mm512_and_si512(_mm512_srli_epi32(v, 8), m), xp + 4);
      *s[w] = dp(*s[w], _mm512_and_si512(_mm512_srli_epi32(v, 12), m), xp + 6);
    }
  } else {
    __m512i* s[4] = {&s0, &s1, &s2, &s3};
    for (int w = 0; w < 8; ++w) {
      const __m512i v = _mm512_loadu_si512(c + 64 * w);
      const int16_t* xp = xq + 4 * w;  // codes 4w .. 4w + 3
      *s[w % 4] = dp(*s[w % 4], _mm512_srai_epi16(_mm512_slli_epi16(v, 8), 8), xp);
      *s[w % 4] = dp(*s[w % 4], _mm512_srai_epi16(v, 8), xp + 2);
    }
  }
  return _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3));
}

template <DType T>
IL_VNNI_FN void dot_il(const uint8_t* group, const ActRow& x, int64_t n, float* y) {
  const int64_t nb = n / kQK, cb = codes_bytes(T);
  __m512 acc = _mm512_setzero_ps(), accm = acc;
  for (int64_t i = 0; i < nb; ++i) {
    const __m512i p = column_dot<T>(group + col_codes(i, cb), x.q16 + 32 * i);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + col_scales(i, cb))));
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
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + col_scales(i, cb))));
    const uint8_t* c = group + col_codes(i, cb);
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

InterleavedDotFn interleaved_dot_kernel(DType t) {
  if (t == DType::kQ4_0) return dot_il<DType::kQ4_0>;
  if (t == DType::kQ8_0) return dot_il<DType::kQ8_0>;
  return nullptr;
}
#else
InterleavedDotFn interleaved_dot_kernel(DType) { return nullptr; }
void dequantize_group_avx512(DType t, const uint8_t* group, int64_t n, float* panel) {
  dequantize_group_ref(t, group, n, panel);
}
#endif

}  // namespace detail
}  // namespace citadel::cpu
