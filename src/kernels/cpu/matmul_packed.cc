// The f32 GEMM over packed weights (kernels/ops.h PackedMatrix): an AVX2 microkernel of 6 tokens x 16 rows (12
// accumulators: per k, two weight loads and six broadcasts feed twelve FMAs), threaded over row panels so that each
// panel stays in cache while every token streams past it; a scalar reference over the same layout.
#include <algorithm>
#include <cstring>

#include "base/check.h"
#include "base/cpu_features.h"
#include "base/half.h"
#include "base/thread_pool.h"
#include "kernels/cpu/packed_kernels.h"
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/simd_math.h"

namespace citadel::cpu {
namespace {

constexpr int kMr = 6;  // tokens per microkernel call
constexpr int64_t kTokenBlockBytes = 128 << 10;

const float* panel_of(const PackedMatrix& w, int64_t p) { return w.data.data() + p * w.cols * kPanelRows; }

// The panel's bias [kPanelRows] (zero-padded), or zeros.
void panel_bias(const PackedMatrix& w, const float* bias, int64_t p, float* out) {
  std::fill(out, out + kPanelRows, 0.0f);
  if (!bias) return;
  const int64_t r0 = p * kPanelRows, n = std::min<int64_t>(kPanelRows, w.rows - r0);
  std::copy(bias + r0, bias + r0 + n, out);
}

void panel_ref(const PackedMatrix& w, int64_t p, const float* x, int64_t n_tokens, const float* b16, float* y,
               int64_t ldy, Epilogue epi) {
  const float* pw = panel_of(w, p);
  const int64_t r0 = p * kPanelRows, nr = std::min<int64_t>(kPanelRows, w.rows - r0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t r = 0; r < nr; ++r) {
      double acc = b16[r];
      for (int64_t k = 0; k < w.cols; ++k) acc += static_cast<double>(pw[k * kPanelRows + r]) * x[t * w.cols + k];
      float* out = y + t * ldy + r0 + r;
      *out = static_cast<float>(acc);
      if (epi == Epilogue::kGeluErf) gelu_erf_ref(out, out, 1);
    }
  }
}

#if defined(__x86_64__)
// GELU over a stored tile [m, nr] (rows ldy apart), still in L1. Kept out of line: inlined into the microkernel, its
// constants were hoisted above the k loop and pushed the twelve accumulators out of registers (the GELU GEMM ran at
// half the speed of the plain one).
__attribute__((noinline)) CITADEL_AVX2 void gelu_tile(float* y, int64_t ldy, int m, int nr) {
  if (nr != kPanelRows) {
    for (int i = 0; i < m; ++i) gelu_erf_ref(y + i * ldy, y + i * ldy, nr);
    return;
  }
  int i = 0;
  for (; i + 2 <= m; i += 2) {  // two rows: four interleaved vectors
    __m256 v[4] = {_mm256_loadu_ps(y + i * ldy), _mm256_loadu_ps(y + i * ldy + 8),
                   _mm256_loadu_ps(y + (i + 1) * ldy), _mm256_loadu_ps(y + (i + 1) * ldy + 8)};
    detail::gelu8xn<4>(v);
    _mm256_storeu_ps(y + i * ldy, v[0]);
    _mm256_storeu_ps(y + i * ldy + 8, v[1]);
    _mm256_storeu_ps(y + (i + 1) * ldy, v[2]);
    _mm256_storeu_ps(y + (i + 1) * ldy + 8, v[3]);
  }
  if (i < m) {
    __m256 v[2] = {_mm256_loadu_ps(y + i * ldy), _mm256_loadu_ps(y + i * ldy + 8)};
    detail::gelu8xn<2>(v);
    _mm256_storeu_ps(y + i * ldy, v[0]);
    _mm256_storeu_ps(y + i * ldy + 8, v[1]);
  }
}

// One stored row of a tile: 16 outputs, or the first nr of them at the matrix's last panel.
CITADEL_AVX2 inline void store_row(float* y, __m256 lo, __m256 hi, int nr) {
  if (nr == kPanelRows) {
    _mm256_storeu_ps(y, lo);
    _mm256_storeu_ps(y + 8, hi);
  } else {
    alignas(32) float tmp[kPanelRows];
    _mm256_store_ps(tmp, lo);
    _mm256_store_ps(tmp + 8, hi);
    std::memcpy(y, tmp, sizeof(float) * nr);
  }
}

// M tokens (M <= kMr) x one panel. The twelve accumulators are named variables, not an array: with an array GCC
// sometimes kept them in memory and stored all twelve every k step (half the speed: seen when the loop's
// surroundings changed), named scalars always get registers.
template <int M>
CITADEL_AVX2 void micro(const float* pw, const float* x, int64_t K, const float* b16, float* y, int64_t ldy, int nr) {
  static_assert(M >= 1 && M <= kMr);
  const __m256 b0 = _mm256_loadu_ps(b16), b1 = _mm256_loadu_ps(b16 + 8);
  __m256 c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1, c30 = b0, c31 = b1, c40 = b0, c41 = b1,
         c50 = b0, c51 = b1;
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_loadu_ps(pw + k * kPanelRows), w1 = _mm256_loadu_ps(pw + k * kPanelRows + 8);
#define CITADEL_MICRO_ROW(m, lo, hi)                          \
    if constexpr (M > m) {                                    \
      const __m256 xb = _mm256_broadcast_ss(x + m * K + k);   \
      lo = _mm256_fmadd_ps(xb, w0, lo);                       \
      hi = _mm256_fmadd_ps(xb, w1, hi);                       \
    }
    CITADEL_MICRO_ROW(0, c00, c01)
    CITADEL_MICRO_ROW(1, c10, c11)
    CITADEL_MICRO_ROW(2, c20, c21)
    CITADEL_MICRO_ROW(3, c30, c31)
    CITADEL_MICRO_ROW(4, c40, c41)
    CITADEL_MICRO_ROW(5, c50, c51)
#undef CITADEL_MICRO_ROW
  }
  store_row(y, c00, c01, nr);
  if constexpr (M > 1) store_row(y + ldy, c10, c11, nr);
  if constexpr (M > 2) store_row(y + 2 * ldy, c20, c21, nr);
  if constexpr (M > 3) store_row(y + 3 * ldy, c30, c31, nr);
  if constexpr (M > 4) store_row(y + 4 * ldy, c40, c41, nr);
  if constexpr (M > 5) store_row(y + 5 * ldy, c50, c51, nr);
}

