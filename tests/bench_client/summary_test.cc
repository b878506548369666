// citadel bench's summary: the open-loop figures the cost benchmarks read (send lag, latency from the scheduled
// arrival, p99.9) and the refusal of an unknown arrival process.
#include <gtest/gtest.h>

#include "bench_client/bench_client.h"

namespace citadel::bench {
namespace {

TEST(BenchSummary, SendLagArrivalLatencyAndTailPercentiles) {
  BenchOptions o;
  o.request_rate = 1000;
  o.arrival = "constant";
  std::vector<RequestResult> rs(1000);
  for (size_t i = 0; i < rs.size(); ++i) {
    rs[i].success = true;
    rs[i].output_tokens = 1;
    rs[i].e2el = 0.001 * (i + 1) / 1000.0;  // 1 us .. 1 ms
    rs[i].send_lag = i == 999 ? 0.005 : 0.0;  // one request sent 5 ms late
  }
  rs[3].success = false;  // failures count in neither figure
  const auto j = summarize(o, rs, 1.0);
  EXPECT_EQ(j["arrival"], "constant");
  EXPECT_EQ(j["completed"], 999);
  EXPECT_NEAR(j["max_e2el_ms"].get<double>(), 1.0, 1e-9);
  EXPECT_NEAR(j["p99.9_e2el_ms"].get<double>(), 0.999, 2e-3);
  EXPECT_NEAR(j["p95_e2el_ms"].get<double>(), 0.95, 2e-3);
  EXPECT_NEAR(j["max_send_lag_ms"].get<double>(), 5.0, 1e-9);
  EXPECT_NEAR(j["median_send_lag_ms"].get<double>(), 0.0, 1e-12);
  EXPECT_NEAR(j["max_arrival_e2el_ms"].get<double>(), 6.0, 1e-9);  // lag + service time of the late one
}

TEST(BenchSummary, UnknownArrivalRefused) {
  BenchOptions o;
  o.model = "m";
  o.arrival = "bursty";
  auto r = run_bench(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--arrival"), std::string::npos);
}

TEST(BenchSummary, TopPOutsideItsRangeRefused) {
  for (double top_p : {0.0, -0.5, 1.5}) {
    BenchOptions o;
    o.model = "m";
    o.top_p = top_p;
    auto r = run_bench(o);
    ASSERT_FALSE(r.ok()) << top_p;
    EXPECT_NE(r.status().message().find("--top-p"), std::string::npos);
  }
}

}  // namespace
}  // namespace citadel::bench
