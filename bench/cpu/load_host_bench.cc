// Host side of the CUDA weight load, no GPU: what each path spends on the host before the bytes reach the device.
//   reference: read_cuda_weights (tensor_to_f32, one thread) + set_weight_f32's f32 -> bf16 loop (cuda_decoder.cu);
//   fast:      plan_cuda_weights + plan_staging + fill_batch on a thread pool into 3 rotating 64 MiB buffers
//              (f16/bf16 bytes copied as they are: their conversion runs on the device);
//   fast_hostconv: the same, but f16 tensors converted on the host (f16 -> f32 -> bf16 per element, on the pool):
//              the alternative to the device pass, to weigh one against the other;
//   fast_hostsimd: that host conversion with F16C + AVX2 (8 elements per step; bench-only code, checked against
//              the scalar conversion once at start).
// Rounds interleave the variants (order rotated each round); prints medians, the load average and GB/s of file bytes.
// The model is synthesized at --model if absent (default preset qwen2-0.5b, f16).
// Usage: citadel_load_host_bench --model /tmp/q05-f16.gguf [--preset qwen2-0.5b] [--dtype f16] [--rounds 5]
//          [--threads 0]
#include <algorithm>
#include <immintrin.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/half.h"
#include "base/thread_pool.h"
#include "model/config.h"
#include "model/synth.h"
#include "runtime/cuda_loader.h"
#include "runtime/weight_staging.h"

using namespace citadel;
using namespace citadel::runtime;

namespace {

[[noreturn]] void die(const std::string& m) {
  std::fprintf(stderr, "load_host_bench: %s\n", m.c_str());
  std::exit(1);
}
void check(const Status& s, const char* what) {
  if (!s.ok()) die(std::string(what) + ": " + s.to_string());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void reference(const TensorStore& store, const ModelConfig& c) {
  std::vector<uint16_t> b;
  check(read_cuda_weights(store, c, [&](TensorRole, int, const float* p, int64_t n) {
    b.resize(static_cast<size_t>(n));
    for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_bf16(p[i]);
    return OkStatus();
  }), "reference");
}

// dst [n] bf16 = f32_to_bf16(f16_to_f32(src[i])) for finite inputs (NaNs are not handled: bench only).
__attribute__((target("avx2,f16c"))) void f16_to_bf16_simd(const uint8_t* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  const __m256i lsb = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
  for (; i + 8 <= n; i += 8) {
    const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * 2)));
    __m256i u = _mm256_castps_si256(f);
    u = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), lsb)));
    u = _mm256_srli_epi32(u, 16);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), packed);
  }
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + i * 2, 2);
    dst[i] = f32_to_bf16(f16_to_f32(h));
  }
}

enum class Mode { kDevice, kHostScalar, kHostSimd };

