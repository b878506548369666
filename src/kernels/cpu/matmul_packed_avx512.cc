// The AVX-512 kernels of the packed-weight GEMM (packed_kernels.h), f32 and bf16. The tokens of a block are copied
// k-major in tiles of kMt (f32: xp[tile][k][kMt]; bf16: xp[tile][k / 2][kMt][2]) so that a microkernel's broadcasts
// walk one pointer; then each pair of panels (32 weight rows, read from two panel streams) meets every tile of the
// block. Per k (f32) or k pair (bf16) the 12 x 32 microkernel issues 2 weight loads and 12 broadcasts for 24 FMAs or
// vdpbf16ps (the AVX2 6 x 16 one: 2 and 6 for 12 FMAs of half the width), and the same chain per output whatever the
// token count: bias, then k in order. The f32 functions carry the bf16 target too (one template for both); they
// contain no bf16 instruction and run on any AVX-512 CPU.
#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "base/check.h"
#include "base/half.h"
#include "base/thread_pool.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/packed_kernels.h"

#include "kernels/cpu/simd_math.h"

#if defined(__x86_64__)
#define CITADEL_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))
#endif

namespace citadel::cpu::detail {

#if defined(__x86_64__)
namespace {

constexpr int kMt = 12;                   // tokens per microkernel tile
constexpr int64_t kBlockBytes = 384 << 10;  // packed tokens of one block (with a panel pair, within a 1 MiB L2)

CITADEL_AVX512_BF16 inline void store16(float* y, __m512 v, __mmask16 mask) {
  if (mask == 0xffff) _mm512_storeu_ps(y, v);
  else _mm512_mask_storeu_ps(y, mask, v);
}

// One k step of one accumulator: f32 (w: 16 rows of one k, x: one token's value) or bf16 (w: 16 rows of a k pair,
// x: the token's pair; vdpbf16ps adds both products).
struct F32Step {
  using T = float;
  static constexpr int kPerStep = kPanelRows;  // elements of T per panel per step
  CITADEL_AVX512_BF16 static __m512 load_w(const float* w) { return _mm512_loadu_ps(w); }
  CITADEL_AVX512_BF16 static __m512 bcast_x(const float* x) { return _mm512_set1_ps(*x); }
  CITADEL_AVX512_BF16 static __m512 madd(__m512 acc, __m512 x, __m512 w) { return _mm512_fmadd_ps(x, w, acc); }
};
struct Bf16Step {
  using T = uint16_t;
  static constexpr int kPerStep = 2 * kPanelRows;
  CITADEL_AVX512_BF16 static __m512 load_w(const uint16_t* w) { return _mm512_castsi512_ps(_mm512_loadu_si512(w)); }
  CITADEL_AVX512_BF16 static __m512 bcast_x(const uint16_t* x) {
    uint32_t pair;
    std::memcpy(&pair, x, 4);
    return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(pair)));
  }
  CITADEL_AVX512_BF16 static __m512 madd(__m512 acc, __m512 x, __m512 w) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_castps_si512(x), (__m512bh)_mm512_castps_si512(w));
  }
};

// X(token, low accumulator, high accumulator) for each of the microkernel's kMt token rows.
#define CITADEL_EACH_ACC(X) \
  X(0, c00, c01) X(1, c10, c11) X(2, c20, c21) X(3, c30, c31) X(4, c40, c41) X(5, c50, c51) \
  X(6, c60, c61) X(7, c70, c71) X(8, c80, c81) X(9, c90, c91) X(10, ca0, ca1) X(11, cb0, cb1)

