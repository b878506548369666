// CPU rmsnorm, add, silu_mul, softmax, embedding: scalar references, AVX2 versions, threaded dispatch.
#include <algorithm>
#include <cmath>
#include <string>

#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd_math.h"
#include "kernels/ops.h"
#include "kernels/quant/quant.h"

namespace citadel::cpu {
namespace {

// Elementwise ops are memory-bound: they split only when each thread gets enough to amortise the wake-up
// (kMinElemsPerChunk, kernels/cpu/parallel.h).
bool use_avx2() { return cpu_features().has_avx2_fma(); }

#if defined(__x86_64__)
using detail::exp8;
using detail::hmax8;
using detail::hsum8;

CITADEL_AVX2 void rmsnorm_row_avx2(const float* x, const float* w, float* y, int64_t n, float eps) {
  __m256 s = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(x + i), s);
  double ss = hsum8(s);
  for (; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
  const __m256 sc = _mm256_set1_ps(scale);
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sc), _mm256_loadu_ps(w + i)));
  for (; i < n; ++i) y[i] = x[i] * scale * w[i];
}

CITADEL_AVX2 void add_avx2(const float* a, const float* b, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  for (; i < n; ++i) y[i] = a[i] + b[i];
}

CITADEL_AVX2 void silu_mul_avx2(const float* g, const float* u, float* y, int64_t n) {
  int64_t i = 0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

CITADEL_AVX2 void softmax_row_avx2(float* x, int64_t n) {
  __m256 mv = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
  float m = hmax8(mv);
  for (; i < n; ++i) m = std::max(m, x[i]);
  if (m == -INFINITY) m = 0;  // all masked: exp gives zeros, the sum guard below leaves them zero
  __m256 s = _mm256_setzero_ps();
  const __m256 mb = _mm256_set1_ps(m);
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mb));
    _mm256_storeu_ps(x + i, e);
    s = _mm256_add_ps(s, e);
  }
  float sum = hsum8(s);
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const __m256 inv = _mm256_set1_ps(sum > 0 ? 1.0f / sum : 0.0f);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  for (; i < n; ++i) x[i] *= sum > 0 ? 1.0f / sum : 0.0f;
}
#endif

void rmsnorm_row_ref(const float* x, const float* w, float* y, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const double scale = 1.0 / std::sqrt(ss / n + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i] * scale * w[i]);
}

void softmax_row_ref(float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  if (m == -INFINITY) m = 0;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - m);
  for (int64_t i = 0; i < n; ++i) x[i] = sum > 0 ? static_cast<float>(std::exp(static_cast<double>(x[i]) - m) / sum) : 0;
}


}  // namespace

void rmsnorm_ref(const float* x, const float* w, float* y, int64_t n_tokens, int64_t dim, float eps) {
  for (int64_t t = 0; t < n_tokens; ++t) rmsnorm_row_ref(x + t * dim, w, y + t * dim, dim, eps);
}

void rmsnorm(const float* x, const float* w, float* y, int64_t n_tokens, int64_t dim, float eps) {
#if defined(__x86_64__)
  if (use_avx2()) {
    for_rows(n_tokens, dim, [&](int64_t t) { rmsnorm_row_avx2(x + t * dim, w, y + t * dim, dim, eps); });
    return;
  }
#endif
  for_rows(n_tokens, dim, [&](int64_t t) { rmsnorm_row_ref(x + t * dim, w, y + t * dim, dim, eps); });
}

void add_ref(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void add(const float* a, const float* b, float* y, int64_t n) {
  ThreadPool::current().parallel_for(n, [&](int64_t s, int64_t e) {
#if defined(__x86_64__)
    if (use_avx2()) return add_avx2(a + s, b + s, y + s, e - s);
#endif
    add_ref(a + s, b + s, y + s, e - s);
  }, kMinElemsPerChunk);
}

void silu_mul_ref(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i]);
}

void gelu_tanh_mul(const float* g, const float* u, float* y, int64_t n) {
  ThreadPool::current().parallel_for(n, [&](int64_t s, int64_t e) {
    constexpr double kC = 0.7978845608028654;  // sqrt(2 / pi)
    for (int64_t i = s; i < e; ++i) {
      const double x = g[i];
      y[i] = static_cast<float>(0.5 * x * (1.0 + std::tanh(kC * (x + 0.044715 * x * x * x))) * u[i]);
    }
  }, 4096);
}

void silu_mul(const float* g, const float* u, float* y, int64_t n) {
  ThreadPool::current().parallel_for(n, [&](int64_t s, int64_t e) {
#if defined(__x86_64__)
    if (use_avx2()) return silu_mul_avx2(g + s, u + s, y + s, e - s);
#endif
    silu_mul_ref(g + s, u + s, y + s, e - s);
  }, kMinElemsPerChunk);
}

void softmax_ref(float* x, int64_t n_rows, int64_t n) {
  for (int64_t r = 0; r < n_rows; ++r) softmax_row_ref(x + r * n, n);
}

void softmax(float* x, int64_t n_rows, int64_t n) {
#if defined(__x86_64__)
  if (use_avx2()) {
    for_rows(n_rows, n, [&](int64_t r) { softmax_row_avx2(x + r * n, n); });
    return;
  }
#endif
  for_rows(n_rows, n, [&](int64_t r) { softmax_row_ref(x + r * n, n); });
}

Status embedding(const WeightView& table, const int32_t* ids, int64_t n_tokens, float* y) {
  DequantizeFn deq = dequantize_fn(table.dtype);
  if (!deq) return Unsupported(std::string("embedding: table dtype ") + dtype_name(table.dtype));
  const size_t rb = table.row_bytes();
  if (rb == 0) return InvalidArgument("embedding: row of " + std::to_string(table.cols) + " does not fit blocks");
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (ids[t] < 0 || ids[t] >= table.rows)
      return InvalidArgument("embedding: token " + std::to_string(t) + " id " + std::to_string(ids[t]) +
                             " outside vocabulary of " + std::to_string(table.rows));
    deq(static_cast<const uint8_t*>(table.data) + ids[t] * rb, y + t * table.cols, table.cols);
  }
  return OkStatus();
}

}  // namespace citadel::cpu