void fast(const TensorStore& store, const ModelConfig& c, ThreadPool& pool, std::vector<std::vector<uint8_t>>& bufs,
          Mode mode) {
  const bool host_f16 = mode == Mode::kHostScalar;
  auto refs = plan_cuda_weights(store, c);
  check(refs.status(), "plan");
  std::vector<StagedTensor> ts;
  for (const CudaWeightRef& w : *refs) {
    if (w.role == TensorRole::kRopeFreqs) continue;
    auto f = stage_form(*w.tensor, 2);
    check(f.status(), "form");
    ts.push_back(StagedTensor{w.tensor, host_f16 && *f == StageForm::kF16 ? StageForm::kBf16 : *f, w.tensor->numel()});
  }
  auto batches = plan_staging(ts, static_cast<int64_t>(bufs[0].size()), int64_t{2} << 20);
  check(batches.status(), "staging plan");
  for (size_t k = 0; k < batches->size(); ++k) {
    uint8_t* buf = bufs[k % bufs.size()].data();
    if (mode != Mode::kHostSimd) {
      check(fill_batch(ts, (*batches)[k], pool, buf), "fill");
      continue;
    }
    const StageBatch& b = (*batches)[k];
    pool.parallel_for(static_cast<int64_t>(b.pieces.size()), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const StagePiece& p = b.pieces[static_cast<size_t>(i)];
        const StagedTensor& t = ts[static_cast<size_t>(p.tensor)];
        if (t.form == StageForm::kF16)
          f16_to_bf16_simd(t.tensor->data + p.begin * 2, reinterpret_cast<uint16_t*>(buf + p.offset), p.end - p.begin);
        else
          check(stage_range(*t.tensor, t.form, p.begin, p.end, buf + p.offset), "stage");
      }
    });
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, preset = "qwen2-0.5b", dtype = "f16";
  int rounds = 5, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model = v;
    else if (k == "--preset") preset = v;
    else if (k == "--dtype") dtype = v;
    else if (k == "--rounds") rounds = std::atoi(v.c_str());
    else if (k == "--threads") threads = std::atoi(v.c_str());
    else die("unknown option " + k);
  }
  if (model.empty() || rounds <= 0) die("--model PATH is required (--rounds > 0)");
  if (!std::filesystem::exists(model)) {
    SynthOptions o;
    o.preset = preset, o.dtype = dtype, o.seed = 1, o.out = model;
    check(write_synth(o), "synth");
  }
  if (threads <= 0) threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  auto store = open_model_file(model);
  check(store.status(), "open");
  auto mc = model_config_from(**store);
  check(mc.status(), "config");
  ThreadPool pool(threads);
  std::vector<std::vector<uint8_t>> bufs(3, std::vector<uint8_t>(size_t{64} << 20, 1));  // touched: no first faults
  {  // the SIMD conversion equals the scalar one on finite values
    std::vector<uint16_t> in, a(65536), b(65536);
    for (uint32_t h = 0; h < 65536; ++h)
      if (((h >> 10) & 0x1f) != 0x1f) in.push_back(static_cast<uint16_t>(h));
    f16_to_bf16_simd(reinterpret_cast<const uint8_t*>(in.data()), a.data(), static_cast<int64_t>(in.size()));
    for (size_t i = 0; i < in.size(); ++i)
      if (a[i] != f32_to_bf16(f16_to_f32(in[i]))) die("simd conversion differs at f16 " + std::to_string(in[i]));
  }
  const char* names[] = {"reference", "fast", "fast_hostconv", "fast_hostsimd"};
  std::vector<std::function<void()>> fns = {[&] { reference(**store, *mc); },
                                            [&] { fast(**store, *mc, pool, bufs, Mode::kDevice); },
                                            [&] { fast(**store, *mc, pool, bufs, Mode::kHostScalar); },
                                            [&] { fast(**store, *mc, pool, bufs, Mode::kHostSimd); }};
  const int nv = static_cast<int>(fns.size());
  fns[1]();  // page cache and buffers warm
  std::vector<std::vector<double>> t(static_cast<size_t>(nv));
  for (int r = 0; r < rounds; ++r)
    for (int j = 0; j < nv; ++j) {
      const int v = (r + j) % nv;
      const double t0 = now_seconds();
      fns[static_cast<size_t>(v)]();
      t[static_cast<size_t>(v)].push_back(now_seconds() - t0);
    }
  double load[3] = {0, 0, 0};
  getloadavg(load, 3);
  const double gb = static_cast<double>((*store)->file_size()) / 1e9;
  std::printf("{\"bench\": \"model_load_host\", \"model\": \"%s\", \"preset\": \"%s\", \"dtype\": \"%s\", "
              "\"file_gb\": %.3f, \"threads\": %d, \"rounds\": %d, \"loadavg_1m\": %.2f",
              model.c_str(), preset.c_str(), dtype.c_str(), gb, threads, rounds, load[0]);
  for (int v = 0; v < nv; ++v) {
    const double m = median(t[static_cast<size_t>(v)]);
    std::printf(", \"%s_s\": %.3f, \"%s_gbps\": %.2f", names[v], m, names[v], gb / m);
  }
  std::printf("}\n");
  return 0;
}
