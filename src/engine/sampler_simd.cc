// AVX2 versions of the sampler's passes over a whole vocabulary row, chosen at run time (base/cpu_features.h) so a
// portable build uses them too. Each has a reference twin in sampler.cc and a parity test in sampler_test.cc.
#include "engine/sampler.h"

#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#define CITADEL_SAMPLER_AVX2 __attribute__((target("avx2")))
#endif

namespace citadel::engine {

#if defined(__x86_64__)

namespace {

CITADEL_SAMPLER_AVX2 float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace

// maxps(x, m) answers m when x is NaN (its second operand), so starting from -inf the accumulators never hold a NaN:
// NaN entries are skipped, as in max_value_ref. Four accumulators keep four independent dependency chains.
CITADEL_SAMPLER_AVX2 float max_value_avx2(const float* x, int n) {
  const __m256 lo = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 m0 = lo, m1 = lo, m2 = lo, m3 = lo;
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
    m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
    m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
  }
  for (; i + 8 <= n; i += 8) m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
  float m = hmax8(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// The max, then the first index equal to it (8 lanes compared at once, the first set bit of the mask). Equality is
// the ordering's (-0 == +0, as x > x[best] in argmax_ref never moves from -0 to +0); NaN never compares equal, and
// an all-NaN row finds no index (0).
CITADEL_SAMPLER_AVX2 int32_t argmax_avx2(const float* x, int n) {
  const float m = max_value_avx2(x, n);
  const __m256 mv = _mm256_set1_ps(m);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), mv, _CMP_EQ_OQ));
    if (mask) return i + __builtin_ctz(static_cast<unsigned>(mask));
  }
  for (; i < n; ++i)
    if (x[i] == m) return i;
  return 0;
}

#else

float max_value_avx2(const float* x, int n) { return max_value_portable(x, n); }
int32_t argmax_avx2(const float* x, int n) { return argmax_portable(x, n); }

#endif

}  // namespace citadel::engine
