// CPU encoder ops (layernorm, exact GELU, row bias, bidirectional packed attention): scalar references, AVX2
// versions (attention also AVX-512 where head_dim % 16 == 0), threaded dispatch. Contracts in kernels/ops.h.
#include <algorithm>
#include <cmath>
#include <vector>

#include "base/check.h"
#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd_math.h"
#include "kernels/ops.h"

namespace citadel::cpu {
namespace {

bool use_avx2() { return cpu_features().has_avx2_fma(); }


void layernorm_row_ref(const float* x, const float* w, const float* b, float* y, int64_t n, float eps) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / n;
  double var = 0;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const double inv = 1.0 / std::sqrt(var / n + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>((x[i] - mean) * inv * w[i] + b[i]);
}

float gelu_ref(float x) { return static_cast<float>(0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)))); }

#if defined(__x86_64__)
using detail::exp8;
using detail::gelu8;
using detail::hmax8;
using detail::hsum8;

CITADEL_AVX2 void layernorm_row_avx2(const float* x, const float* w, const float* b, float* y, int64_t n,
                                     float eps) {
  __m256 s = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(x + i));
  float sum = hsum8(s);
  for (; i < n; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(n);
  const __m256 mv = _mm256_set1_ps(mean);
  __m256 ss = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv);
    ss = _mm256_fmadd_ps(d, d, ss);
  }
  float var = hsum8(ss);
  for (; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.0f / std::sqrt(var / static_cast<float>(n) + eps);
  const __m256 iv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), iv);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < n; ++i) y[i] = (x[i] - mean) * inv * w[i] + b[i];
}

CITADEL_AVX2 void gelu_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256 v[4];
    for (int j = 0; j < 4; ++j) v[j] = _mm256_loadu_ps(x + i + 8 * j);
    detail::gelu8xn<4>(v);
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(y + i + 8 * j, v[j]);
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = gelu_ref(x[i]);
}

CITADEL_AVX2 void add_bias_row_avx2(float* y, const float* b, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(b + i)));
  for (; i < n; ++i) y[i] += b[i];
}

