// AVX2 + FMA + F16C row-dot kernels. Every function carries a target attribute, so this file builds in a portable
// (x86-64-v2) build too; matmul.cc calls into it only when cpu_features() reports the instructions.
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstring>

#include "base/half.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/simd_math.h"
#include "kernels/quant/quant.h"

#define AVX2_FN __attribute__((target("avx2,fma,f16c")))

namespace citadel::cpu::detail {
namespace {

AVX2_FN inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2_FN inline float h16(uint16_t h) { return _cvtsh_ss(h); }

// The 32 bits of qh -> 32 bytes, 0x10 where bit j is set (the fifth bit of element j).
AVX2_FN inline __m256i fifth_bits32(const uint8_t* qh) {
  uint32_t u;
  std::memcpy(&u, qh, 4);
  const __m256i sel = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(u)),
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bits = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(sel, bits), bits);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

AVX2_FN inline __m256i load32(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

AVX2_FN float dot_f32(const void* w, const ActRow& x, int64_t n) {
  const float* a = static_cast<const float*>(w);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x.f32 + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x.f32 + i + 8), s1);
  }
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * x.f32[i];
  return s;
}

template <bool kBf16>
AVX2_FN inline __m256 load_half8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kBf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

template <bool kBf16>
AVX2_FN float dot_half(const void* w, const ActRow& x, int64_t n) {
  const uint16_t* a = static_cast<const uint16_t*>(w);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(load_half8<kBf16>(a + i), _mm256_loadu_ps(x.f32 + i), s0);
    s1 = _mm256_fmadd_ps(load_half8<kBf16>(a + i + 8), _mm256_loadu_ps(x.f32 + i + 8), s1);
  }
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) {
    uint32_t u = static_cast<uint32_t>(a[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    s += (kBf16 ? f : h16(a[i])) * x.f32[i];
  }
  return s;
}

// 16 bytes of nibbles -> 32 bytes 0..15 with one broadcast load: the high lane is shifted by 4 before the mask.
AVX2_FN inline __m256i nibbles32_fast(const uint8_t* p) {
  const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_srlv_epi64(t, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
}

// How a 32-block format's codes enter the integer dot product against the 16-bit activation codes:
//  kSigned  (q8_0): signed codes, sign-extended to int16.
//  kMin     (q4_1, q5_1): unsigned codes; value = d * q + m, the m term through the activation block sums.
//  kOffset  (q4_0, q5_0): unsigned codes; value = d * (q - off), the -off * d term through the block sums.
enum class Q32Kind { kSigned, kMin, kOffset };
template <typename Block> struct Q32Traits;
template <> struct Q32Traits<BlockQ8_0> { static constexpr Q32Kind kKind = Q32Kind::kSigned; static constexpr int kOff = 0; };
template <> struct Q32Traits<BlockQ4_1> { static constexpr Q32Kind kKind = Q32Kind::kMin; static constexpr int kOff = 0; };
template <> struct Q32Traits<BlockQ5_1> { static constexpr Q32Kind kKind = Q32Kind::kMin; static constexpr int kOff = 0; };
template <> struct Q32Traits<BlockQ4_0> { static constexpr Q32Kind kKind = Q32Kind::kOffset; static constexpr int kOff = 8; };
template <> struct Q32Traits<BlockQ5_0> { static constexpr Q32Kind kKind = Q32Kind::kOffset; static constexpr int kOff = 16; };

// The 32 codes of a block in element order, as bytes (unsigned for the min / offset formats, signed for q8_0).
AVX2_FN inline __m256i codes(const BlockQ8_0& b) { return load32(b.qs); }
AVX2_FN inline __m256i codes(const BlockQ4_0& b) { return nibbles32_fast(b.qs); }
AVX2_FN inline __m256i codes(const BlockQ4_1& b) { return nibbles32_fast(b.qs); }
AVX2_FN inline __m256i codes(const BlockQ5_0& b) { return _mm256_or_si256(nibbles32_fast(b.qs), fifth_bits32(b.qh)); }
AVX2_FN inline __m256i codes(const BlockQ5_1& b) { return _mm256_or_si256(nibbles32_fast(b.qs), fifth_bits32(b.qh)); }

AVX2_FN inline __m256 f16_bcast(uint16_t h) { return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(h))); }