// M tokens (M <= kMt, packed at xp: kMt token entries per step) x NP panels (w0, and w1 when NP == 2), `steps` k
// steps. Named accumulators (an array was sometimes left in memory by GCC: see matmul_packed.cc).
template <typename S, int M, int NP>
CITADEL_AVX512_BF16 void micro(const typename S::T* w0, const typename S::T* w1, const typename S::T* xp, int64_t steps,
                          const float* b32, float* y, int64_t ldy, __mmask16 m0, __mmask16 m1) {
  static_assert(M >= 1 && M <= kMt && (NP == 1 || NP == 2));
  constexpr int kX = sizeof(float) / sizeof(typename S::T);  // T elements per token entry
  const __m512 bl = _mm512_loadu_ps(b32), bh = NP == 2 ? _mm512_loadu_ps(b32 + 16) : bl;
  __m512 c00 = bl, c01 = bh, c10 = bl, c11 = bh, c20 = bl, c21 = bh, c30 = bl, c31 = bh, c40 = bl, c41 = bh,
         c50 = bl, c51 = bh, c60 = bl, c61 = bh, c70 = bl, c71 = bh, c80 = bl, c81 = bh, c90 = bl, c91 = bh,
         ca0 = bl, ca1 = bh, cb0 = bl, cb1 = bh;
  for (int64_t k = 0; k < steps; ++k) {
    const __m512 wl = S::load_w(w0 + k * S::kPerStep);
    const __m512 wh = NP == 2 ? S::load_w(w1 + k * S::kPerStep) : wl;
    const typename S::T* xk = xp + k * kMt * kX;
#define CITADEL_MICRO512(m, lo, hi)                           \
    if constexpr (M > m) {                                    \
      const __m512 xb = S::bcast_x(xk + (m) * kX);            \
      lo = S::madd(lo, xb, wl);                               \
      if constexpr (NP == 2) hi = S::madd(hi, xb, wh);        \
    }
    CITADEL_EACH_ACC(CITADEL_MICRO512)
#undef CITADEL_MICRO512
  }
#define CITADEL_STORE512(m, lo, hi)                                 \
  if constexpr (M > m) {                                            \
    store16(y + (m) * ldy, lo, m0);                                 \
    if constexpr (NP == 2) store16(y + (m) * ldy + 16, hi, m1);     \
  }
  CITADEL_EACH_ACC(CITADEL_STORE512)
#undef CITADEL_EACH_ACC
#undef CITADEL_STORE512
}

template <typename S>
using MicroFn = void (*)(const typename S::T*, const typename S::T*, const typename S::T*, int64_t, const float*,
                         float*, int64_t, __mmask16, __mmask16);

template <typename S, int NP, int... Ms>
constexpr std::array<MicroFn<S>, kMt + 1> micro_table(std::integer_sequence<int, Ms...>) {
  return {nullptr, &micro<S, Ms + 1, NP>...};
}

TokenTile tile_of(int64_t n, int64_t i) { return balanced_tile(n, kMt, i); }

// x [n, K] -> xp [ceil(n / kMt), K, kMt] (a short tile's missing tokens left as they were: never read back).
void pack_tokens(const float* x, int64_t n, int64_t K, float* xp) {
  for (int64_t i = 0; i * kMt < n; ++i) {
    const auto [t0, m] = tile_of(n, i);
    float* tile = xp + i * kMt * K;
    for (int i = 0; i < m; ++i) {
      const float* row = x + (t0 + i) * K;
      for (int64_t k = 0; k < K; ++k) tile[k * kMt + i] = row[k];
    }
  }
}

// The same for bf16 pairs: xp [ceil(n / kMt), ceil(K / 2), kMt, 2], x rounded to nearest even (vcvtne2ps2bf16, as
// f32_to_bf16 for every finite value); an odd K's last pair padded with 0 (its weight is 0 too).
CITADEL_AVX512_BF16 void pack_tokens(const float* x, int64_t n, int64_t K, uint16_t* xp) {
  const int64_t kp = (K + 1) / 2;
  alignas(64) uint32_t pairs[16];
  for (int64_t i = 0; i * kMt < n; ++i) {
    const auto [t0, m] = tile_of(n, i);
    uint32_t* tile = reinterpret_cast<uint32_t*>(xp + i * kMt * kp * 2);  // [kp, kMt] pairs
    for (int i = 0; i < m; ++i) {
      const float* row = x + (t0 + i) * K;
      int64_t k = 0;
      for (; k + 32 <= K; k += 32) {
        const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + k + 16), _mm512_loadu_ps(row + k));
        _mm512_store_si512(pairs, (__m512i)b);
        for (int j = 0; j < 16; ++j) tile[(k / 2 + j) * kMt + i] = pairs[j];
      }
      for (; k < K; k += 2) {
        const uint32_t lo = f32_to_bf16(row[k]), hi = k + 1 < K ? f32_to_bf16(row[k + 1]) : 0;
        tile[(k / 2) * kMt + i] = lo | hi << 16;
      }
    }
  }
}

