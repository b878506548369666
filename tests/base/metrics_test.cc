#include "base/metrics.h"
#include "base/process_metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>

namespace citadel::metrics {
namespace {

TEST(MetricsFormat, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(escape_label_value(R"(a\b"c)" "\n" "d"), R"(a\\b\"c\nd)");
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_help("x\\y\nz\"q"), "x\\\\y\\nz\"q");  // HELP escapes \ and newline, not quotes
}

TEST(MetricsFormat, Values) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(3), "3");
  EXPECT_EQ(format_value(0.1), "0.1");
  EXPECT_EQ(format_value(1.0 / 0.0), "+Inf");
  EXPECT_EQ(format_value(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
  EXPECT_EQ(std::stod(format_value(123456789.125)), 123456789.125);
}

TEST(MetricsFormat, Names) {
  EXPECT_TRUE(valid_metric_name("citadel:prompt_tokens_total"));
  EXPECT_TRUE(valid_metric_name("_x9"));
  EXPECT_FALSE(valid_metric_name("9x"));
  EXPECT_FALSE(valid_metric_name("a-b"));
  EXPECT_FALSE(valid_metric_name(""));
  EXPECT_TRUE(valid_label_name("model_name"));
  EXPECT_FALSE(valid_label_name("__name__"));
  EXPECT_FALSE(valid_label_name("a:b"));
}

TEST(Metrics, CounterGaugeExposition) {
  Registry reg;
  auto* c = reg.counter("citadel:requests_total", "Requests\nby \"route\" \\ status.", {"route", "status"});
  c->with({"/v1/models", "200"})->inc();
  c->with({"/v1/models", "200"})->inc(2);
  c->with({"/a\"b\\c\nd", "404"})->inc();
  c->with({"/v1/models", "200"})->inc(-5);  // ignored: counters only go up
  reg.gauge("citadel:num_requests_running", "Running.")->get()->set(3);
  const std::string text = reg.render();
  const std::string want =
      "# HELP citadel:num_requests_running Running.\n"
      "# TYPE citadel:num_requests_running gauge\n"
      "citadel:num_requests_running 3\n"
      "# HELP citadel:requests_total Requests\\nby \"route\" \\\\ status.\n"
      "# TYPE citadel:requests_total counter\n"
      "citadel:requests_total{route=\"/a\\\"b\\\\c\\nd\",status=\"404\"} 1\n"
      "citadel:requests_total{route=\"/v1/models\",status=\"200\"} 3\n";
  EXPECT_EQ(text, want);
  EXPECT_EQ(reg.sum("citadel:requests_total"), 4);
  EXPECT_EQ(reg.samples("citadel:nothing").size(), 0u);
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInf) {
  Registry reg;
  auto* h = reg.histogram("citadel:lat_seconds", "Latency.", {"model_name"}, {0.1, 0.5, 1.0});
  Histogram* s = h->with({"m"});
  for (double v : {0.05, 0.1, 0.3, 0.7, 2.0, 5.0}) s->observe(v);  // 0.1 falls in le="0.1" (inclusive)
  const std::string text = reg.render();
  const std::string want =
      "# HELP citadel:lat_seconds Latency.\n"
      "# TYPE citadel:lat_seconds histogram\n"
      "citadel:lat_seconds_bucket{model_name=\"m\",le=\"0.1\"} 2\n"
      "citadel:lat_seconds_bucket{model_name=\"m\",le=\"0.5\"} 3\n"
      "citadel:lat_seconds_bucket{model_name=\"m\",le=\"1\"} 4\n"
      "citadel:lat_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 6\n"
      "citadel:lat_seconds_sum{model_name=\"m\"} 8.15\n"
      "citadel:lat_seconds_count{model_name=\"m\"} 6\n";
  EXPECT_EQ(text, want);
}

TEST(Metrics, CardinalityBoundFoldsIntoOther) {
  Registry reg;
  auto* f = reg.counter("citadel:tenant_tokens_total", "Tokens by tenant.", {"tenant", "type"}, 3);
  for (int i = 0; i < 10; ++i) f->with({std::to_string(100 + i), "prompt"})->inc(1);
  EXPECT_EQ(f->size(), 4u);  // three named + the overflow series
  const auto samples = reg.samples("citadel:tenant_tokens_total");
  ASSERT_EQ(samples.size(), 4u);
  double other = 0;
  for (const auto& s : samples)
    if (s.labels == std::vector<std::string>{"other", "other"}) other = s.value;
  EXPECT_EQ(other, 7);
  EXPECT_EQ(reg.sum("citadel:tenant_tokens_total"), 10);
  f->with({"101", "prompt"})->inc();  // an existing series keeps its own
  EXPECT_EQ(f->size(), 4u);
}

TEST(Metrics, LabelValuesAreSanitized) {
  Registry reg;
  auto* f = reg.counter("citadel:x_total", "X.", {"v"});
  f->with({std::string("a\xff" "b")})->inc();
  f->with({std::string(300, 'z')})->inc();
  const auto samples = reg.samples("citadel:x_total");
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].labels[0], "a?b");
  EXPECT_EQ(samples[1].labels[0], std::string(128, 'z'));
  // A multi-byte character is never cut in half.
  std::string e;
  for (int i = 0; i < 100; ++i) e += "\xc3\xa9";  // é
  f->with({e})->inc();
  for (const auto& s : reg.samples("citadel:x_total"))
    if (s.labels[0][0] == '\xc3') {
      EXPECT_EQ(s.labels[0].size(), 128u);
    }
}

