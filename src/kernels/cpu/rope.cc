// CPU RoPE (NORM and NEOX pair layouts; linear and YaRN scaling; optional per-pair frequency factors).
// The reference evaluates the rotation per head; the fast version builds each token's cos/sin table once (theta in
// double: positions of tens of thousands times a float frequency would lose ~1e-3 rad) and applies it to every head.
#include <algorithm>
#include <cmath>
#include <vector>

#include "base/check.h"
#include "base/thread_pool.h"
#include "kernels/ops.h"

namespace citadel::cpu {
namespace {

struct YarnRamp {
  double low = 0, high = 0;
};

// The dims (pair indices) where YaRN moves from extrapolation to interpolation (YaRN paper, "NTK-by-parts").
YarnRamp yarn_ramp(const RopeParams& p) {
  auto corr_dim = [&](double n_rot) {
    return p.rope_dim * std::log(p.n_ctx_orig / (n_rot * 2 * M_PI)) / (2 * std::log(p.freq_base));
  };
  YarnRamp r;
  r.low = std::max(0.0, std::floor(corr_dim(p.beta_fast)));
  r.high = std::min(p.rope_dim - 1.0, std::ceil(corr_dim(p.beta_slow)));
  return r;
}

// cos/sin of pair i at position pos, already multiplied by the attention magnitude scale.
inline void rope_cos_sin(const RopeParams& p, const YarnRamp& ramp, int32_t pos, int i, float* c, float* s) {
  double theta_extrap = pos * std::pow(static_cast<double>(p.freq_base), -2.0 * i / p.rope_dim);
  if (p.freq_factors) theta_extrap /= p.freq_factors[i];
  const double theta_interp = p.freq_scale * theta_extrap;
  double theta = theta_interp, mscale = p.attn_factor;
  if (p.ext_factor != 0.0f) {
    const double y = (i - ramp.low) / std::max(0.001, ramp.high - ramp.low);
    const double mix = (1.0 - std::clamp(y, 0.0, 1.0)) * p.ext_factor;
    theta = theta_interp * (1 - mix) + theta_extrap * mix;
    mscale *= 1.0 + 0.1 * std::log(1.0 / p.freq_scale);
  }
  *c = static_cast<float>(std::cos(theta) * mscale);
  *s = static_cast<float>(std::sin(theta) * mscale);
}

}  // namespace

void rope_freq_table(const RopeParams& p, double* inv_freq, double* mscale) {
  const YarnRamp ramp = yarn_ramp(p);
  for (int i = 0; i < p.rope_dim / 2; ++i) {
    double extrap = std::pow(static_cast<double>(p.freq_base), -2.0 * i / p.rope_dim);
    if (p.freq_factors) extrap /= p.freq_factors[i];
    const double interp = p.freq_scale * extrap;
    double f = interp;
    if (p.ext_factor != 0.0f) {
      const double y = (i - ramp.low) / std::max(0.001, ramp.high - ramp.low);
      const double mix = (1.0 - std::clamp(y, 0.0, 1.0)) * p.ext_factor;
      f = interp * (1 - mix) + extrap * mix;
    }
    inv_freq[i] = f;
  }
  *mscale = p.attn_factor;
  if (p.ext_factor != 0.0f) *mscale *= 1.0 + 0.1 * std::log(1.0 / p.freq_scale);
}

namespace {

// Index of the two elements of pair i inside a head.
inline void pair_index(const RopeParams& p, int i, int* a, int* b) {
  if (p.type == RopeType::kNorm) {
    *a = 2 * i;
    *b = 2 * i + 1;
  } else {
    *a = i;
    *b = i + p.rope_dim / 2;
  }
}

}  // namespace

void rope_ref(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* pos, const RopeParams& p) {
  CHECK(p.rope_dim > 0 && p.rope_dim <= head_dim && p.rope_dim % 2 == 0);
  const YarnRamp ramp = yarn_ramp(p);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      for (int i = 0; i < p.rope_dim / 2; ++i) {
        float c, s;
        rope_cos_sin(p, ramp, pos[t], i, &c, &s);
        int a, b;
        pair_index(p, i, &a, &b);
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }
}

void rope(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* pos, const RopeParams& p) {
  CHECK(p.rope_dim > 0 && p.rope_dim <= head_dim && p.rope_dim % 2 == 0);
  const YarnRamp ramp = yarn_ramp(p);
  const int half = p.rope_dim / 2;
  ThreadPool::current().parallel_for(n_tokens, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(2 * half);  // [cos half | sin half]
    for (int64_t t = t0; t < t1; ++t) {
      for (int i = 0; i < half; ++i) rope_cos_sin(p, ramp, pos[t], i, &cs[i], &cs[half + i]);
      const float* c = cs.data();
      const float* s = cs.data() + half;
      for (int h = 0; h < n_heads; ++h) {
        float* v = x + (t * n_heads + h) * head_dim;
        if (p.type == RopeType::kNeox) {
          float* v1 = v + half;
          for (int i = 0; i < half; ++i) {  // contiguous halves: vectorises
            const float x0 = v[i], x1 = v1[i];
            v[i] = x0 * c[i] - x1 * s[i];
            v1[i] = x0 * s[i] + x1 * c[i];
          }
        } else {
          for (int i = 0; i < half; ++i) {
            const float x0 = v[2 * i], x1 = v[2 * i + 1];
            v[2 * i] = x0 * c[i] - x1 * s[i];
            v[2 * i + 1] = x0 * s[i] + x1 * c[i];
          }
        }
      }
    }
  }, 4);
}

}  // namespace citadel::cpu
