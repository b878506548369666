// Helpers the GPU benchmarks share (bench/gpu/*.cc): wall time, median, the device-to-device copy bandwidth (the
// roofline's memory ceiling), block tables and steps for synthetic sequences, exit on error, and the decoder
// drivers of the 7B table (bs1 decode, 512-token prefill, batched decode).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
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

// The weight bytes a decode token reads of a decoder (or tensor-parallel rank of n) holding weight_bytes in format
// f: all of them, but of an MoE model's routed experts only k of E (a rank holds E / n and runs k / n of them on
// average: the same share). Scales aside.
inline double active_weight_bytes(const ModelConfig& full, runtime::CudaWeightFormat f, double weight_bytes, int n = 1) {
  if (!full.has_moe) return weight_bytes;
  const double E = double(full.moe.n_experts), k = double(full.moe.n_experts_used);
  const double moe_layers = double(full.n_layers - full.moe.n_dense_layers);
  const double wbytes = f == runtime::CudaWeightFormat::kInt8 || f == runtime::CudaWeightFormat::kFp8 ? 1.0
                        : f == runtime::CudaWeightFormat::kInt4                                      ? 0.5
                                                                                                      : 2.0;
  const double expert_bytes = moe_layers * 3.0 * (E / n) * double(full.moe.expert_ffn_dim) * double(full.dim) * wbytes;
  return weight_bytes - expert_bytes * (1.0 - k / E);
}

// Token id x of the benchmarks' sequences, below the model's vocabulary (ids below `limit` where it is larger).
inline int32_t bench_token(const runtime::CudaDecoder& dec, int64_t x, int limit) {
  return static_cast<int32_t>(x % std::min<int64_t>(limit, dec.config().n_vocab));
}

// 128-token prompt, then 128 greedy steps (graph replays); returns decode tok/s.
inline double decode_bs1(runtime::CudaDecoder& dec) {
  const int W = dec.max_blocks_per_seq();
  auto table = table_for(0, W, W);
  std::vector<int32_t> toks(128);
  for (int i = 0; i < 128; ++i) toks[i] = bench_token(dec, i * 7919 + 13, 150000);
  std::vector<int32_t> ids;
  die(dec.step(sequence_step(toks, 0, table), &ids, nullptr), "prefill");
  auto run = [&](int n, double* secs) {
    int tok = ids[0];
    const double t0 = now_s();
    for (int k = 0; k < n; ++k) {
      runtime::CudaStep s;
      s.tokens = {tok}, s.positions = {128 + k}, s.query_start = {0, 1}, s.seq_lens = {129 + k};
      s.block_tables = table;
      die(dec.step(s, &ids, nullptr), "decode");
      tok = ids[0];
    }
    *secs = now_s() - t0;
  };
  double warm;
  run(4, &warm);  // graph capture for this bucket + warm-up
  std::vector<double> secs(3);
  for (double& t : secs) run(128, &t);  // the median of 3 runs: single runs spread by ~2%
  return 128.0 / median(secs);
}

// A 512-token prompt (one step), the median of 5 timed runs after one warm-up; returns prefill tok/s.
inline double prefill_512(runtime::CudaDecoder& dec) {
  const int W = dec.max_blocks_per_seq();
  auto table = table_for(0, W, W);
  std::vector<int32_t> toks(512);
  for (int i = 0; i < 512; ++i) toks[i] = bench_token(dec, int64_t{i} * 104729 + 7, 152000);
  std::vector<double> t;
  std::vector<int32_t> ids;
  for (int r = 0; r < 6; ++r) {
    const double t0 = now_s();
    die(dec.step(sequence_step(toks, 0, table), &ids, nullptr), "prefill512");
    if (r > 0) t.push_back(now_s() - t0);
  }
  return 512.0 / median(t);
}

// B sequences at context ctx (random KV), `steps` decode steps, the median of 3 runs; returns tok/s.
inline double decode_batch(runtime::CudaDecoder& dec, int B, int ctx, int steps) {
  const int W = dec.max_blocks_per_seq();
  const int per_seq = (ctx + steps + 4 + dec.block_size() - 1) / dec.block_size();
  dec.fill_kv_random(9);  // contexts of random K/V: decode cost does not depend on the values
  std::vector<int32_t> cur(B);
  for (int b = 0; b < B; ++b) cur[b] = bench_token(dec, b * 31 + 5, 150000);
  auto run = [&](int k0, int n) {
    std::vector<int32_t> ids;
    for (int k = k0; k < k0 + n; ++k) {
      runtime::CudaStep s;
      s.query_start = {0};
      for (int b = 0; b < B; ++b) {
        s.tokens.push_back(cur[b]), s.positions.push_back(ctx + k);
        s.query_start.push_back(b + 1), s.seq_lens.push_back(ctx + k + 1);
        auto t = table_for(b, per_seq, W);
        s.block_tables.insert(s.block_tables.end(), t.begin(), t.end());
      }
      die(dec.step(s, &ids, nullptr), "decode batch");
      cur = ids;
    }
  };
  run(0, 4);
  std::vector<double> rate;  // the median of 3 runs over the same positions (contexts ctx + 5 .. ctx + 4 + steps)
  for (int r = 0; r < 3; ++r) {
    const double t0 = now_s();
    run(4, steps);
    rate.push_back(double(B) * steps / (now_s() - t0));
  }
  std::fprintf(stderr, "decode B=%d ctx=%d: runs %.0f %.0f %.0f tok/s\n", B, ctx, rate[0], rate[1], rate[2]);
  return median(rate);
}

}  // namespace citadel::benchutil