// One (sequence, head): kt [head_dim, len] and p [len] scratch; out rows `out_stride` apart. The keys are transposed
// once so that a query's scores come 8 keys at a time (broadcast q[d] times a row of kt) with no horizontal sums.
CITADEL_AVX2 void attend_head_avx2(const float* q, const float* k, const float* v, int64_t stride, int64_t t0,
                                   int64_t t1, int h, int hd, float scale, float* out, int64_t out_stride, float* kt,
                                   float* p) {
  const int64_t len = t1 - t0;
  for (int64_t j = 0; j < len; ++j)
    for (int d = 0; d < hd; ++d) kt[d * len + j] = k[(t0 + j) * stride + h * hd + d];
  for (int64_t i = t0; i < t1; ++i) {
    const float* qi = q + i * stride + h * hd;
    int64_t j = 0;
    __m256 mv8 = _mm256_set1_ps(-INFINITY);
    // 32 keys at a time: four independent accumulator chains (one chain of head_dim dependent FMAs per 8 keys left
    // the FMA units waiting on latency).
    for (; j + 32 <= len; j += 32) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int d = 0; d < hd; ++d) {
        const __m256 qd = _mm256_broadcast_ss(qi + d);
        const float* kd = kt + d * len + j;
        a0 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kd), a0);
        a1 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kd + 8), a1);
        a2 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kd + 16), a2);
        a3 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kd + 24), a3);
      }
      const __m256 sc = _mm256_set1_ps(scale);
      a0 = _mm256_mul_ps(a0, sc), a1 = _mm256_mul_ps(a1, sc), a2 = _mm256_mul_ps(a2, sc), a3 = _mm256_mul_ps(a3, sc);
      _mm256_storeu_ps(p + j, a0);
      _mm256_storeu_ps(p + j + 8, a1);
      _mm256_storeu_ps(p + j + 16, a2);
      _mm256_storeu_ps(p + j + 24, a3);
      mv8 = _mm256_max_ps(mv8, _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
    }
    for (; j + 8 <= len; j += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int d = 0; d < hd; ++d)
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(qi + d), _mm256_loadu_ps(kt + d * len + j), acc);
      acc = _mm256_mul_ps(acc, _mm256_set1_ps(scale));
      _mm256_storeu_ps(p + j, acc);
      mv8 = _mm256_max_ps(mv8, acc);
    }
    float m = hmax8(mv8);
    for (; j < len; ++j) {
      float acc = 0;
      for (int d = 0; d < hd; ++d) acc += qi[d] * kt[d * len + j];
      p[j] = acc * scale;
      m = std::max(m, p[j]);
    }
    const __m256 mv = _mm256_set1_ps(m);
    __m256 sv = _mm256_setzero_ps();
    for (j = 0; j + 8 <= len; j += 8) {
      const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + j), mv));
      _mm256_storeu_ps(p + j, e);
      sv = _mm256_add_ps(sv, e);
    }
    float sum = hsum8(sv);
    for (; j < len; ++j) sum += p[j] = std::exp(p[j] - m);
    const float inv = 1.0f / sum;
    float* o = out + i * out_stride + h * hd;
    int d = 0;
    for (; d + 32 <= hd; d += 32) {  // four independent chains, as for the scores
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (j = 0; j < len; ++j) {
        const __m256 pj = _mm256_set1_ps(p[j]);
        const float* vj = v + (t0 + j) * stride + h * hd + d;
        a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), a0);
        a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), a1);
        a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 16), a2);
        a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 24), a3);
      }
      const __m256 iv = _mm256_set1_ps(inv);
      _mm256_storeu_ps(o + d, _mm256_mul_ps(a0, iv));
      _mm256_storeu_ps(o + d + 8, _mm256_mul_ps(a1, iv));
      _mm256_storeu_ps(o + d + 16, _mm256_mul_ps(a2, iv));
      _mm256_storeu_ps(o + d + 24, _mm256_mul_ps(a3, iv));
    }
    for (; d + 8 <= hd; d += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (j = 0; j < len; ++j)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(v + (t0 + j) * stride + h * hd + d), acc);
      _mm256_storeu_ps(o + d, _mm256_mul_ps(acc, _mm256_set1_ps(inv)));
    }
    for (; d < hd; ++d) {
      float acc = 0;
      for (j = 0; j < len; ++j) acc += p[j] * v[(t0 + j) * stride + h * hd + d];
      o[d] = acc * inv;
    }
  }
}

// Softmax in place over p [n] (scores; -inf lanes give 0), returns 1 / sum: exp8 over whole vectors (n % 8 == 0).
CITADEL_AVX2 float softmax_row_avx2(float* p, int64_t n) {
  __m256 mv = _mm256_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(p + j));
  const __m256 m = _mm256_set1_ps(hmax8(mv));
  __m256 sv = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + j), m));
    _mm256_storeu_ps(p + j, e);
    sv = _mm256_add_ps(sv, e);
  }
  return 1.0f / hsum8(sv);
}

// out[q][0 .. 16 ND) (q < nq) = inv[q] * sum_j p[q][j] v[j] over len keys, v rows `stride` apart; 4 queries x ND
// vectors of accumulators share each value load.
template <int ND>
CITADEL_AVX512 void attend_values_avx512(const float* const* p, const float* v, int64_t stride, int64_t len,
                                         const float* inv, int nq, float* out, int64_t out_stride) {
  __m512 c[4][ND];
  for (auto& row : c)
    for (auto& x : row) x = _mm512_setzero_ps();
  for (int64_t j = 0; j < len; ++j) {
    __m512 vv[ND];
    for (int n = 0; n < ND; ++n) vv[n] = _mm512_loadu_ps(v + j * stride + 16 * n);
    for (int q = 0; q < 4; ++q) {
      const __m512 pj = _mm512_set1_ps(p[q][j]);
      for (int n = 0; n < ND; ++n) c[q][n] = _mm512_fmadd_ps(pj, vv[n], c[q][n]);
    }
  }
  for (int q = 0; q < nq; ++q)
    for (int n = 0; n < ND; ++n)
      _mm512_storeu_ps(out + q * out_stride + 16 * n, _mm512_mul_ps(c[q][n], _mm512_set1_ps(inv[q])));
}

