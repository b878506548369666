// cpu::rope_freq_table (the per-pair frequencies and cos/sin scale the CUDA RoPE kernels take) against
// cpu::rope_ref for every scaling mode: none, linear, YaRN, per-pair frequency factors (llama3 / rope_freqs).
// The rotation below computes the angle and cos/sin in double as rope_ref does: only the order of the angle's
// product differs (ulps of a double), so the bound is 1e-12 even at position 30000.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace citadel {
namespace {

using testing::nmse;
using testing::random_floats;

// rope_ref's rotation with theta_i = pos * inv_freq[i] and cos/sin scaled by mscale.
void rope_from_table(float* x, int n_tokens, int n_heads, int head_dim, const int32_t* pos, const RopeParams& p,
                     const std::vector<double>& inv_freq, double mscale) {
  for (int t = 0; t < n_tokens; ++t)
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (static_cast<int64_t>(t) * n_heads + h) * head_dim;
      for (int i = 0; i < p.rope_dim / 2; ++i) {
        const double theta = pos[t] * inv_freq[i];
        const float c = static_cast<float>(std::cos(theta) * mscale);
        const float s = static_cast<float>(std::sin(theta) * mscale);
        const bool norm = p.type == RopeType::kNorm;
        const int a = norm ? 2 * i : i, b = norm ? 2 * i + 1 : i + p.rope_dim / 2;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
}

TEST(Ops, RopeFreqTableMatchesReference) {
  const int32_t pos[7] = {0, 1, 5, 17, 100, 1000, 30000};
  const int head_dim = 128;
  for (RopeType type : {RopeType::kNorm, RopeType::kNeox}) {
    for (int mode = 0; mode < 4; ++mode) {  // none, linear, YaRN, linear + frequency factors
      RopeParams p;
      p.type = type;
      p.rope_dim = head_dim;
      p.freq_base = 500000.0f;
      std::vector<float> ff(head_dim / 2);
      if (mode == 1) p.freq_scale = 0.25f;
      if (mode == 2) p.freq_scale = 0.25f, p.ext_factor = 1.0f, p.n_ctx_orig = 4096;
      if (mode == 3) {
        p.freq_scale = 0.5f;
        for (size_t i = 0; i < ff.size(); ++i) ff[i] = 1.0f + 0.25f * static_cast<float>(i % 7);
        p.freq_factors = ff.data();
      }
      std::vector<double> inv_freq(head_dim / 2);
      double mscale = 0;
      cpu::rope_freq_table(p, inv_freq.data(), &mscale);
      EXPECT_DOUBLE_EQ(mscale, mode == 2 ? 1.0 + 0.1 * std::log(4.0) : 1.0);  // YaRN scales cos/sin
      std::vector<float> want = random_floats(7 * 3 * head_dim, 21), got = want;
      cpu::rope_ref(want.data(), 7, 3, head_dim, pos, p);
      rope_from_table(got.data(), 7, 3, head_dim, pos, p, inv_freq, mscale);
      EXPECT_LT(nmse(want, got), 1e-12) << "type " << int(type) << " mode " << mode;
    }
  }
}

// The unscaled table is theta^(-2i/d): what the CUDA kernels computed from theta alone.
TEST(Ops, RopeFreqTableUnscaledIsPlainFrequency) {
  RopeParams p;
  p.rope_dim = 64;
  p.freq_base = 10000.0f;
  std::vector<double> f(32);
  double mscale = 0;
  cpu::rope_freq_table(p, f.data(), &mscale);
  EXPECT_EQ(mscale, 1.0);
  for (int i = 0; i < 32; ++i) EXPECT_DOUBLE_EQ(f[i], std::pow(10000.0, -2.0 * i / 64));
}

}  // namespace
}  // namespace citadel