// One panel pw [K, kPanelRows] (nr of its rows real) times x [n_tokens, K]: y[t * ldy + r] for r < nr (y: the
// panel's first output column).
template <bool kGelu>
void panel_tiles(const float* pw, int64_t K, int nr, const float* x, int64_t n_tokens, const float* b16, float* y,
                 int64_t ldy) {
  // Full 6-token tiles, except that a remainder of 1 or 2 tokens borrows the last full tile: 7 = 4 + 3, 8 = 4 + 4.
  // A 1- or 2-token tile has 2 or 4 accumulator chains, fewer than the FMA latency hides (1 in 16 tokens at 32
  // tokens per call ran at under half speed).
  int64_t full = n_tokens / kMr;
  const int64_t rem = n_tokens % kMr;
  if (full > 0 && (rem == 1 || rem == 2)) --full;
  int64_t t = 0;
  for (; t < full * kMr; t += kMr) micro<kMr>(pw, x + t * K, K, b16, y + t * ldy, ldy, nr);
  if (n_tokens - t > kMr) {
    micro<4>(pw, x + t * K, K, b16, y + t * ldy, ldy, nr);
    t += 4;
  }
  switch (n_tokens - t) {
    case 5: micro<5>(pw, x + t * K, K, b16, y + t * ldy, ldy, nr); break;
    case 4: micro<4>(pw, x + t * K, K, b16, y + t * ldy, ldy, nr); break;
    case 3: micro<3>(pw, x + t * K, K, b16, y + t * ldy, ldy, nr); break;
    case 2: micro<2>(pw, x + t * K, K, b16, y + t * ldy, ldy, nr); break;
    case 1: micro<1>(pw, x + t * K, K, b16, y + t * ldy, ldy, nr); break;
    default: break;
  }
  if constexpr (kGelu) gelu_tile(y, ldy, static_cast<int>(n_tokens), nr);
}
#endif

}  // namespace

#if defined(__x86_64__)
void detail::panel_gemm_avx2(const float* pw, int64_t K, int nr, const float* x, int64_t n_tokens, float* y,
                             int64_t ldy) {
  alignas(32) const float zeros[kPanelRows] = {};
  panel_tiles<false>(pw, K, nr, x, n_tokens, zeros, y, ldy);
}
#else
void detail::panel_gemm_avx2(const float* pw, int64_t K, int nr, const float* x, int64_t n_tokens, float* y,
                             int64_t ldy) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int r = 0; r < nr; ++r) {
      float s = 0;
      for (int64_t k = 0; k < K; ++k) s += pw[k * kPanelRows + r] * x[t * K + k];
      y[t * ldy + r] = s;
    }
  }
}
#endif

PackedMatrix pack_matrix(const float* w, int64_t rows, int64_t cols) {
  PackedMatrix m;
  m.rows = rows, m.cols = cols;
  const int64_t panels = (rows + kPanelRows - 1) / kPanelRows;
  m.data.assign(static_cast<size_t>(panels * cols * kPanelRows), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = r / kPanelRows, i = r % kPanelRows;
    for (int64_t k = 0; k < cols; ++k) m.data[(p * cols + k) * kPanelRows + i] = w[r * cols + k];
  }
  return m;
}