// attend_head_avx2 with zmm, for head_dim % 16 == 0: four queries at a time share every key and value load. kt
// [head_dim, Lp] (Lp = len rounded up to 16; padded keys get score -inf) and p [4, Lp] scratch.
CITADEL_AVX512 void attend_head_avx512(const float* q, const float* k, const float* v, int64_t stride, int64_t t0,
                                       int64_t t1, int h, int hd, float scale, float* out, int64_t out_stride,
                                       float* kt, float* p) {
  const int64_t len = t1 - t0, lp = (len + 15) / 16 * 16;
  for (int d = 0; d < hd; ++d) {
    for (int64_t j = 0; j < len; ++j) kt[d * lp + j] = k[(t0 + j) * stride + h * hd + d];
    for (int64_t j = len; j < lp; ++j) kt[d * lp + j] = 0.0f;
  }
  const __mmask16 last = len % 16 ? static_cast<__mmask16>((1u << (len % 16)) - 1) : static_cast<__mmask16>(0xffff);
  const __m512 sc = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
  for (int64_t i0 = 0; i0 < len; i0 += 4) {
    const int nq = static_cast<int>(std::min<int64_t>(4, len - i0));
    const float* qi[4];
    float* pq[4];
    for (int r = 0; r < 4; ++r) {
      qi[r] = q + (t0 + i0 + std::min(r, nq - 1)) * stride + h * hd;  // missing queries repeat the last one
      pq[r] = p + r * lp;
    }
    for (int64_t j = 0; j < lp; j += 16) {
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int d = 0; d < hd; ++d) {
        const __m512 kv = _mm512_loadu_ps(kt + d * lp + j);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(qi[0][d]), kv, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(qi[1][d]), kv, a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(qi[2][d]), kv, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(qi[3][d]), kv, a3);
      }
      const __mmask16 live = j + 16 <= len ? static_cast<__mmask16>(0xffff) : last;
      _mm512_storeu_ps(pq[0] + j, _mm512_mask_mul_ps(ninf, live, a0, sc));
      _mm512_storeu_ps(pq[1] + j, _mm512_mask_mul_ps(ninf, live, a1, sc));
      _mm512_storeu_ps(pq[2] + j, _mm512_mask_mul_ps(ninf, live, a2, sc));
      _mm512_storeu_ps(pq[3] + j, _mm512_mask_mul_ps(ninf, live, a3, sc));
    }
    float inv[4];
    for (int r = 0; r < 4; ++r) inv[r] = softmax_row_avx2(pq[r], lp);
    const float* vh = v + t0 * stride + h * hd;
    float* o = out + (t0 + i0) * out_stride + h * hd;
    int d = 0;
    for (; d + 32 <= hd; d += 32) attend_values_avx512<2>(pq, vh + d, stride, len, inv, nq, o + d, out_stride);
    if (d < hd) attend_values_avx512<1>(pq, vh + d, stride, len, inv, nq, o + d, out_stride);
  }
}
#endif

void check_seqs(const int32_t* seq_start, int n_seqs) {
  CHECK(seq_start[0] == 0);
  for (int s = 0; s < n_seqs; ++s) CHECK(seq_start[s + 1] >= seq_start[s]);
}

}  // namespace

void layernorm_ref(const float* x, const float* w, const float* b, float* y, int64_t n_tokens, int64_t dim,
                   float eps) {
  for (int64_t t = 0; t < n_tokens; ++t) layernorm_row_ref(x + t * dim, w, b, y + t * dim, dim, eps);
}

void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n_tokens, int64_t dim, float eps) {
#if defined(__x86_64__)
  if (use_avx2()) {
    for_rows(n_tokens, dim, [&](int64_t t) { layernorm_row_avx2(x + t * dim, w, b, y + t * dim, dim, eps); });
    return;
  }
#endif
  for_rows(n_tokens, dim, [&](int64_t t) { layernorm_row_ref(x + t * dim, w, b, y + t * dim, dim, eps); });
}