TEST(Metrics, ReRegistrationReturnsTheSameFamily) {
  Registry reg;
  auto* a = reg.counter("citadel:y_total", "Y.", {"l"});
  auto* b = reg.counter("citadel:y_total", "Y.", {"l"});
  EXPECT_EQ(a, b);
  EXPECT_DEATH(reg.gauge("citadel:y_total", "Y."), "re-registered");
}

TEST(Metrics, CollectorsRunBeforeRender) {
  Registry reg;
  auto* g = reg.gauge("citadel:uptime_seconds", "Up.")->get();
  int runs = 0;
  reg.add_collector([&] { g->set(++runs * 10); });
  EXPECT_NE(reg.render().find("citadel:uptime_seconds 10\n"), std::string::npos);
  EXPECT_NE(reg.render().find("citadel:uptime_seconds 20\n"), std::string::npos);
  EXPECT_EQ(runs, 2);
}

TEST(Metrics, ClearedGaugeIsLeftOutUntilSetAgain) {
  Registry reg;
  auto* f = reg.gauge("citadel:g", "G.", {"gpu"});
  f->with({"0"})->set(0.5);
  f->with({"1"})->set(0.25);
  f->with({"1"})->clear();
  std::string text = reg.render();
  EXPECT_NE(text.find("citadel:g{gpu=\"0\"} 0.5\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("gpu=\"1\""), std::string::npos) << text;
  ASSERT_EQ(reg.samples("citadel:g").size(), 1u);
  EXPECT_EQ(reg.samples("citadel:g")[0].labels, std::vector<std::string>{"0"});
  f->with({"1"})->set(0.75);
  text = reg.render();
  EXPECT_NE(text.find("citadel:g{gpu=\"1\"} 0.75\n"), std::string::npos) << text;
  EXPECT_EQ(reg.sum("citadel:g"), 1.25);
}

TEST(Metrics, ConcurrentIncrementsAreNotLost) {
  Registry reg;
  auto* f = reg.counter("citadel:c_total", "C.", {"k"});
  auto* h = reg.histogram("citadel:h_seconds", "H.", {}, {1.0});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        f->with({t % 2 ? "a" : "b"})->inc();
        h->get()->observe(i % 2 ? 0.5 : 2.0);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(reg.sum("citadel:c_total"), 80000);
  const auto s = h->get()->snapshot();
  EXPECT_EQ(s.count, 80000u);
  EXPECT_EQ(s.cumulative[0], 40000u);
  EXPECT_DOUBLE_EQ(s.sum, 40000 * 0.5 + 40000 * 2.0);
}

}  // namespace
}  // namespace citadel::metrics

namespace citadel::metrics {
namespace {

TEST(ProcessMetrics, ParsesStatmAndMeminfo) {
  double v = 0, r = 0;
  ASSERT_TRUE(parse_statm("2500 1200 300 10 0 900 0\n", 4096, &v, &r));
  EXPECT_EQ(v, 2500.0 * 4096);
  EXPECT_EQ(r, 1200.0 * 4096);
  EXPECT_FALSE(parse_statm("", 4096, &v, &r));
  double total = 0, avail = 0;
  ASSERT_TRUE(parse_meminfo("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n", &total,
                            &avail));
  EXPECT_EQ(total, 16000000.0 * 1024);
  EXPECT_EQ(avail, 4000000.0 * 1024);
  EXPECT_FALSE(parse_meminfo("MemTotal: 5 kB\n", &total, &avail));
}

TEST(ProcessMetrics, CollectorFillsTheGaugesFromProc) {
  Registry reg;
  register_process_metrics(reg, "1.2.3", "abc\"def");
  const std::string text = reg.render();
  EXPECT_NE(text.find("citadel:build_info{version=\"1.2.3\",commit=\"abc\\\"def\"} 1\n"), std::string::npos) << text;
  EXPECT_GT(reg.sum("citadel:process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(reg.sum("citadel:process_open_fds"), 3);  // stdin, stdout, stderr at least
  const double perc = reg.sum("citadel:host_memory_usage_perc");
  EXPECT_GT(perc, 0);
  EXPECT_LT(perc, 1);
}

}  // namespace
}  // namespace citadel::metrics
