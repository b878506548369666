// Prompt GEMM over q4_K / q5_K / q6_K rows with AVX-512 VNNI (matmul_kernels.h). The rows stay in their GGUF
// layout; per call, each group of 16 rows is unpacked once into a per-thread buffer that puts one row in each int32
// lane: per super-block, 64 vectors of unsigned codes (vector Q: elements 4Q .. 4Q + 3 of every row, one byte each),
// the sub-block scales as int32 lanes, the min (q4_K, q5_K) or offset (q6_K) terms as int16 pairs, and the f16 block
// scales as f32. The token tiles then meet the whole buffer: per code vector, one vpdpbusd per token against the
// token's matching 4 activation codes broadcast to all lanes (64 multiply-adds); per sub-block, the int32 sums times
// the scales (vpmulld); per super-block, the min / offset term (vpdpwssd against the token's bsums) and the f32 sum.
// The integer sums are those of the row-dot reference (matmul.cc dot_q45_K, dot_q6_K) exactly; only the order of the
// f32 additions differs. No horizontal sums: the 16 lanes are the 16 rows' outputs.
#include "kernels/cpu/avx512_intrinsics.h"  // first: its diagnostic state covers <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "base/check.h"
#include "base/thread_pool.h"
#include "kernels/cpu/matmul_kernels.h"

namespace citadel::cpu::detail {

bool kquant_gemm_supported(DType t) { return t == DType::kQ4_K || t == DType::kQ5_K || t == DType::kQ6_K; }

void pack_q8_K_tiles(const BlockQ8_K* x, int64_t n_tokens, int64_t n, Q8KTiles* out) {
  const int64_t nb = n / kQK_K, tiles = (n_tokens + kKqTile - 1) / kKqTile;
  out->n_tokens = n_tokens;
  out->n = n;
  out->quads.resize(static_cast<size_t>(tiles * (n / 4) * kKqTile));
  out->bsums.resize(static_cast<size_t>(tiles * nb * 8 * kKqTile));
  out->d.resize(static_cast<size_t>(tiles * nb * kKqTile));
  ThreadPool::current().parallel_for(tiles, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const auto [t0, m] = balanced_tile(n_tokens, kKqTile, i);
      int32_t* quads = out->quads.data() + i * (n / 4) * kKqTile;
      int32_t* bsums = out->bsums.data() + i * nb * 8 * kKqTile;
      float* d = out->d.data() + i * nb * kKqTile;
      for (int tm = 0; tm < m; ++tm) {
        const BlockQ8_K* a = x + (t0 + tm) * nb;
        for (int64_t b = 0; b < nb; ++b) {
          for (int k = 0; k < kQK_K / 4; ++k) std::memcpy(&quads[(b * (kQK_K / 4) + k) * kKqTile + tm], a[b].qs + 4 * k, 4);
          for (int p = 0; p < 8; ++p) std::memcpy(&bsums[(b * 8 + p) * kKqTile + tm], a[b].bsums + 2 * p, 4);
          d[b * kKqTile + tm] = a[b].d;
        }
      }
    }
  });
}

#if defined(__x86_64__)
#define KQ_VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

namespace {

// Vectors of one super-block of a 16-row group in the unpacked buffer: codes, then scales, then the min / offset
// pairs, then the block scale d and the min / offset factor (f32).
constexpr int kCodeVecs = kQK_K / 4;
template <int NSub>
constexpr int sb_vecs() { return kCodeVecs + NSub + 8 + 2; }
constexpr int sub_blocks(DType t) { return t == DType::kQ6_K ? 16 : 8; }

// The int32 at byte offset off of each of the 16 rows (idx: the rows' byte offsets).
KQ_VNNI_FN inline __m512i gather(const uint8_t* w, __m512i idx, int off) {
  return _mm512_i32gather_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(off)), w, 1);
}
// f16 in the low 16 bits of each lane -> f32.
KQ_VNNI_FN inline __m512 half_lo(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }
KQ_VNNI_FN inline __m512i bits(__m512i v, int shift, int mask) {
  return _mm512_and_si512(_mm512_srli_epi32(v, shift), _mm512_set1_epi32(mask));
}