void gelu_erf_ref(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = gelu_ref(x[i]);
}

void gelu_erf(const float* x, float* y, int64_t n) {
  ThreadPool::current().parallel_for(n, [&](int64_t s, int64_t e) {
#if defined(__x86_64__)
    if (use_avx2()) return gelu_avx2(x + s, y + s, e - s);
#endif
    gelu_erf_ref(x + s, y + s, e - s);
  }, kMinElemsPerChunk / 4);
}

void add_bias_ref(float* y, const float* b, int64_t n_rows, int64_t n) {
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t i = 0; i < n; ++i) y[r * n + i] += b[i];
}

void add_bias(float* y, const float* b, int64_t n_rows, int64_t n) {
#if defined(__x86_64__)
  if (use_avx2()) {
    for_rows(n_rows, n, [&](int64_t r) { add_bias_row_avx2(y + r * n, b, n); });
    return;
  }
#endif
  for_rows(n_rows, n, [&](int64_t r) { add_bias_ref(y + r * n, b, 1, n); });
}

void encoder_attention_ref(const float* q, const float* k, const float* v, int64_t stride, const int32_t* seq_start,
                           int n_seqs, int n_heads, int head_dim, float scale, float* out) {
  check_seqs(seq_start, n_seqs);
  if (scale <= 0) scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
  for (int s = 0; s < n_seqs; ++s) {
    const int64_t t0 = seq_start[s], t1 = seq_start[s + 1];
    std::vector<double> p(static_cast<size_t>(t1 - t0));
    for (int h = 0; h < n_heads; ++h) {
      for (int64_t i = t0; i < t1; ++i) {
        const float* qi = q + i * stride + h * head_dim;
        double m = -INFINITY;
        for (int64_t j = t0; j < t1; ++j) {
          const float* kj = k + j * stride + h * head_dim;
          double dot = 0;
          for (int d = 0; d < head_dim; ++d) dot += static_cast<double>(qi[d]) * kj[d];
          p[j - t0] = dot * scale;
          m = std::max(m, p[j - t0]);
        }
        double sum = 0;
        for (int64_t j = t0; j < t1; ++j) sum += p[j - t0] = std::exp(p[j - t0] - m);
        float* o = out + i * width + h * head_dim;
        for (int d = 0; d < head_dim; ++d) {
          double acc = 0;
          for (int64_t j = t0; j < t1; ++j) acc += p[j - t0] * v[j * stride + h * head_dim + d];
          o[d] = static_cast<float>(acc / sum);
        }
      }
    }
  }
}

void encoder_attention(const float* q, const float* k, const float* v, int64_t stride, const int32_t* seq_start,
                       int n_seqs, int n_heads, int head_dim, float scale, float* out) {
#if defined(__x86_64__)
  if (use_avx2()) {
    const bool avx512 = cpu_features().has_avx512() && head_dim % 16 == 0;
    check_seqs(seq_start, n_seqs);
    if (scale <= 0) scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
    ThreadPool::current().parallel_for(static_cast<int64_t>(n_seqs) * n_heads, [&](int64_t b, int64_t e) {
      thread_local std::vector<float> p, kt;
      for (int64_t job = b; job < e; ++job) {
        const int s = static_cast<int>(job / n_heads), h = static_cast<int>(job % n_heads);
        const int64_t t0 = seq_start[s], t1 = seq_start[s + 1];
        const size_t lp = static_cast<size_t>((t1 - t0 + 15) / 16 * 16);  // room for either kernel's padding
        if (p.size() < 4 * lp) p.resize(4 * lp);
        if (kt.size() < lp * head_dim) kt.resize(lp * head_dim);
        if (avx512) attend_head_avx512(q, k, v, stride, t0, t1, h, head_dim, scale, out, width, kt.data(), p.data());
        else attend_head_avx2(q, k, v, stride, t0, t1, h, head_dim, scale, out, width, kt.data(), p.data());
      }
    });
    return;
  }
#endif
  encoder_attention_ref(q, k, v, stride, seq_start, n_seqs, n_heads, head_dim, scale, out);
}

}  // namespace citadel::cpu
