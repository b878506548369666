// Cost of the metrics hot paths (base/metrics.h): a cached counter increment, a histogram observation, a labelled
// lookup (what each exchange's end does), and rendering a registry the size of a serving process's.
#include <benchmark/benchmark.h>

#include "base/metrics.h"

namespace {

using namespace citadel::metrics;

void BM_CounterInc(benchmark::State& state) {
  Registry reg;
  Counter* c = reg.counter("citadel:x_total", "X.", {"model_name"})->with({"m"});
  for (auto _ : state) c->inc();
  benchmark::DoNotOptimize(c->value());
}
BENCHMARK(BM_CounterInc)->ThreadRange(1, 4);

void BM_HistogramObserve(benchmark::State& state) {
  Registry reg;
  Histogram* h = reg.histogram("citadel:h_seconds", "H.", {"model_name"}, latency_buckets_long())->with({"m"});
  double v = 0.0001;
  for (auto _ : state) {
    h->observe(v);
    v = v > 500 ? 0.0001 : v * 1.7;
  }
}
BENCHMARK(BM_HistogramObserve)->ThreadRange(1, 4);

void BM_LabelledLookupInc(benchmark::State& state) {
  Registry reg;
  auto* f = reg.counter("citadel:http_requests_total", "R.", {"route", "method", "status"}, 1000);
  for (auto _ : state) f->with({"/v1/chat/completions", "POST", "200"})->inc();
}
BENCHMARK(BM_LabelledLookupInc);

void BM_Render(benchmark::State& state) {
  Registry reg;
  for (int i = 0; i < 20; ++i)
    reg.counter("citadel:c" + std::to_string(i) + "_total", "C.", {"route", "status"})
        ->with({"/v1/completions", "200"})->inc();
  for (int i = 0; i < 6; ++i)
    reg.histogram("citadel:h" + std::to_string(i) + "_seconds", "H.", {"model_name"}, latency_buckets_long())
        ->with({"m"})->observe(0.2);
  auto* t = reg.counter("citadel:tenant_prompt_tokens_total", "T.", {"tenant"}, 256);
  for (int i = 0; i < 256; ++i) t->with({std::to_string(1000 + i)})->inc(i);
  size_t bytes = 0;
  for (auto _ : state) bytes = reg.render().size();
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_Render);

}  // namespace

BENCHMARK_MAIN();