// Super-block s of the 16 rows (idx: row byte offsets, rows past nr repeat the last) -> g [sb_vecs].
template <DType T>
KQ_VNNI_FN void unpack_superblock(const uint8_t* w, __m512i idx, __m512i* g) {
  constexpr int kSub = sub_blocks(T);
  __m512i* codes = g;
  __m512i* scales = g + kCodeVecs;
  __m512i* pairs = scales + kSub;
  __m512* fd = reinterpret_cast<__m512*>(pairs + 8);
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
        codes[16 * c + p] = lo;
        codes[16 * c + 8 + p] = hi;
      }
    }
    // The 12 scale bytes q[0..11] as three words (get_scale_min_k4): j < 4: sc = q[j] & 63, m = q[j + 4] & 63;
    // j >= 4: sc = q[j + 4] low nibble | top 2 bits of q[j - 4] << 4, m = q[j + 4] high nibble | top 2 of q[j] << 4.
    const __m512i s0 = gather(w, idx, 4), s1 = gather(w, idx, 8), s2 = gather(w, idx, 12);
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
      scales[j] = sc;
      pairs[j] = _mm512_or_si512(m, _mm512_slli_epi32(m, 16));  // (m_j, m_j): against bsums 2j, 2j + 1
    }
    const __m512i dd = gather(w, idx, 0);  // d, dmin
    fd[0] = half_lo(dd);
    fd[1] = half_lo(_mm512_srli_epi32(dd, 16));
  } else {
    // Per half h: ql byte 64h + l: low nibble element 128h + l, high 128h + 64 + l; qh byte 128 + 32h + l, bits 2g:
    // element 128h + 32g + l (the codes' top 2 bits). Code vector 32h + 8g + p: elements 128h + 32g + 4p ...
    const __m512i two = _mm512_set1_epi32(0x03030303);
    for (int h = 0; h < 2; ++h) {
      for (int p = 0; p < 8; ++p) {
        const __m512i l0 = gather(w, idx, 64 * h + 4 * p), l1 = gather(w, idx, 64 * h + 32 + 4 * p);
        const __m512i hb = gather(w, idx, 128 + 32 * h + 4 * p);
        const __m512i lo4[4] = {_mm512_and_si512(l0, nib), _mm512_and_si512(l1, nib),
                                _mm512_and_si512(_mm512_srli_epi32(l0, 4), nib),
                                _mm512_and_si512(_mm512_srli_epi32(l1, 4), nib)};
        for (int g2 = 0; g2 < 4; ++g2) {
          const __m512i hi2 = _mm512_and_si512(_mm512_srli_epi32(hb, 2 * g2), two);
          codes[32 * h + 8 * g2 + p] = _mm512_or_si512(lo4[g2], _mm512_slli_epi32(hi2, 4));
        }
      }
    }
    // 16 int8 scales at 192; the offset -32 * sum_j sc_j * bsum_j as pairs (32 sc_2i, 32 sc_2i+1).
    for (int i = 0; i < 4; ++i) {
      const __m512i v = gather(w, idx, 192 + 4 * i);
      for (int b = 0; b < 4; ++b) scales[4 * i + b] = _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * b), 24);
    }
    for (int i = 0; i < 8; ++i) {
      pairs[i] = _mm512_or_si512(_mm512_and_si512(_mm512_slli_epi32(scales[2 * i], 5), _mm512_set1_epi32(0xFFFF)),
                                 _mm512_slli_epi32(scales[2 * i + 1], 21));
    }
    fd[0] = half_lo(_mm512_srli_epi32(gather(w, idx, 206), 16));  // d: bytes 208, 209 (the block's last)
    fd[1] = fd[0];
  }
}

