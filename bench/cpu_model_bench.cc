// CPU model benchmark: prompt (prefill) and decode tokens/s of one sequence through CpuRunner, plus the machine's
// read bandwidth and the decode roofline it implies (bandwidth / weight bytes read per token).
//
//   cpu_model_bench --model F [--prompt 128] [--gen 128] [--repeats 3] [--exact]
//
// Prints one JSON object (with the time shares of matmul / attention / other ops in the last prompt and decode).
// Decode is timed per step through CpuRunner::forward (the Engine adds scheduling and sampling, ~1% here).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "base/rng.h"
#include "base/thread_pool.h"
#include "model/weights.h"
#include "runtime/cpu_runner.h"

namespace {

using namespace citadel;
using Clock = std::chrono::steady_clock;

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Threaded read over 512 MiB (beyond every cache), median of 5: bytes read per second. The words are summed as
// uint64 (the compiler vectorizes integer sums; eight scalar float chains were add-latency bound and measured less
// than the decode kernels stream, roofline ratios above 1).
double read_bandwidth() {
  const size_t n = (512u << 20) / sizeof(uint64_t);
  std::vector<uint64_t> a(n, 1);
  std::vector<double> r;
  std::atomic<uint64_t> sink{0};
  for (int rep = 0; rep < 6; ++rep) {
    const auto t0 = Clock::now();
    ThreadPool::global().parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
      // Four streams per thread, as the decode kernels' rows and interleaved groups keep several lines in flight:
      // one stream alone measured ~28 GB/s here while decode read 36 GB/s.
      const int64_t q = (e - b) / 4;
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int64_t i = b; i < b + q; ++i) {
        s0 += a[i];
        s1 += a[i + q];
        s2 += a[i + 2 * q];
        s3 += a[i + 3 * q];
      }
      for (int64_t i = b + 4 * q; i < e; ++i) s0 += a[i];
      sink.fetch_add(s0 + s1 + s2 + s3, std::memory_order_relaxed);
    }, 1 << 18);
    if (rep > 0) r.push_back(n * 8.0 / secs(t0, Clock::now()));
  }
  return median(r);
}

struct Seq {
  runtime::CpuRunner* r;
  int max_blocks;
  // Runs toks at positions start..; returns the argmax of the last token's logits.
  int32_t run(const std::vector<int32_t>& toks, int start, std::vector<float>* logits) {
    engine::Batch b;
    const int n = static_cast<int>(toks.size());
    b.tokens = toks;
    b.block_size = 16;
    b.max_blocks = max_blocks;
    for (int i = 0; i < n; ++i) {
      b.positions.push_back(start + i);
      b.seq_of_token.push_back(0);
      b.slots.push_back(start + i);
    }
    b.logit_rows = {n - 1};
    b.query_start = {0, n};
    b.seq_lens = {start + n};
    for (int i = 0; i < max_blocks; ++i) b.block_tables.push_back(i);
    Status st = r->forward(b, logits->data());
    if (!st.ok()) {
      std::fprintf(stderr, "forward: %s\n", st.to_string().c_str());
      std::exit(1);
    }
    return static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) - logits->begin());
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string model;
  int n_prompt = 128, n_gen = 128, repeats = 3;
  bool exact = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--model") model = next();
    else if (a == "--prompt") n_prompt = std::stoi(next());
    else if (a == "--gen") n_gen = std::stoi(next());
    else if (a == "--repeats") repeats = std::stoi(next());
    else if (a == "--exact") exact = true;
    else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
  }
  if (model.empty() || n_prompt < 1 || n_gen < 1 || repeats < 1) {
    std::fprintf(stderr, "usage: cpu_model_bench --model F [--prompt N] [--gen N] [--repeats N] [--exact]\n");
    return 2;
  }
  auto w = load_model(model, WeightsOptions{.upcast_f32 = exact});
  if (!w.ok()) {
    std::fprintf(stderr, "%s\n", w.status().to_string().c_str());
    return 1;
  }
  const ModelConfig& c = (*w)->config;
  runtime::CpuRunner runner(w->get(), runtime::CpuRunnerOptions{n_prompt, 0});
  Seq seq{&runner, (n_prompt + n_gen + 15) / 16};
  if (!runner.allocate_kv(seq.max_blocks, 16).ok()) return 1;
  std::vector<float> logits(c.n_vocab);
  Xoshiro256 rng(42);
  std::vector<int32_t> prompt(n_prompt);
  for (auto& t : prompt) t = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(c.n_vocab));

  std::vector<double> pre, dec;
  ForwardProfile prof, prof_pre;  // decode steps and the prompt of the last repeat
  for (int rep = -1; rep < repeats; ++rep) {  // rep -1: warm-up (page faults of the mapping, caches)
    if (rep == repeats - 1) runner.set_profile(&prof_pre);
    const auto t0 = Clock::now();
    int32_t tok = seq.run(prompt, 0, &logits);
    const auto t1 = Clock::now();
    runner.set_profile(nullptr);
    const int gen = rep < 0 ? 8 : n_gen;
    if (rep == repeats - 1) runner.set_profile(&prof);
    for (int i = 0; i < gen; ++i) tok = seq.run({tok}, n_prompt + i, &logits);
    const auto t2 = Clock::now();
    if (rep >= 0) {
      pre.push_back(n_prompt / secs(t0, t1));
      dec.push_back(gen / secs(t1, t2));
    }
  }
  runner.set_profile(nullptr);
  const double prof_total = prof.matmul + prof.attention + prof.other;
  const double pre_total = prof_pre.matmul + prof_pre.attention + prof_pre.other;
  const double bw = read_bandwidth();
  const double bytes = static_cast<double>((*w)->bytes_per_token());
  const double roof = bw / bytes;
  std::printf("{\"model\": \"%s\", \"arch\": \"%s\", \"weight_dtype\": \"%s\", \"exact\": %s, \"threads\": %d, "
              "\"n_prompt\": %d, \"n_gen\": %d, \"repeats\": %d, "
              "\"prefill_tok_s\": %.2f, \"prefill_tok_s_min\": %.2f, \"prefill_tok_s_max\": %.2f, "
              "\"decode_tok_s\": %.2f, \"decode_tok_s_min\": %.2f, \"decode_tok_s_max\": %.2f, "
              "\"weight_bytes_per_token\": %.0f, \"read_bandwidth_GBps\": %.2f, \"decode_roofline_tok_s\": %.2f, "
              "\"roofline_ratio_decode\": %.3f, \"decode_time_share\": {\"matmul\": %.3f, \"attention\": %.3f, "
              "\"other\": %.3f}, \"prefill_time_share\": {\"matmul\": %.3f, \"attention\": %.3f, \"other\": %.3f}}\n",
              model.c_str(), c.arch.c_str(), dtype_name((*w)->mat(TensorRole::kWq, 0).dtype), exact ? "true" : "false",
              ThreadPool::global().size(), n_prompt, n_gen, repeats, median(pre),
              *std::min_element(pre.begin(), pre.end()), *std::max_element(pre.begin(), pre.end()), median(dec),
              *std::min_element(dec.begin(), dec.end()), *std::max_element(dec.begin(), dec.end()), bytes, bw / 1e9,
              roof, median(dec) / roof, prof.matmul / prof_total, prof.attention / prof_total,
              prof.other / prof_total, prof_pre.matmul / pre_total, prof_pre.attention / pre_total,
              prof_pre.other / pre_total);
  return 0;
}
