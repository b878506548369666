// CPU fp32 twin of the synthetic CudaDecoder model (same weights via synth_weight_value), shared by the GPU tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "ref_ops.h"
#include "runtime/cuda_decoder.h"

namespace citadel::gputest {

using runtime::CudaModelConfig;
using runtime::CudaWeight;

// A small qwen2-like shape (GQA 2, head_dim 128, qkv bias, NEOX rope).
inline CudaModelConfig small_config() {
  CudaModelConfig c;
  c.hidden_dim = 256, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 128, c.ffn_dim = 512;
  c.n_vocab = 1000, c.qkv_bias = true, c.rope_neox = true, c.rope_theta = 10000.f, c.rms_eps = 1e-6f;
  return c;
}

inline std::vector<float> tensor(const CudaModelConfig& c, uint32_t seed, CudaWeight w, int layer) {
  int64_t r, k;
  runtime::cuda_weight_shape(c, w, &r, &k);
  std::vector<float> v(size_t(r * k));
  for (size_t i = 0; i < v.size(); ++i) v[i] = runtime::synth_weight_value(c, seed, w, layer, uint32_t(i));
  return v;
}

// fp32 forward of one sequence; returns logits [n][V] for every position.
inline std::vector<float> cpu_forward(const CudaModelConfig& c, uint32_t seed, const std::vector<int32_t>& toks) {
  const int n = int(toks.size()), D = c.hidden_dim, H = c.n_heads, KV = c.n_kv_heads, Dh = c.head_dim;
  const int F = c.ffn_dim;
  auto emb = tensor(c, seed, CudaWeight::kEmbed, 0);
  std::vector<float> x(size_t(n) * D), h;
  for (int t = 0; t < n; ++t) std::copy_n(&emb[size_t(toks[t]) * D], D, &x[size_t(t) * D]);
  std::vector<int32_t> pos(n);
  for (int t = 0; t < n; ++t) pos[t] = t;
  for (int l = 0; l < c.n_layers; ++l) {
    ref_rmsnorm(x, nullptr, tensor(c, seed, CudaWeight::kAttnNorm, l), h, n, D, c.rms_eps);
    auto q = ref_matmul(h, tensor(c, seed, CudaWeight::kWq, l), tensor(c, seed, CudaWeight::kBq, l).data(), n, H * Dh, D);
    auto k = ref_matmul(h, tensor(c, seed, CudaWeight::kWk, l), tensor(c, seed, CudaWeight::kBk, l).data(), n, KV * Dh, D);
    auto v = ref_matmul(h, tensor(c, seed, CudaWeight::kWv, l), tensor(c, seed, CudaWeight::kBv, l).data(), n, KV * Dh, D);
    ref_rope(q, n, H, Dh, H * Dh, pos.data(), c.rope_theta, c.rope_neox);
    ref_rope(k, n, KV, Dh, KV * Dh, pos.data(), c.rope_theta, c.rope_neox);
    std::vector<float> att;
    ref_attention(q, k, v, att, n, n, H, KV, Dh, 1.f / std::sqrt(float(Dh)));
    auto o = ref_matmul(att, tensor(c, seed, CudaWeight::kWo, l), nullptr, n, D, H * Dh);
    ref_rmsnorm(x, &o, tensor(c, seed, CudaWeight::kFfnNorm, l), h, n, D, c.rms_eps);
    auto g = ref_matmul(h, tensor(c, seed, CudaWeight::kWGate, l), nullptr, n, F, D);
    auto u = ref_matmul(h, tensor(c, seed, CudaWeight::kWUp, l), nullptr, n, F, D);
    for (size_t i = 0; i < g.size(); ++i) g[i] = ref_silu(g[i]) * u[i];
    auto down = ref_matmul(g, tensor(c, seed, CudaWeight::kWDown, l), nullptr, n, D, F);
    for (size_t i = 0; i < x.size(); ++i) x[i] += down[i];
  }
  ref_rmsnorm(x, nullptr, tensor(c, seed, CudaWeight::kOutputNorm, 0), h, n, D, c.rms_eps);
  return ref_matmul(h, tensor(c, seed, CudaWeight::kOutput, 0), nullptr, n, c.n_vocab, D);
}

inline int argmax_row(const float* r, int V) { return int(std::max_element(r, r + V) - r); }

}  // namespace citadel::gputest