template <DType T>
KQ_VNNI_FN void unpack_group(const uint8_t* w, size_t rb, int nr, int64_t nsb, __m512i* g) {
  alignas(64) int32_t off[16];
  for (int r = 0; r < 16; ++r) off[r] = static_cast<int32_t>(std::min(r, nr - 1) * rb);
  const __m512i idx = _mm512_load_si512(off);
  const int64_t bb = T == DType::kQ4_K ? 144 : T == DType::kQ5_K ? 176 : 210;
  for (int64_t s = 0; s < nsb; ++s) unpack_superblock<T>(w + s * bb, idx, g + s * sb_vecs<sub_blocks(T)>());
}

// X(token, sub-block accumulator, super-block accumulator, f32 accumulator) for each of the kKqTile tokens.
#define CITADEL_KQ_ACC(X) \
  X(0, a0, t0, f0) X(1, a1, t1, f1) X(2, a2, t2, f2) X(3, a3, t3, f3) X(4, a4, t4, f4) X(5, a5, t5, f5) \
  X(6, a6, t6, f6) X(7, a7, t7, f7)

// M tokens (packed quads xq [n / 4, kKqTile], bsum pairs xb [n / 32, kKqTile], scales xd [n / 256, kKqTile]) x the
// unpacked group g. NSub sub-blocks per super-block. Named accumulators (an array was sometimes kept in memory by GCC).
template <int NSub, int M>
KQ_VNNI_FN void kq_micro(const int32_t* group, int64_t nsb, const int32_t* xq, const int32_t* xb, const float* xd,
                         float* y, int64_t ldy, __mmask16 mask) {
  static_assert(M >= 1 && M <= kKqTile && kKqTile == 8);
  constexpr int kQuads = kCodeVecs / NSub;  // code vectors per sub-block
  const __m512i* g = reinterpret_cast<const __m512i*>(group);
  __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0;
  for (int64_t s = 0; s < nsb; ++s, g += sb_vecs<NSub>(), xq += kCodeVecs * kKqTile, xb += 8 * kKqTile,
               xd += kKqTile) {
    const __m512i z = _mm512_setzero_si512();
    __m512i t0 = z, t1 = z, t2 = z, t3 = z, t4 = z, t5 = z, t6 = z, t7 = z;
    __m512i a0, a1, a2, a3, a4, a5, a6, a7;
#pragma GCC unroll 1
    for (int j = 0; j < NSub; ++j) {
#define CITADEL_KQ_ZERO(m, a, t, f) a = z;
      CITADEL_KQ_ACC(CITADEL_KQ_ZERO)
#undef CITADEL_KQ_ZERO
#pragma GCC unroll 8
      for (int q = 0; q < kQuads; ++q) {
        const __m512i w_ = _mm512_load_si512(g + j * kQuads + q);
        const int32_t* x_ = xq + (j * kQuads + q) * kKqTile;
#define CITADEL_KQ_DP(m, a, t, f) \
        if constexpr (M > m) a = _mm512_dpbusd_epi32(a, w_, _mm512_set1_epi32(x_[m]));
        CITADEL_KQ_ACC(CITADEL_KQ_DP)
#undef CITADEL_KQ_DP
      }
      const __m512i sc = _mm512_load_si512(g + kCodeVecs + j);
#define CITADEL_KQ_SCALE(m, a, t, f) \
      if constexpr (M > m) t = _mm512_add_epi32(t, _mm512_mullo_epi32(a, sc));
      CITADEL_KQ_ACC(CITADEL_KQ_SCALE)
#undef CITADEL_KQ_SCALE
    }
    // a = the min / offset term: sum over pairs of (m or 32 sc) x bsums.
#define CITADEL_KQ_ZERO(m, a, t, f) a = z;
    CITADEL_KQ_ACC(CITADEL_KQ_ZERO)
#undef CITADEL_KQ_ZERO
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const __m512i p_ = _mm512_load_si512(g + kCodeVecs + NSub + i);
      const int32_t* x_ = xb + i * kKqTile;
#define CITADEL_KQ_DP(m, a, t, f) \
      if constexpr (M > m) a = _mm512_dpwssd_epi32(a, p_, _mm512_set1_epi32(x_[m]));
      CITADEL_KQ_ACC(CITADEL_KQ_DP)
#undef CITADEL_KQ_DP
    }
    const __m512* fd = reinterpret_cast<const __m512*>(g + kCodeVecs + NSub + 8);
    const __m512 dw = fd[0], bw = fd[1];
#define CITADEL_KQ_SUM(m, a, t, f)                                                 \
    if constexpr (M > m) {                                                         \
      const __m512 dx = _mm512_set1_ps(xd[m]);                                     \
      f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_mul_ps(dw, dx), f);        \
      f = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(a), _mm512_mul_ps(bw, dx), f);       \
    }
    CITADEL_KQ_ACC(CITADEL_KQ_SUM)