void pack_matrix_bf16(PackedMatrix* m) {
  const int64_t panels = (m->rows + kPanelRows - 1) / kPanelRows, kp = (m->cols + 1) / 2;
  m->bf16.assign(static_cast<size_t>(panels * kp * kPanelRows * 2), 0);
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t k = 0; k < m->cols; ++k)
      for (int r = 0; r < kPanelRows; ++r)
        m->bf16[((p * kp + k / 2) * kPanelRows + r) * 2 + k % 2] = f32_to_bf16(panel_of(*m, p)[k * kPanelRows + r]);
}

void unpack_matrix(const PackedMatrix& m, float* w) {
  for (int64_t r = 0; r < m.rows; ++r) {
    const int64_t p = r / kPanelRows, i = r % kPanelRows;
    for (int64_t k = 0; k < m.cols; ++k) w[r * m.cols + k] = m.data[(p * m.cols + k) * kPanelRows + i];
  }
}

void matmul_packed_ref(const PackedMatrix& w, const float* x, int64_t n_tokens, const float* bias, float* y,
                       int64_t ldy, Epilogue epi) {
  if (ldy <= 0) ldy = w.rows;
  const int64_t panels = (w.rows + kPanelRows - 1) / kPanelRows;
  for (int64_t p = 0; p < panels; ++p) {
    float b16[kPanelRows];
    panel_bias(w, bias, p, b16);
    panel_ref(w, p, x, n_tokens, b16, y, ldy, epi);
  }
}

void matmul_packed_bf16_ref(const PackedMatrix& w, const float* x, int64_t n_tokens, const float* bias, float* y,
                            int64_t ldy, Epilogue epi) {
  CHECK(!w.bf16.empty());
  if (ldy <= 0) ldy = w.rows;
  const int64_t kp = (w.cols + 1) / 2;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t r = 0; r < w.rows; ++r) {
      const uint16_t* wr = w.bf16.data() + (r / kPanelRows * kp * kPanelRows + r % kPanelRows) * 2;
      double acc = bias ? bias[r] : 0.0;
      for (int64_t k = 0; k < w.cols; ++k)
        acc += static_cast<double>(bf16_to_f32(wr[k / 2 * kPanelRows * 2 + k % 2])) *
               bf16_to_f32(f32_to_bf16(x[t * w.cols + k]));
      y[t * ldy + r] = static_cast<float>(acc);
      if (epi == Epilogue::kGeluErf) gelu_erf_ref(y + t * ldy + r, y + t * ldy + r, 1);
    }
  }
}

void matmul_packed(const PackedMatrix& w, const float* x, int64_t n_tokens, const float* bias, float* y,
                   int64_t ldy, Epilogue epi) {
  if (ldy <= 0) ldy = w.rows;
  const int64_t panels = (w.rows + kPanelRows - 1) / kPanelRows;
#if defined(__x86_64__)
  const bool avx2 = cpu_features().has_avx2_fma();
  if (cpu_features().has_avx512()) {
    const bool bf16 = !w.bf16.empty() && cpu_features().has_avx512_bf16();
    detail::packed_gemm_avx512(w, bf16, 0, panels, x, n_tokens, bias, y, ldy, epi);
    return;
  }
#endif
  // Tokens in blocks of about kTokenBlockBytes of activations, so that a block stays in L2 while it meets every
  // panel of this thread's share (without blocking, each panel streamed all of x from memory: batched rows stopped
  // scaling past one core).
  const int64_t tb = std::max<int64_t>(kMr, kTokenBlockBytes / (w.cols * 4) / kMr * kMr);
  ThreadPool::current().parallel_for(panels, [&](int64_t b, int64_t e) {
    for (int64_t t0 = 0; t0 < n_tokens; t0 += tb) {
      const int64_t nt = std::min(tb, n_tokens - t0);
      const float* xb = x + t0 * w.cols;
      float* yb = y + t0 * ldy;
      for (int64_t p = b; p < e; ++p) {
        alignas(32) float b16[kPanelRows];
        panel_bias(w, bias, p, b16);
#if defined(__x86_64__)
        if (avx2) {
          const int64_t r0 = p * kPanelRows;
          const int nr = static_cast<int>(std::min<int64_t>(kPanelRows, w.rows - r0));
          if (epi == Epilogue::kGeluErf) panel_tiles<true>(panel_of(w, p), w.cols, nr, xb, nt, b16, yb + r0, ldy);
          else panel_tiles<false>(panel_of(w, p), w.cols, nr, xb, nt, b16, yb + r0, ldy);
          continue;
        }
#endif
        panel_ref(w, p, xb, nt, b16, yb, ldy, epi);
      }
    }
  });
}

}  // namespace citadel::cpu
