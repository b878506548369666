// CPU kernel benchmarks: GEMV (n_tokens = 1) at SmolLM2-135M and Qwen2-0.5B shapes per weight dtype, reporting
// weight bytes read per second (counter "weight_B/s") to compare with the STREAM-like read bandwidth below (the
// roofline for decode); prefill matmul (n_tokens = 128) reporting GFLOP/s.
//   build/kernels_bench --benchmark_filter=...   (CITADEL_THREADS sets the thread count)
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "base/half.h"
#include "base/thread_pool.h"
#include "kernels/ops.h"
#include "kernels/quant/quant.h"

namespace citadel {
namespace {

constexpr DType kTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                            DType::kQ5_0, DType::kQ5_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

std::vector<uint8_t> make_weights(DType t, int64_t rows, int64_t cols) {
  std::vector<float> row(cols);
  for (int64_t i = 0; i < cols; ++i) row[i] = 0.01f * static_cast<float>((i * 7919) % 201 - 100);
  const size_t rb = dtype_row_bytes(t, cols);
  std::vector<uint8_t> w(rows * rb);
  std::vector<uint8_t> one(rb);
  (void)quantize_row(t, row.data(), one.data(), cols);
  for (int64_t r = 0; r < rows; ++r) std::memcpy(w.data() + r * rb, one.data(), rb);
  return w;
}

// args: dtype id, n_out, n_in, n_tokens
void BM_Matmul(benchmark::State& state) {
  const DType t = static_cast<DType>(state.range(0));
  const int64_t n_out = state.range(1), n_in = state.range(2), n_tok = state.range(3);
  std::vector<uint8_t> w = make_weights(t, n_out, n_in);
  std::vector<float> x(n_tok * n_in, 0.5f), y(n_tok * n_out);
  WeightView wv{t, w.data(), n_out, n_in};
  std::vector<uint8_t> il;  // the decode layout, as model loading builds it where matmul reads it
  if (cpu::interleave_wanted(t)) {
    il.resize(cpu::interleaved_bytes(t, n_out, n_in) + 64);
    uint8_t* p = il.data() + (64 - reinterpret_cast<uintptr_t>(il.data()) % 64) % 64;  // 64-byte aligned
    if (!cpu::interleave_weights(wv, p).ok()) state.SkipWithError("interleave failed");
    wv.interleaved = p;
  }
  for (auto _ : state) {
    if (!cpu::matmul(wv, x.data(), n_tok, y.data()).ok()) state.SkipWithError("matmul failed");
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(dtype_name(t));
  state.counters["weight_B/s"] =
      benchmark::Counter(static_cast<double>(w.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n_out * n_in * n_tok * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void GemvArgs(benchmark::internal::Benchmark* b) {
  for (DType t : kTypes) {
    // SmolLM2-135M's shapes, Qwen2-0.5B's FFN down, and the 7B FFN's (tens of MB: DRAM-bound)
    for (auto [o, i] : {std::pair{576, 1536}, {1536, 576}, {49152, 576}, {896, 4864}, {18944, 3584}, {3584, 18944}})
      if (dtype_row_bytes(t, i) != 0) b->Args({static_cast<int64_t>(t), o, i, 1});  // K-quants need n_in % 256
  }
}
void PrefillArgs(benchmark::internal::Benchmark* b) {
  for (DType t : kTypes) b->Args({static_cast<int64_t>(t), 576, 1536, 128});
  for (DType t : {DType::kF16, DType::kQ8_0, DType::kQ4_0}) {  // Qwen2-0.5B's FFN: up / gate, then down
    b->Args({static_cast<int64_t>(t), 4864, 896, 128});
    b->Args({static_cast<int64_t>(t), 896, 4864, 128});
  }
  for (DType t : {DType::kQ8_0, DType::kQ4_0}) b->Args({static_cast<int64_t>(t), 3584, 3584, 128});  // 7B's wo
  for (DType t : {DType::kQ4_K, DType::kQ6_K}) {  // Qwen2-0.5B's FFN down (its only 256-multiple n_in), 7B's wo
    b->Args({static_cast<int64_t>(t), 896, 4864, 128});
    b->Args({static_cast<int64_t>(t), 3584, 3584, 128});
  }
}
BENCHMARK(BM_Matmul)->Name("gemv")->Apply(GemvArgs)->UseRealTime()->MinTime(0.2);
// K-quant matmul at 1 to 16 tokens (batched decode; the GEMM takes over from 4 tokens): Qwen2-0.5B's FFN down.
void SmallBatchArgs(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::kQ4_K, DType::kQ6_K}) {
    for (int n : {1, 2, 3, 4, 6, 8, 16}) b->Args({static_cast<int64_t>(t), 896, 4864, n});
  }
}
BENCHMARK(BM_Matmul)->Name("small_batch")->Apply(SmallBatchArgs)->UseRealTime()->MinTime(0.2);
BENCHMARK(BM_Matmul)->Name("prefill128")->Apply(PrefillArgs)->UseRealTime()->MinTime(0.2);

// Decode attention (one token at position ctx - 1) over n_layers layers' f32 KV caches, as a decode step meets them:
// with cold = 1 a 2.5 MB slice of a 75 MB buffer (SmolLM2-135M q4_0's weight bytes per layer) is read between
// layers, so each layer's keys come from wherever a decode step leaves them; only the attention calls are timed.
// args: n_heads, n_kv_heads, head_dim, ctx, cold, f16 (1: f16 cache). CITADEL_CPU_ATTN=avx2 selects the AVX2 kernel.
void BM_AttnDecode(benchmark::State& state) {
  const int H = static_cast<int>(state.range(0)), KVH = static_cast<int>(state.range(1));
  const int hd = static_cast<int>(state.range(2)), ctx = static_cast<int>(state.range(3));
  const bool cold = state.range(4) != 0, f16 = state.range(5) != 0;
  constexpr int kLayers = 30, kBs = 16;
  const int n_blocks = (ctx + kBs - 1) / kBs;
  const size_t pool = static_cast<size_t>(n_blocks) * kBs * KVH * hd;
  std::vector<std::vector<float>> k(kLayers), v(kLayers);  // f16 caches use the first half of each (as uint16)
  for (int l = 0; l < kLayers; ++l) {
    k[l].resize(pool);
    v[l].resize(pool);
    for (size_t i = 0; i < pool; ++i) {
      const float a = 0.01f * static_cast<float>((i * 7919 + l) % 201 - 100);
      const float b = 0.01f * static_cast<float>((i * 104729 + l) % 199 - 99);
      if (f16) {
        reinterpret_cast<uint16_t*>(k[l].data())[i] = f32_to_f16(a);
        reinterpret_cast<uint16_t*>(v[l].data())[i] = f32_to_f16(b);
      } else {
        k[l][i] = a;
        v[l][i] = b;
      }
    }
  }
  std::vector<int32_t> table(n_blocks);
  for (int i = 0; i < n_blocks; ++i) table[i] = i;
  const int32_t seq = 0, pos = ctx - 1;
  AttnBatch batch{1, table.data(), n_blocks, 1, &seq, &pos};
  std::vector<float> q(static_cast<size_t>(H) * hd, 0.1f), out(q.size());
  const size_t slice = (5u << 20) / 2 / sizeof(uint64_t);
  std::vector<uint64_t> sweep(cold ? slice * kLayers : 0, 1);
  uint64_t sink = 0;
  for (auto _ : state) {
    double t = 0;
    for (int l = 0; l < kLayers; ++l) {
      if (cold) {
        ThreadPool::global().parallel_for(static_cast<int64_t>(slice), [&](int64_t b, int64_t e) {
          uint64_t s = 0;
          for (int64_t i = b; i < e; ++i) s += sweep[l * slice + i];
          benchmark::DoNotOptimize(s);
        }, 1 << 14);
      }
      KvCacheView c{f16 ? DType::kF16 : DType::kF32, k[l].data(), v[l].data(), n_blocks, kBs, KVH, hd};
      const auto t0 = std::chrono::steady_clock::now();
      cpu::attention(q.data(), c, batch, H, 0.0f, out.data());
      t += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      sink += static_cast<uint64_t>(out[0] != 0);
    }
    state.SetIterationTime(t);
  }
  benchmark::DoNotOptimize(sink);
  state.counters["kv_B/s"] = benchmark::Counter(2.0 * (f16 ? 2 : 4) * ctx * KVH * hd * kLayers,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
// SmolLM2-135M (9 heads, 3 KV heads) and Qwen2-0.5B (14, 2) at decode contexts 64 and 192, warm and cold caches,
// f32 and f16 caches.
BENCHMARK(BM_AttnDecode)->Name("attn_decode")->ArgsProduct({{9}, {3}, {64}, {64, 192}, {0, 1}, {0, 1}})
    ->Args({14, 2, 64, 192, 1, 0})->UseManualTime()->MinTime(0.3);

// STREAM-like bandwidth over 256 MiB, threaded like the kernels: read (sum) and copy (read + write counted).
void BM_StreamRead(benchmark::State& state) {
  const size_t n = (256u << 20) / sizeof(float);
  std::vector<float> a(n, 1.0f);
  std::vector<float> partial(ThreadPool::global().size() * 64);
  for (auto _ : state) {
    ThreadPool::global().parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int64_t i = b; i + 4 <= e; i += 4) {
        s0 += a[i]; s1 += a[i + 1]; s2 += a[i + 2]; s3 += a[i + 3];
      }
      benchmark::DoNotOptimize(s0 + s1 + s2 + s3);
    }, 1 << 16);
  }
  state.counters["read_B/s"] = benchmark::Counter(n * 4.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_StreamRead)->UseRealTime()->MinTime(0.5);

void BM_StreamCopy(benchmark::State& state) {
  const size_t n = (256u << 20) / sizeof(float);
  std::vector<float> a(n, 1.0f), c(n);
  for (auto _ : state) {
    ThreadPool::global().parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
      std::memcpy(c.data() + b, a.data() + b, (e - b) * sizeof(float));
    }, 1 << 16);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["rw_B/s"] = benchmark::Counter(n * 8.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_StreamCopy)->UseRealTime()->MinTime(0.5);

}  // namespace
}  // namespace citadel

BENCHMARK_MAIN();
