// Helpers the GPU benchmarks share (bench/gpu/*.cc): wall time, median, the device-to-device copy bandwidth (the
// roofline's memory ceiling), block tables and steps for synthetic sequences, exit on error.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "base/status.h"
#include "kernels/cuda/cuda_ops.h"
#include "runtime/cuda_decoder.h"

namespace citadel::benchutil {

#define BENCH_CHECK(expr)                                                           \
  do {                                                                              \
    cudaError_t _e = (expr);                                                        \
    if (_e != cudaSuccess) {                                                        \
      std::fprintf(stderr, "%s: %s\n", #expr, cudaGetErrorString(_e));             \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

inline double copy_bandwidth_gbps() {
  const size_t bytes = size_t{2} << 30;
  void *a, *b;
  BENCH_CHECK(cudaMalloc(&a, bytes));
  BENCH_CHECK(cudaMalloc(&b, bytes));
  cuda::fill_random_bf16(static_cast<uint16_t*>(a), bytes / 2, 1, 1.f, nullptr);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  std::vector<double> t;
  for (int i = 0; i < 23; ++i) {
    cudaEventRecord(e0);
    BENCH_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 3) t.push_back(ms);
  }
  cudaFree(a), cudaFree(b);
  return 2.0 * bytes / (median(t) * 1e-3) / 1e9;  // bytes read + written
}

// Mean device time of f (ms) over `reps` runs on the default stream, after one warm-up run.
inline float time_ms(const std::function<void()>& f, int reps = 20) {
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  f();
  cudaEventRecord(e0);
  for (int i = 0; i < reps; ++i) f();
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  float ms;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  BENCH_CHECK(cudaGetLastError());
  return ms / reps;
}

// Sequence b uses blocks [b*per_seq, (b+1)*per_seq).
inline std::vector<int32_t> table_for(int b, int per_seq, int width) {
  std::vector<int32_t> t(width, 0);
  for (int i = 0; i < per_seq && i < width; ++i) t[i] = b * per_seq + i;
  return t;
}

// One sequence's tokens at positions start.. over its block table (all_logits: every row's logits, else the last).
inline runtime::CudaStep sequence_step(const std::vector<int32_t>& toks, int start, const std::vector<int32_t>& table,
                                       bool all_logits = false) {
  runtime::CudaStep s;
  for (size_t i = 0; i < toks.size(); ++i) s.tokens.push_back(toks[i]), s.positions.push_back(start + int(i));
  s.query_start = {0, int(toks.size())};
  s.seq_lens = {start + int(toks.size())};
  s.block_tables = table;
  s.all_logits = all_logits;
  return s;
}

inline void die(const Status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, st.to_string().c_str());
    std::exit(1);
  }
}

// The first CUDA device's properties; "no CUDA device" and exit status 2 without one.
inline cudaDeviceProp device_or_exit() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    std::exit(2);
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  return prop;
}

}  // namespace citadel::benchutil