// The block's 32 codes widened to int16, elements 0..15 in lo and 16..31 in hi.
AVX2_FN inline void codes16(const BlockQ8_0& b, __m256i* lo, __m256i* hi) {
  *lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs)));
  *hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16)));
}
// 4-bit codes: byte j of qs holds elements j (low nibble) and j + 16 (high nibble); widened to int16 first, the low
// nibble is a mask and the high one a shift away.
AVX2_FN inline void nibbles16(const uint8_t* qs, __m256i* lo, __m256i* hi) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  *lo = _mm256_and_si256(b, _mm256_set1_epi16(0x0F));
  *hi = _mm256_srli_epi16(b, 4);
}
AVX2_FN inline void codes16(const BlockQ4_0& b, __m256i* lo, __m256i* hi) { nibbles16(b.qs, lo, hi); }
AVX2_FN inline void codes16(const BlockQ4_1& b, __m256i* lo, __m256i* hi) { nibbles16(b.qs, lo, hi); }
template <typename Block>
AVX2_FN inline void codes16(const Block& b, __m256i* lo, __m256i* hi) {  // q5_0, q5_1
  const __m256i c = codes(b);
  *lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(c));
  *hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(c, 1));
}

// sum over the block of code * activation as 8 int32 lanes (|code| <= 128, |x| <= 32767: a lane holds 4 products,
// < 2^24).
template <typename Block>
AVX2_FN inline __m256i block_dot16(const Block& b, __m256i x_lo, __m256i x_hi) {
  __m256i w0, w1;
  codes16(b, &w0, &w1);
  return _mm256_add_epi32(_mm256_madd_epi16(w0, x_lo), _mm256_madd_epi16(w1, x_hi));
}

// R consecutive weight rows (row stride rb bytes) times one kQ16 activation row: out[r] for r < R. The activation
// block (codes, scale, sum) is loaded once per block for all R rows; each row keeps one float accumulator for
// d_w * d_x * sum(q_w * q_x) and one for the block-sum term, reduced once at the end.
template <typename Block, int R>
AVX2_FN void dot_q32_rows(const uint8_t* w, size_t rb, const ActRow& x, int64_t n, float* out) {
  using T = Q32Traits<Block>;
  const int64_t nb = n / kQK;
  const Block* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = reinterpret_cast<const Block*>(w + r * rb);
  __m256 acc[R], accm[R];
  for (int r = 0; r < R; ++r) acc[r] = accm[r] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i x_lo = load32(x.q16 + 32 * i), x_hi = load32(x.q16 + 32 * i + 16);
    const __m256 dx = _mm256_broadcast_ss(x.q16_d + i);
    for (int r = 0; r < R; ++r) {
      const Block& b = rows[r][i];
      const __m256i p = block_dot16(b, x_lo, x_hi);
      const __m256 dw = f16_bcast(b.d);
      acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(p), acc[r]);
      if constexpr (T::kKind == Q32Kind::kMin) {
        accm[r] = _mm256_fmadd_ps(f16_bcast(b.m), _mm256_broadcast_ss(x.q16_sums + i), accm[r]);
      } else if constexpr (T::kKind == Q32Kind::kOffset) {
        accm[r] = _mm256_fmadd_ps(dw, _mm256_broadcast_ss(x.q16_sums + i), accm[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum(acc[r]);
    if constexpr (T::kKind == Q32Kind::kMin) s += _mm256_cvtss_f32(accm[r]);
    if constexpr (T::kKind == Q32Kind::kOffset) s -= static_cast<float>(T::kOff) * _mm256_cvtss_f32(accm[r]);
    out[r] = s;
  }
}

template <typename Block>
AVX2_FN float dot_q32(const void* w, const ActRow& x, int64_t n) {
  float y;
  dot_q32_rows<Block, 1>(static_cast<const uint8_t*>(w), 0, x, n, &y);
  return y;
}
template <typename Block>
AVX2_FN void dot4_q32(const void* w, size_t rb, const ActRow& x, int64_t n, float* y) {
  dot_q32_rows<Block, 4>(static_cast<const uint8_t*>(w), rb, x, n, y);
}

// The 8 bytes of v as floats (a free function: a lambda returning __m256 would change the ABI, -Wpsabi).
AVX2_FN inline __m256 bytes_to_ps(uint64_t v) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(v))));
}