#undef CITADEL_KQ_SUM
  }
#define CITADEL_KQ_STORE(m, a, t, f) \
  if constexpr (M > m) _mm512_mask_storeu_ps(y + (m) * ldy, mask, f);
  CITADEL_KQ_ACC(CITADEL_KQ_STORE)
#undef CITADEL_KQ_STORE
}
#undef CITADEL_KQ_ACC

using KqMicroFn = void (*)(const int32_t*, int64_t, const int32_t*, const int32_t*, const float*, float*, int64_t,
                           __mmask16);

template <int NSub, int... Ms>
constexpr std::array<KqMicroFn, kKqTile + 1> kq_micro_table(std::integer_sequence<int, Ms...>) {
  return {nullptr, &kq_micro<NSub, Ms + 1>...};
}

}  // namespace

void gemm_kquant_avx512(DType t, const uint8_t* w, size_t rb, int nr, const Q8KTiles& x, float* y, int64_t ldy) {
  static constexpr auto k8 = kq_micro_table<8>(std::make_integer_sequence<int, kKqTile>());
  static constexpr auto k16 = kq_micro_table<16>(std::make_integer_sequence<int, kKqTile>());
  CHECK(kquant_gemm_supported(t) && nr >= 1 && nr <= 16);
  const int64_t nsb = x.n / kQK_K;
  const int nsub = t == DType::kQ6_K ? 16 : 8;
  const int64_t vecs = nsb * (t == DType::kQ6_K ? sb_vecs<16>() : sb_vecs<8>());
  struct alignas(64) Vec { int32_t lanes[16]; };
  thread_local std::vector<Vec> buf;  // [vecs]: this call's 16 rows, unpacked
  buf.resize(static_cast<size_t>(vecs));
  __m512i* group = reinterpret_cast<__m512i*>(buf.data());
  if (t == DType::kQ4_K) unpack_group<DType::kQ4_K>(w, rb, nr, nsb, group);
  if (t == DType::kQ5_K) unpack_group<DType::kQ5_K>(w, rb, nr, nsb, group);
  if (t == DType::kQ6_K) unpack_group<DType::kQ6_K>(w, rb, nr, nsb, group);
  const auto& micro = nsub == 16 ? k16 : k8;
  const __mmask16 mask = static_cast<__mmask16>((1u << nr) - 1);
  for (int64_t i = 0; i * kKqTile < x.n_tokens; ++i) {
    const auto [t0, m] = balanced_tile(x.n_tokens, kKqTile, i);
    micro[m](buf.data()->lanes, nsb, x.quads.data() + i * (x.n / 4) * kKqTile, x.bsums.data() + i * nsb * 8 * kKqTile,
             x.d.data() + i * nsb * kKqTile, y + t0 * ldy, ldy, mask);
  }
}
#else
void gemm_kquant_avx512(DType, const uint8_t*, size_t, int, const Q8KTiles&, float*, int64_t) {
  CHECK(false) << "gemm_kquant_avx512 without x86";
}
#endif

}  // namespace citadel::cpu::detail
