// AVX-512 (F, BW, VL, DQ) row-dot kernels for decode. Every function carries a target attribute, so this file builds
// in a portable build too; matmul.cc calls into it only when cpu_features().has_avx512().
//
// The 32-block formats meet the same 16-bit activation codes as the AVX2 kernels (ActFormat::kQ16, chosen for
// accuracy: see matmul_kernels.h), but one block is one register: its 32 weight codes widened to int16 fill a zmm,
// one vpmaddwd against the block's 32 activation codes gives 16 int32 partial sums, and the fifth bits of q5_0 / q5_1
// go in through a mask register (qh is the mask) instead of a byte shuffle. Same integer sums as the reference, so the
// results differ from it only by float summation order.
#if defined(__x86_64__)
// GCC 12's AVX-512 intrinsics (_mm512_reduce_add_ps, _mm512_cvtepi32_ps, ...) pass an _mm512_undefined_*() operand
// that -Wuninitialized reports at every inlined use; the state applies to the header's lines, included first here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "base/half.h"
#include "kernels/cpu/matmul_kernels.h"

#define AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace citadel::cpu::detail {
namespace {

AVX512_FN inline float h16(uint16_t h) { return _cvtsh_ss(h); }

// 16 bytes of nibbles -> 32 int16 codes in element order (byte j: element j low nibble, element j + 16 high).
AVX512_FN inline __m512i nibbles16(const uint8_t* qs) {
  const __m512i t = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128(
      reinterpret_cast<const __m128i*>(qs))));
  return _mm512_and_si512(_mm512_mask_srli_epi16(t, 0xFFFF0000u, t, 4), _mm512_set1_epi16(0x0F));
}

// The fifth bit of element j is bit j of qh: qh itself is the mask of the int16 lanes to raise by 16.
AVX512_FN inline __m512i add_fifth(__m512i c, const uint8_t* qh) {
  uint32_t m;
  std::memcpy(&m, qh, 4);
  return _mm512_mask_add_epi16(c, static_cast<__mmask32>(m), c, _mm512_set1_epi16(16));
}

AVX512_FN inline __m512i codes16(const BlockQ8_0& b) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)));
}
AVX512_FN inline __m512i codes16(const BlockQ4_0& b) { return nibbles16(b.qs); }
AVX512_FN inline __m512i codes16(const BlockQ4_1& b) { return nibbles16(b.qs); }
AVX512_FN inline __m512i codes16(const BlockQ5_0& b) { return add_fifth(nibbles16(b.qs), b.qh); }
AVX512_FN inline __m512i codes16(const BlockQ5_1& b) { return add_fifth(nibbles16(b.qs), b.qh); }

// As in matmul_avx2.cc: how a block's codes relate to its values.
//  kSigned (q8_0): d * q.  kMin (q4_1, q5_1): d * q + m.  kOffset (q4_0, q5_0): d * (q - off).
enum class Kind { kSigned, kMin, kOffset };
template <typename Block> struct Traits;
template <> struct Traits<BlockQ8_0> { static constexpr Kind kKind = Kind::kSigned; static constexpr int kOff = 0; };
template <> struct Traits<BlockQ4_1> { static constexpr Kind kKind = Kind::kMin; static constexpr int kOff = 0; };
template <> struct Traits<BlockQ5_1> { static constexpr Kind kKind = Kind::kMin; static constexpr int kOff = 0; };
template <> struct Traits<BlockQ4_0> { static constexpr Kind kKind = Kind::kOffset; static constexpr int kOff = 8; };
template <> struct Traits<BlockQ5_0> { static constexpr Kind kKind = Kind::kOffset; static constexpr int kOff = 16; };

// One block of one row: acc += d_w * d_x * (16 int32 partial sums), and the block-sum term into accm (lane 0).
template <typename Block>
AVX512_FN inline void block_step(const Block& b, __m512i x16, float dx, float sx, __m512* acc, __m128* accm) {
  using T = Traits<Block>;
  const __m512i p = _mm512_madd_epi16(codes16(b), x16);
  const float dw = h16(b.d);
  *acc = _mm512_fmadd_ps(_mm512_set1_ps(dw * dx), _mm512_cvtepi32_ps(p), *acc);
  if constexpr (T::kKind == Kind::kMin) *accm = _mm_fmadd_ss(_mm_set_ss(h16(b.m)), _mm_set_ss(sx), *accm);
  if constexpr (T::kKind == Kind::kOffset) *accm = _mm_fmadd_ss(_mm_set_ss(dw), _mm_set_ss(sx), *accm);
}

