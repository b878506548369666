#include "api/api_metrics.h"

#include <gtest/gtest.h>

namespace citadel::api {
namespace {

ExchangeRecord rec(int status, std::string code = "", std::string message = "") {
  ExchangeRecord r;
  r.status = status, r.error_code = std::move(code), r.error_message = std::move(message);
  r.route = "/v1/completions", r.method = "POST";
  return r;
}

TEST(ApiMetrics, FailureReasons) {
  EXPECT_EQ(failure_reason(rec(200)), "");
  EXPECT_EQ(failure_reason(rec(429, "insufficient_quota")), "quota");
  EXPECT_EQ(failure_reason(rec(429, "rate_limit_exceeded", "server busy, retry later: x")), "busy");
  EXPECT_EQ(failure_reason(rec(429, "rate_limit_exceeded", "requests per minute")), "rate_limited");
  EXPECT_EQ(failure_reason(rec(401)), "auth");
  EXPECT_EQ(failure_reason(rec(403)), "auth");
  EXPECT_EQ(failure_reason(rec(400)), "invalid");
  EXPECT_EQ(failure_reason(rec(404)), "invalid");
  EXPECT_EQ(failure_reason(rec(413)), "invalid");
  EXPECT_EQ(failure_reason(rec(499)), "client_disconnected");
  EXPECT_EQ(failure_reason(rec(503)), "unavailable");
  EXPECT_EQ(failure_reason(rec(500)), "engine_error");
}

TEST(ApiMetrics, RecordsRequestsFailuresAndBoundedTenantTokens) {
  metrics::Registry reg;
  ApiMetrics m(reg);
  ExchangeRecord ok = rec(200);
  ok.tenant = "acme", ok.key_id = "0123456789ab", ok.prompt_tokens = 7, ok.completion_tokens = 3;
  m.record(ok);
  ExchangeRecord odd = rec(404);
  odd.route = "", odd.method = "BREW";
  m.record(odd);
  for (int i = 0; i < 300; ++i) {  // more tenants than the family's bound (256)
    ExchangeRecord t = rec(200);
    t.tenant = std::to_string(1000 + i), t.prompt_tokens = 1, t.completion_tokens = 1;
    m.record(t);
  }
  auto value = [&](const char* name, std::vector<std::string> labels) {
    for (const auto& s : reg.samples(name))
      if (s.labels == labels) return s.value;
    return -1.0;
  };
  EXPECT_EQ(value("citadel:http_requests_total", {"/v1/completions", "POST", "200"}), 301);
  EXPECT_EQ(value("citadel:http_requests_total", {"none", "other", "404"}), 1);
  EXPECT_EQ(value("citadel:request_failures_total", {"none", "invalid"}), 1);
  EXPECT_EQ(value("citadel:tenant_prompt_tokens_total", {"acme"}), 7);
  EXPECT_EQ(value("citadel:tenant_generation_tokens_total", {"acme"}), 3);
  EXPECT_EQ(value("citadel:key_prompt_tokens_total", {"0123456789ab"}), 7);
  EXPECT_EQ(value("citadel:key_generation_tokens_total", {"0123456789ab"}), 3);
  EXPECT_EQ(reg.samples("citadel:tenant_prompt_tokens_total").size(), 257u);  // 256 + "other"
  EXPECT_EQ(value("citadel:tenant_prompt_tokens_total", {"other"}), 300 + 1 - 256);
  EXPECT_EQ(reg.sum("citadel:tenant_prompt_tokens_total"), 7 + 300);  // nothing lost to the bound
}

}  // namespace
}  // namespace citadel::api