// GELU in place over a stored tile y [m, nr] (rows ldy apart, nr <= 16), four rows at a time. Out of line, as
// gelu_tile (inlined, its constants pushed the microkernel's accumulators out of registers).
// The GCC 12 false positive of simd_math.h gelu16xn, reported here where it is inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
__attribute__((noinline)) CITADEL_AVX512 void gelu_tile_avx512(float* y, int64_t ldy, int m, __mmask16 mask) {
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    __m512 v[4];
    for (int j = 0; j < 4; ++j) v[j] = _mm512_maskz_loadu_ps(mask, y + (i + j) * ldy);
    gelu16xn<4>(v);
    for (int j = 0; j < 4; ++j) _mm512_mask_storeu_ps(y + (i + j) * ldy, mask, v[j]);
  }
  for (; i < m; ++i) {
    __m512 v[1] = {_mm512_maskz_loadu_ps(mask, y + i * ldy)};
    gelu16xn<1>(v);
    _mm512_mask_storeu_ps(y + i * ldy, mask, v[0]);
  }
}
#pragma GCC diagnostic pop

__mmask16 row_mask(int64_t rows_left) {
  return rows_left >= 16 ? static_cast<__mmask16>(0xffff)
                         : static_cast<__mmask16>((1u << std::max<int64_t>(rows_left, 0)) - 1);
}

// Panels [p0, p1) (p0 even relative to the caller's pairs) of the matrix whose packed weights are wd (panel p at
// wd + p * steps * S::kPerStep), for nt tokens packed at xp.
template <typename S>
void panels(const PackedMatrix& w, const typename S::T* wd, int64_t p0, int64_t p1, const typename S::T* xp,
            int64_t nt, const float* bias, float* y, int64_t ldy, Epilogue epi) {
  static constexpr auto kOne = micro_table<S, 1>(std::make_integer_sequence<int, kMt>());
  static constexpr auto kTwo = micro_table<S, 2>(std::make_integer_sequence<int, kMt>());
  const int64_t steps = (w.cols * sizeof(typename S::T) + sizeof(float) - 1) / sizeof(float);  // k or k pairs
  const int64_t entry = steps * kMt * (sizeof(float) / sizeof(typename S::T));  // T per packed tile
  for (int64_t p = p0; p < p1; p += 2) {
    const int np = p + 1 < p1 ? 2 : 1;
    const int64_t r0 = p * kPanelRows;
    const int64_t nr = std::min<int64_t>(np * kPanelRows, w.rows - r0);
    alignas(64) float b32[2 * kPanelRows] = {};
    if (bias) std::copy(bias + r0, bias + r0 + nr, b32);
    const __mmask16 m0 = row_mask(nr), m1 = row_mask(nr - kPanelRows);
    const typename S::T* w0 = wd + p * steps * S::kPerStep;
    const typename S::T* w1 = w0 + steps * S::kPerStep;
    for (int64_t i = 0; i * kMt < nt; ++i) {
      const auto [t, m] = tile_of(nt, i);
      float* yt = y + t * ldy + r0;
      (np == 2 ? kTwo : kOne)[m](w0, w1, xp + i * entry, steps, b32, yt, ldy, m0, m1);
      if (epi == Epilogue::kGeluErf) {
        gelu_tile_avx512(yt, ldy, m, m0);
        if (np == 2 && m1) gelu_tile_avx512(yt + kPanelRows, ldy, m, m1);
      }
    }
  }
}

