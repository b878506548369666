// RoPE parameters and llama3 factors from a ModelConfig (see rope.h).
#include "model/rope.h"

#include <cmath>

namespace citadel {

bool rope_scaling_supported(const std::string& type) {
  return type == "none" || type == "linear" || type == "yarn" || type == "llama3";
}

RopeParams rope_params_from(const ModelConfig& c, const float* freq_factors) {
  RopeParams p;
  p.type = c.rope_type == RopeStyle::kNorm ? RopeType::kNorm : RopeType::kNeox;
  p.rope_dim = static_cast<int>(c.rope_dim);
  p.freq_base = static_cast<float>(c.rope_theta);
  p.freq_factors = freq_factors;
  const RopeScaling& s = c.rope_scaling;
  if ((s.type == "linear" || s.type == "yarn") && s.factor > 0) p.freq_scale = static_cast<float>(1.0 / s.factor);
  if (s.type == "yarn") {
    p.ext_factor = 1.0f;
    p.n_ctx_orig = static_cast<int>(s.original_context > 0 ? s.original_context : c.context_len);
    // deepseek2: cos/sin keep magnitude 1 (mscale == mscale_all_dim); the kernels' YaRN magnitude is cancelled and
    // the attention scale carries mscale^2 instead (config.h attention_scale).
    if (s.yarn_log_mul > 0 && s.factor > 1) p.attn_factor = static_cast<float>(1.0 / (1.0 + 0.1 * std::log(s.factor)));
  }
  return p;
}

Result<std::vector<float>> llama3_rope_factors(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  if (!(s.factor > 0) || !(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0))
    return DataLoss("llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0");
  const double old_ctx = s.original_context > 0 ? static_cast<double>(s.original_context) : 8192.0;
  const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
  std::vector<float> f(static_cast<size_t>(c.rope_dim / 2));
  for (size_t i = 0; i < f.size(); ++i) {
    const double freq = std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(c.rope_dim));
    const double wavelen = 2.0 * M_PI / freq;
    double div = 1.0;
    if (wavelen > low_wavelen) {
      div = s.factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      div = 1.0 / ((1.0 - smooth) / s.factor + smooth);
    }
    f[i] = static_cast<float>(div);
  }
  return f;
}

}  // namespace citadel
