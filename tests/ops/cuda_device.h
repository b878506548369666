// Device-memory helpers of the CUDA adapters of the op-parity harness (backend_cuda.cc, backend_cuda_mla.cc): bf16
// conversion, a Device that owns one case's allocations (poisoned with 0xff: NaN) and keeps the first CUDA error,
// and padded rows whose padding must survive a kernel. Header-only, for the adapters' translation units.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "base/half.h"
#include "kernels/cuda/cuda_ops.h"
#include "tests/ops/op_cases.h"

namespace citadel::opparity {

using bf16 = citadel::cuda::bf16_t;

// "" when a CUDA device can run the cases, else why not (Backend::unavailable of the CUDA adapters).
inline std::string cuda_unavailable() {
  static const bool have = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return n > 0;
  }();
  return have ? "" : "no CUDA device";
}

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
  return h;
}
inline std::vector<float> from_bf16(const std::vector<bf16>& h) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = bf16_to_f32(h[i]);
  return v;
}

// Device memory of one case; frees everything at the end and keeps the first CUDA error. Callers check error()
// before launching on what alloc / upload returned (null after a failed allocation).
class Device {
 public:
  Device() = default;
  Device(const Device&) = delete;
  ~Device() {
    for (void* p : ptrs_) cudaFree(p);
  }
  template <typename T>
  T* alloc(size_t n) {
    void* p = nullptr;
    if (!ok(cudaMalloc(&p, sizeof(T) * std::max<size_t>(n, 1)), "cudaMalloc")) return nullptr;
    ptrs_.push_back(p);
    ok(cudaMemset(p, 0xff, sizeof(T) * n), "cudaMemset");  // poison: NaN for floats and bf16, -1 for ints
    return static_cast<T*>(p);
  }
  template <typename T>
  T* upload(const std::vector<T>& h) {
    T* d = alloc<T>(h.size());
    if (d && !h.empty()) ok(cudaMemcpy(d, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice), "upload");
    return d;
  }
  template <typename T>
  std::vector<T> download(const T* d, size_t n) {
    std::vector<T> h(n);
    if (d && ok(cudaDeviceSynchronize(), "synchronise"))
      ok(cudaMemcpy(h.data(), d, sizeof(T) * n, cudaMemcpyDeviceToHost), "download");
    return h;
  }
  template <typename T>
  void poison(T* d, size_t n) {
    if (d) ok(cudaMemset(d, 0xff, sizeof(T) * n), "cudaMemset");
  }
  template <typename T>
  void zero(T* d, size_t n) {
    if (d) ok(cudaMemset(d, 0, sizeof(T) * n), "cudaMemset");
  }
  // After a launch: the launch status and the kernel's completion.
  bool launched(const char* what) { return ok(cudaGetLastError(), what) && ok(cudaDeviceSynchronize(), what); }
  bool ok(cudaError_t e, const char* what) {
    if (e != cudaSuccess && error_.empty()) error_ = std::string(what) + ": " + cudaGetErrorString(e);
    return e == cudaSuccess;
  }
  const std::string& error() const { return error_; }
  void fail(const std::string& what) {
    if (error_.empty()) error_ = what;
  }

 private:
  std::vector<void*> ptrs_;
  std::string error_;
};

inline void put(std::vector<ImplResult>* results, const std::string& impl, const char* name, std::vector<float> v) {
  results->push_back({impl, {}});
  results->back().out.f[name] = std::move(v);
}

// Rows [T][width] placed in rows of `stride` >= width with padding of `pad_value` (bf16 or f32 bits), and back:
// strip() fails the case when a kernel wrote into the padding.
template <typename T>
inline std::vector<T> pad_rows(const std::vector<T>& x, int t, int width, int stride, T pad_value) {
  std::vector<T> p(size_t(t) * stride, pad_value);
  for (int i = 0; i < t; ++i) std::copy_n(&x[size_t(i) * width], width, &p[size_t(i) * stride]);
  return p;
}
template <typename T>
inline std::vector<T> strip(const std::vector<T>& p, int t, int width, int stride, T pad_value, Device& dev) {
  std::vector<T> x(size_t(t) * width);
  for (int i = 0; i < t; ++i) {
    std::copy_n(&p[size_t(i) * stride], width, &x[size_t(i) * width]);
    for (int c = width; c < stride; ++c)
      if (std::memcmp(&p[size_t(i) * stride + c], &pad_value, sizeof(T)) != 0)
        dev.fail("a kernel wrote into the padding of row " + std::to_string(i) + " at column " + std::to_string(c));
  }
  return x;
}

}  // namespace citadel::opparity