// Token blocks sized to stay in L2 beside a panel pair; each block packed once by the calling thread, then its
// panel pairs spread over the pool (inline when the caller is itself a pool worker).
template <typename S>
void gemm(const PackedMatrix& w, const typename S::T* wd, int64_t p0, int64_t p1, const float* x, int64_t n_tokens,
          const float* bias, float* y, int64_t ldy, Epilogue epi) {
  const int64_t K = w.cols;
  const int64_t tb = std::max<int64_t>(kMt, kBlockBytes / (std::max<int64_t>(K, 1) * 4) / kMt * kMt);  // tokens a block
  const int64_t kp = (K * sizeof(typename S::T) + sizeof(float) - 1) / sizeof(float);
  thread_local std::vector<typename S::T> xp;
  const int64_t max_tiles = (std::min(tb, n_tokens) + kMt - 1) / kMt;
  xp.resize(static_cast<size_t>(max_tiles * kp * kMt * (sizeof(float) / sizeof(typename S::T))));
  const typename S::T* packed = xp.data();
  for (int64_t t0 = 0; t0 < n_tokens; t0 += tb) {
    const int64_t nt = std::min(tb, n_tokens - t0);
    pack_tokens(x + t0 * K, nt, K, xp.data());
    ThreadPool::current().parallel_for((p1 - p0 + 1) / 2, [&](int64_t b, int64_t e) {
      panels<S>(w, wd, p0 + 2 * b, std::min(p0 + 2 * e, p1), packed, nt, bias, y + t0 * ldy, ldy, epi);
    });
  }
}

}  // namespace

int64_t packed_tokens_bf16_size(int64_t n_tokens, int64_t K) {
  return (n_tokens + kMt - 1) / kMt * kMt * ((K + 1) / 2) * 2;
}

void pack_tokens_bf16(const float* x, int64_t n_tokens, int64_t K, uint16_t* xp) { pack_tokens(x, n_tokens, K, xp); }

void bf16_panel_gemm_avx512(const uint16_t* pw, int64_t K, int nr, const uint16_t* xp, int64_t n_tokens, float* y,
                            int64_t ldy) {
  static constexpr auto kOne = micro_table<Bf16Step, 1>(std::make_integer_sequence<int, kMt>());
  alignas(64) static const float kZeros[2 * kPanelRows] = {};
  const int64_t steps = (K + 1) / 2;
  const __mmask16 mask = row_mask(nr);
  for (int64_t i = 0; i * kMt < n_tokens; ++i) {
    const auto [t, m] = tile_of(n_tokens, i);
    kOne[m](pw, pw, xp + i * steps * kMt * 2, steps, kZeros, y + t * ldy, ldy, mask, 0);
  }
}

void packed_gemm_avx512(const PackedMatrix& w, bool bf16, int64_t p0, int64_t p1, const float* x, int64_t n_tokens,
                        const float* bias, float* y, int64_t ldy, Epilogue epi) {
  if (bf16) {
    CHECK(!w.bf16.empty());
    gemm<Bf16Step>(w, w.bf16.data(), p0, p1, x, n_tokens, bias, y, ldy, epi);
  } else {
    gemm<F32Step>(w, w.data.data(), p0, p1, x, n_tokens, bias, y, ldy, epi);
  }
}
#else
void packed_gemm_avx512(const PackedMatrix&, bool, int64_t, int64_t, const float*, int64_t, const float*, float*,
                        int64_t, Epilogue) {}
int64_t packed_tokens_bf16_size(int64_t, int64_t) { return 0; }
void pack_tokens_bf16(const float*, int64_t, int64_t, uint16_t*) {}
void bf16_panel_gemm_avx512(const uint16_t*, int64_t, int, const uint16_t*, int64_t, float*, int64_t) {}
#endif

}  // namespace citadel::cpu::detail