// q4_K / q5_K against the 16-bit codes: per 64 elements, one 32-byte load of qs gives two sub-blocks (low / high
// nibbles), each one activation block: 32 codes widened to int16, madd with the activation codes, then f32 with the
// sub-block's factor d * sc * dx (the 8 of a super-block computed at once); the mins through the block sums.
template <typename Block, bool kHas5th>
AVX2_FN float dot_q45_K(const void* w, const ActRow& x, int64_t n) {
  const Block* b = static_cast<const Block*>(w);
  __m256 acc = _mm256_setzero_ps(), accm = acc;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  alignas(32) float f[8];
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    uint64_t sc, m;
    scales_mins_k4(b[i].scales, &sc, &m);
    _mm256_store_ps(f, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(h16(b[i].d)), bytes_to_ps(sc)),
                                     _mm256_loadu_ps(x.q16_d + 8 * i)));
    accm = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(h16(b[i].dmin)), bytes_to_ps(m)),
                           _mm256_loadu_ps(x.q16_sums + 8 * i), accm);
    __m256i hbits;
    if constexpr (kHas5th) hbits = load32(b[i].qh);
    const int16_t* xq = x.q16 + kQK_K * i;
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load32(b[i].qs + 32 * c);
      __m256i codes[2] = {_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4)};
      for (int e = 0; e < 2; ++e) {
        const int j = 2 * c + e;
        if constexpr (kHas5th) {
          const __m256i h = _mm256_and_si256(_mm256_srl_epi16(hbits, _mm_cvtsi32_si128(j)), _mm256_set1_epi8(1));
          codes[e] = _mm256_or_si256(codes[e], _mm256_slli_epi16(h, 4));
        }
        const __m256i p = _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(codes[e])), load32(xq + 32 * j)),
            _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(codes[e], 1)), load32(xq + 32 * j + 16)));
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(f + j), _mm256_cvtepi32_ps(p), acc);
      }
    }
  }
  return hsum(_mm256_sub_ps(acc, accm));
}

// q6_K against the 16-bit codes: 32 codes per step (two 16-value sub-blocks, one activation block), the -32 applied
// to the bytes (signed codes), each half widened to int16 and scaled by its factor d * sc * dx (the 16 of a
// super-block computed at once).
AVX2_FN float dot_q6_K(const void* w, const ActRow& x, int64_t n) {
  const BlockQ6_K* b = static_cast<const BlockQ6_K*>(w);
  __m256 acc = _mm256_setzero_ps();
  const __m256i dup_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3), dup_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
  alignas(32) float f[16];
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const __m256 d = _mm256_set1_ps(h16(b[i].d)), dx = _mm256_loadu_ps(x.q16_d + 8 * i);
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].scales));
    _mm256_store_ps(f, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))),
                                     _mm256_permutevar8x32_ps(dx, dup_lo)));
    const __m256 sc_hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)));
    _mm256_store_ps(f + 8, _mm256_mul_ps(_mm256_mul_ps(d, sc_hi), _mm256_permutevar8x32_ps(dx, dup_hi)));
    const int16_t* xq = x.q16 + kQK_K * i;
    for (int h = 0; h < 2; ++h) {
      __m256i codes[4];
      q6_K_codes(b[i].ql, b[i].qh, h, codes);
      for (int g = 0; g < 4; ++g) {  // elements 128h + 32g .. + 31: activation block 8i + 4h + g
        const __m256i q = codes[g];
        const int k = 4 * h + g;
        const __m256i p0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(q)), load32(xq + 32 * k));
        const __m256i p1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1)),
                                             load32(xq + 32 * k + 16));
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(f + 2 * k), _mm256_cvtepi32_ps(p0), acc);
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(f + 2 * k + 1), _mm256_cvtepi32_ps(p1), acc);
      }
    }
  }
  return hsum(acc);
}

}  // namespace

// 32 codes (bytes in element order) -> 32 floats d * (q - off) + m, stored to out.
template <bool kSignedCodes>
AVX2_FN inline void store_block(__m256i c, __m256 d, __m256 off_or_m, bool is_min, float* out) {
  for (int k = 0; k < 4; ++k) {
    const __m128i b8 = k < 2 ? _mm256_castsi256_si128(c) : _mm256_extracti128_si256(c, 1);
    const __m128i part = (k % 2) ? _mm_srli_si128(b8, 8) : b8;
    const __m256 v = _mm256_cvtepi32_ps(kSignedCodes ? _mm256_cvtepi8_epi32(part) : _mm256_cvtepu8_epi32(part));
    _mm256_storeu_ps(out + 8 * k, is_min ? _mm256_fmadd_ps(v, d, off_or_m) : _mm256_mul_ps(_mm256_sub_ps(v, off_or_m), d));
  }
}

template <typename Block>
AVX2_FN void dequant_q32(const uint8_t* w, int64_t n, float* out) {
  using T = Q32Traits<Block>;
  const Block* b = reinterpret_cast<const Block*>(w);
  for (int64_t i = 0; i < n / kQK; ++i, out += kQK) {
    const __m256 d = f16_bcast(b[i].d);
    if constexpr (T::kKind == Q32Kind::kMin) {
      store_block<false>(codes(b[i]), d, f16_bcast(b[i].m), true, out);
    } else {
      store_block<T::kKind == Q32Kind::kSigned>(codes(b[i]), d, _mm256_set1_ps(static_cast<float>(T::kOff)), false,
                                                out);
    }
  }
}