template <typename Block>
AVX512_FN inline float finish(__m512 acc, __m128 accm) {
  using T = Traits<Block>;
  float s = _mm512_reduce_add_ps(acc);
  if constexpr (T::kKind == Kind::kMin) s += _mm_cvtss_f32(accm);
  if constexpr (T::kKind == Kind::kOffset) s -= static_cast<float>(T::kOff) * _mm_cvtss_f32(accm);
  return s;
}

// One weight row times one kQ16 activation row. Two blocks per iteration into two accumulator pairs: one FMA chain
// per block would bound the loop at the FMA latency.
template <typename Block>
AVX512_FN float dot_q32(const void* w, const ActRow& x, int64_t n) {
  const Block* b = static_cast<const Block*>(w);
  const int64_t nb = n / kQK;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
  __m128 accm0 = _mm_setzero_ps(), accm1 = accm0;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    block_step(b[i], _mm512_loadu_si512(x.q16 + 32 * i), x.q16_d[i], x.q16_sums[i], &acc0, &accm0);
    block_step(b[i + 1], _mm512_loadu_si512(x.q16 + 32 * i + 32), x.q16_d[i + 1], x.q16_sums[i + 1], &acc1, &accm1);
  }
  if (i < nb) block_step(b[i], _mm512_loadu_si512(x.q16 + 32 * i), x.q16_d[i], x.q16_sums[i], &acc0, &accm0);
  return finish<Block>(_mm512_add_ps(acc0, acc1), _mm_add_ss(accm0, accm1));
}

// kRows4 rows sharing each activation block's load.
template <typename Block>
AVX512_FN void dot4_q32(const void* w, size_t rb, const ActRow& x, int64_t n, float* y) {
  const uint8_t* base = static_cast<const uint8_t*>(w);
  const Block* rows[kRows4];
  for (int r = 0; r < kRows4; ++r) rows[r] = reinterpret_cast<const Block*>(base + r * rb);
  __m512 acc[kRows4];
  __m128 accm[kRows4];
  for (int r = 0; r < kRows4; ++r) {
    acc[r] = _mm512_setzero_ps();
    accm[r] = _mm_setzero_ps();
  }
  for (int64_t i = 0; i < n / kQK; ++i) {
    const __m512i x16 = _mm512_loadu_si512(x.q16 + 32 * i);
    const float dx = x.q16_d[i], sx = x.q16_sums[i];
    for (int r = 0; r < kRows4; ++r) block_step(rows[r][i], x16, dx, sx, &acc[r], &accm[r]);
  }
  for (int r = 0; r < kRows4; ++r) y[r] = finish<Block>(acc[r], accm[r]);
}

AVX512_FN float dot_f32(const void* w, const ActRow& x, int64_t n) {
  const float* a = static_cast<const float*>(w);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(x.f32 + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(x.f32 + i + 16), s1);
  }
  if (i < n) {  // the last 1..31 columns through masked loads (zeros beyond n)
    const int64_t r = n - i;
    const __mmask16 m0 = r >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << r) - 1);
    const __mmask16 m1 = r > 16 ? static_cast<__mmask16>((1u << (r - 16)) - 1) : 0;
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, a + i), _mm512_maskz_loadu_ps(m0, x.f32 + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, a + i + 16), _mm512_maskz_loadu_ps(m1, x.f32 + i + 16), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

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
    case DType::kF32: return {ActFormat::kF32, dot_f32};
    case DType::kF16: return {ActFormat::kF32, dot_half<false>};
    case DType::kBF16: return {ActFormat::kF32, dot_half<true>};
    case DType::kQ4_0: return {ActFormat::kQ16, dot_q32<BlockQ4_0>, dot4_q32<BlockQ4_0>};
    case DType::kQ4_1: return {ActFormat::kQ16, dot_q32<BlockQ4_1>, dot4_q32<BlockQ4_1>};
    case DType::kQ5_0: return {ActFormat::kQ16, dot_q32<BlockQ5_0>, dot4_q32<BlockQ5_0>};
    case DType::kQ5_1: return {ActFormat::kQ16, dot_q32<BlockQ5_1>, dot4_q32<BlockQ5_1>};
    case DType::kQ8_0: return {ActFormat::kQ16, dot_q32<BlockQ8_0>, dot4_q32<BlockQ8_0>};
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
