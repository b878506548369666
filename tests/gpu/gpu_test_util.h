// Device-memory helpers of the GPU tests: whether a CUDA device is there, a poisoned device array, random bf16
// data and an NMSE. Kernel parity itself lives in the op-parity harness (tests/ops/); these serve the tests that
// check behaviour beyond a reference (quantiser bits, fused == separate kernels, sampling, decoder, engine).
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
inline std::vector<float> random_f32(size_t n, std::mt19937& rng, float scale = 1.f) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
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

}  // namespace citadel::gputest
