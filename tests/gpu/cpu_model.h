// CPU fp32 twin of the synthetic CudaDecoder model (same weights via synth_weight_value), shared by the GPU tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "ref_ops.h"
#include "model/config.h"
#include "model/roles.h"
#include "runtime/cuda_decoder.h"

namespace citadel::gputest {

using R = TensorRole;

// A small qwen2 shape (GQA 2, head_dim 128, qkv bias, NEOX rope).
inline ModelConfig small_config() {
  ModelConfig c;
  c.arch = "qwen2", c.name = "small synthetic qwen2";
  c.dim = 256, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 128, c.ffn_dim = 512;
  c.n_vocab = 1000, c.context_len = 4096, c.attn_bias = true, c.rope_type = RopeStyle::kNeox, c.rope_dim = 128;
  c.rope_theta = 10000.0, c.norm_eps = 1e-6;
  return c;
}

inline std::vector<float> tensor(const ModelConfig& c, uint32_t seed, TensorRole r, int layer) {
  size_t n = 1;
  for (int64_t d : role_shape(c, r)) n *= size_t(d);
  std::vector<float> v(n);
  for (size_t i = 0; i < v.size(); ++i) v[i] = runtime::synth_weight_value(c, seed, r, layer, uint32_t(i));
  return v;
}

// fp32 forward of one sequence; returns logits [n][V] for every position.
inline std::vector<float> cpu_forward(const ModelConfig& c, uint32_t seed, const std::vector<int32_t>& toks) {
  const int n = int(toks.size()), D = int(c.dim), H = int(c.n_heads), KV = int(c.n_kv_heads), Dh = int(c.head_dim);
  const int F = int(c.ffn_dim), V = int(c.n_vocab);
  const float eps = float(c.norm_eps), theta = float(c.rope_theta);
  const bool neox = c.rope_type == RopeStyle::kNeox;
  auto emb = tensor(c, seed, R::kTokEmbd, 0);
  std::vector<float> x(size_t(n) * D), h;
  for (int t = 0; t < n; ++t) std::copy_n(&emb[size_t(toks[t]) * D], D, &x[size_t(t) * D]);
  std::vector<int32_t> pos(n);
  for (int t = 0; t < n; ++t) pos[t] = t;
  for (int l = 0; l < c.n_layers; ++l) {
    ref_rmsnorm(x, nullptr, tensor(c, seed, R::kAttnNorm, l), h, n, D, eps);
    auto q = ref_matmul(h, tensor(c, seed, R::kWq, l), tensor(c, seed, R::kBq, l).data(), n, H * Dh, D);
    auto k = ref_matmul(h, tensor(c, seed, R::kWk, l), tensor(c, seed, R::kBk, l).data(), n, KV * Dh, D);
    auto v = ref_matmul(h, tensor(c, seed, R::kWv, l), tensor(c, seed, R::kBv, l).data(), n, KV * Dh, D);
    ref_rope(q, n, H, Dh, H * Dh, pos.data(), theta, neox);
    ref_rope(k, n, KV, Dh, KV * Dh, pos.data(), theta, neox);
    std::vector<float> att;
    ref_attention(q, k, v, att, n, n, H, KV, Dh, 1.f / std::sqrt(float(Dh)));
    auto o = ref_matmul(att, tensor(c, seed, R::kWo, l), nullptr, n, D, H * Dh);
    ref_rmsnorm(x, &o, tensor(c, seed, R::kFfnNorm, l), h, n, D, eps);
    auto g = ref_matmul(h, tensor(c, seed, R::kGate, l), nullptr, n, F, D);
    auto u = ref_matmul(h, tensor(c, seed, R::kUp, l), nullptr, n, F, D);
    for (size_t i = 0; i < g.size(); ++i) g[i] = ref_silu(g[i]) * u[i];
    auto down = ref_matmul(g, tensor(c, seed, R::kDown, l), nullptr, n, D, F);
    for (size_t i = 0; i < x.size(); ++i) x[i] += down[i];
  }
  ref_rmsnorm(x, nullptr, tensor(c, seed, R::kOutputNorm, 0), h, n, D, eps);
  return ref_matmul(h, tensor(c, seed, R::kOutput, 0), nullptr, n, V, D);
}

inline int argmax_row(const float* r, int V) { return int(std::max_element(r, r + V) - r); }

}  // namespace citadel::gputest
