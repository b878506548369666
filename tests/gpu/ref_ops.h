// Scalar CPU references for the CUDA kernels (obvious fp32/fp64 code; the CPU twins of src/kernels/cpu replace
// these when they land), plus small device-memory helpers for the GPU tests.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "base/half.h"

namespace citadel::gputest {

// True when a CUDA device can be used; tests call GTEST_SKIP otherwise.
inline bool have_gpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}
#define SKIP_WITHOUT_GPU() \
  if (!::citadel::gputest::have_gpu()) GTEST_SKIP() << "no CUDA device"

template <typename T>
struct DevArray {
  T* p = nullptr;
  size_t n = 0;
  explicit DevArray(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), sizeof(T) * std::max<size_t>(n, 1)), cudaSuccess);
    cudaMemset(p, 0xff, sizeof(T) * n);  // poison: NaN for floats/bf16, -1 for ints
  }
  explicit DevArray(const std::vector<T>& h) : DevArray(h.size()) { upload(h); }
  ~DevArray() { cudaFree(p); }
  DevArray(const DevArray&) = delete;
  void upload(const std::vector<T>& h) {
    EXPECT_EQ(cudaMemcpy(p, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

inline std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng, float scale = 1.f) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = f32_to_bf16(d(rng));
  return v;
}
inline std::vector<float> to_f32(const std::vector<uint16_t>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = bf16_to_f32(v[i]);
  return r;
}

// ||out - ref||^2 / ||ref||^2; NaN anywhere (e.g. an unwritten poisoned element) gives +inf.
inline double nmse(const std::vector<float>& out, const std::vector<float>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0 ? num / den : num;
}

// ---- references ----
// y[m][n] = sum_k x[m][k] * W[n][k] (+ bias[n]), fp64 accumulation.
inline std::vector<float> ref_matmul(const std::vector<float>& x, const std::vector<float>& W, const float* bias,
                                     int M, int N, int K) {
  std::vector<float> y(static_cast<size_t>(M) * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; ++k) s += static_cast<double>(x[size_t(m) * K + k]) * W[size_t(n) * K + k];
      y[size_t(m) * N + n] = static_cast<float>(s);
    }
  return y;
}

// gu [M][2F] (gate columns, then up columns) -> [M][F] = silu(gate) * up, in double.
inline std::vector<float> ref_swiglu(const std::vector<float>& gu, int M, int F) {
  std::vector<float> y(static_cast<size_t>(M) * F);
  for (int m = 0; m < M; ++m)
    for (int f = 0; f < F; ++f) {
      const double g = gu[size_t(m) * 2 * F + f], u = gu[size_t(m) * 2 * F + F + f];
      y[size_t(m) * F + f] = static_cast<float>(g / (1.0 + std::exp(-g)) * u);
    }
  return y;
}

inline void ref_rmsnorm(std::vector<float>& residual, const std::vector<float>* delta, const std::vector<float>& w,
                        std::vector<float>& out, int T, int D, float eps) {
  out.resize(size_t(T) * D);
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < D; ++i) {
      float& r = residual[size_t(t) * D + i];
      if (delta) r += (*delta)[size_t(t) * D + i];
      ss += double(r) * r;
    }
    const double inv = 1.0 / std::sqrt(ss / D + eps);
    for (int i = 0; i < D; ++i) out[size_t(t) * D + i] = float(residual[size_t(t) * D + i] * inv * w[i]);
  }
}

inline void ref_rope(std::vector<float>& x, int T, int n_heads, int head_dim, int row_stride, const int32_t* pos,
                     float theta, bool neox) {
  const int half = head_dim / 2;
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < n_heads; ++h)
      for (int i = 0; i < half; ++i) {
        const double ang = pos[t] * std::pow(double(theta), -2.0 * i / head_dim);
        float* hp = &x[size_t(t) * row_stride + h * head_dim];
        const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        const double x0 = hp[a], x1 = hp[b];
        hp[a] = float(x0 * std::cos(ang) - x1 * std::sin(ang));
        hp[b] = float(x0 * std::sin(ang) + x1 * std::cos(ang));
      }
}

inline float ref_silu(float a) { return a / (1.f + std::exp(-a)); }

// Attention of n_q queries (the last n_q positions of a ctx-token context) against K/V [ctx][n_kv][D] for one
// sequence. q/out: [n_q][n_heads][D]. Causal, bottom-right aligned.
inline void ref_attention(const std::vector<float>& q, const std::vector<float>& K, const std::vector<float>& V,
                          std::vector<float>& out, int n_q, int ctx, int n_heads, int n_kv, int D, float scale) {
  out.assign(size_t(n_q) * n_heads * D, 0.f);
  const int G = n_heads / n_kv;
  std::vector<double> s(ctx);
  for (int i = 0; i < n_q; ++i) {
    const int qpos = ctx - n_q + i;
    for (int h = 0; h < n_heads; ++h) {
      const int kvh = h / G;
      double mx = -1e300;
      for (int t = 0; t <= qpos; ++t) {
        double d = 0;
        for (int c = 0; c < D; ++c)
          d += double(q[(size_t(i) * n_heads + h) * D + c]) * K[(size_t(t) * n_kv + kvh) * D + c];
        s[t] = d * scale;
        mx = std::max(mx, s[t]);
      }
      double sum = 0;
      for (int t = 0; t <= qpos; ++t) sum += (s[t] = std::exp(s[t] - mx));
      for (int c = 0; c < D; ++c) {
        double o = 0;
        for (int t = 0; t <= qpos; ++t) o += s[t] * V[(size_t(t) * n_kv + kvh) * D + c];
        out[(size_t(i) * n_heads + h) * D + c] = float(o / sum);
      }
    }
  }
}

}  // namespace citadel::gputest