template <bool kBf16>
AVX2_FN void dequant_half(const uint8_t* w, int64_t n, float* out) {
  const uint16_t* a = reinterpret_cast<const uint16_t*>(w);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_half8<kBf16>(a + i));
  for (; i < n; ++i) out[i] = kBf16 ? bf16_to_f32(a[i]) : h16(a[i]);
}

// Bit-exact with quantize_row_q16: the same amax, d and 1 / d, and round-to-nearest-even (the default MXCSR mode of
// cvtps_epi32, as std::nearbyint's); packs_epi32 saturates to +-32767 as the reference clamps (|x * id| <= 32767.5).
AVX2_FN void quantize_q16_avx2(const float* x, int16_t* q, float* d, float* sums, int64_t n) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK, q += kQK) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(x + 8 * k);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_mask, v[k]));
    }
    const float db = hmax8(amax) / 32767.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i qi[4];
    for (int k = 0; k < 4; ++k) qi[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], idv));
    // int32 -> int16 in element order: packs interleaves 128-bit lanes, the permute puts them back.
    const __m256i p0 = _mm256_permute4x64_epi64(_mm256_packs_epi32(qi[0], qi[1]), 0xD8);
    const __m256i p1 = _mm256_permute4x64_epi64(_mm256_packs_epi32(qi[2], qi[3]), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), p0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 16), p1);
    const __m256i s32 = _mm256_add_epi32(_mm256_madd_epi16(p0, _mm256_set1_epi16(1)),
                                         _mm256_madd_epi16(p1, _mm256_set1_epi16(1)));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    d[i] = db;
    sums[i] = db * static_cast<float>(_mm_cvtsi128_si32(t));
  }
}

bool dequantize_rows_avx2(DType t, const uint8_t* w, size_t rb, int64_t n_rows, int64_t n, float* out) {
  void (*f)(const uint8_t*, int64_t, float*) = nullptr;
  switch (t) {
    case DType::kF16: f = dequant_half<false>; break;
    case DType::kBF16: f = dequant_half<true>; break;
    case DType::kQ4_0: f = dequant_q32<BlockQ4_0>; break;
    case DType::kQ4_1: f = dequant_q32<BlockQ4_1>; break;
    case DType::kQ5_0: f = dequant_q32<BlockQ5_0>; break;
    case DType::kQ5_1: f = dequant_q32<BlockQ5_1>; break;
    case DType::kQ8_0: f = dequant_q32<BlockQ8_0>; break;
    default: break;
  }
  if (t == DType::kF32) {
    for (int64_t r = 0; r < n_rows; ++r) std::memcpy(out + r * n, w + r * rb, sizeof(float) * n);
    return true;
  }
  if (!f) return false;
  for (int64_t r = 0; r < n_rows; ++r) f(w + r * rb, n, out + r * n);
  return true;
}

DotKernel avx2_dot_kernel(DType t) {
  switch (t) {
    case DType::kF32: return {ActFormat::kF32, dot_f32};
    case DType::kF16: return {ActFormat::kF32, dot_half<false>};
    case DType::kBF16: return {ActFormat::kF32, dot_half<true>};
    case DType::kQ4_0: return {ActFormat::kQ16, dot_q32<BlockQ4_0>, dot4_q32<BlockQ4_0>};
    case DType::kQ4_1: return {ActFormat::kQ16, dot_q32<BlockQ4_1>, dot4_q32<BlockQ4_1>};
    case DType::kQ5_0: return {ActFormat::kQ16, dot_q32<BlockQ5_0>, dot4_q32<BlockQ5_0>};
    case DType::kQ5_1: return {ActFormat::kQ16, dot_q32<BlockQ5_1>, dot4_q32<BlockQ5_1>};
    // q8_0 keeps one row per pass: four interleaved 34-byte-block streams ran the 30 MB output layer at half the
    // single-row speed (prefetcher), and its per-row work saved by sharing is small.
    case DType::kQ8_0: return {ActFormat::kQ16, dot_q32<BlockQ8_0>, nullptr};
    case DType::kQ4_K: return {ActFormat::kQ16, dot_q45_K<BlockQ4_K, false>};
    case DType::kQ5_K: return {ActFormat::kQ16, dot_q45_K<BlockQ5_K, true>};
    case DType::kQ6_K: return {ActFormat::kQ16, dot_q6_K};
    default: return {ActFormat::kF32, nullptr};
  }
}

}  // namespace citadel::cpu::detail
#else
#include "kernels/cpu/matmul_kernels.h"
namespace citadel::cpu::detail {
DotKernel avx2_dot_kernel(DType) { return {ActFormat::kF32, nullptr}; }
bool dequantize_rows_avx2(DType, const uint8_t*, size_t, int64_t, int64_t, float*) { return false; }
void quantize_q16_avx2(const float*, int16_t*, float*, float*, int64_t) {}
}  // namespace citadel::cpu::detail
#endif
