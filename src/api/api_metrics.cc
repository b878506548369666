#include "api/api_metrics.h"

#include <chrono>
#include <ctime>
#include <mutex>

#include "api/state.h"
#include "audit/audit_log.h"
#include "auth/key_store.h"

namespace citadel::api {
namespace {

const char* method_label(const std::string& m) {
  for (const char* known : {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
    if (m == known) return known;
  return "other";
}

}  // namespace

std::string failure_reason(const ExchangeRecord& rec) {
  const int s = rec.status;
  if (s < 400) return "";
  if (s == 429) {
    if (rec.error_code == "insufficient_quota") return "quota";
    if (rec.error_message.rfind("server busy", 0) == 0) return "busy";
    return "rate_limited";
  }
  if (s == 401 || s == 403) return "auth";
  if (s == 499) return "client_disconnected";
  if (s == 503) return "unavailable";
  if (s >= 500) return "engine_error";
  return "invalid";
}

ApiMetrics::ApiMetrics(metrics::Registry& reg) {
  requests_ = reg.counter("citadel:http_requests_total", "HTTP exchanges by route pattern, method and status.",
                          {"route", "method", "status"}, 1000);
  duration_ = reg.histogram("citadel:http_request_duration_seconds", "HTTP exchange latency (received -> last byte).",
                            {"route"}, metrics::latency_buckets_long(), 100);
  failures_ = reg.counter("citadel:request_failures_total", "Failed exchanges by route pattern and reason.",
                          {"route", "reason"}, 500);
  tenant_prompt_ = reg.counter("citadel:tenant_prompt_tokens_total", "Prompt tokens charged per tenant.", {"tenant"},
                               256);
  tenant_generation_ = reg.counter("citadel:tenant_generation_tokens_total", "Generated tokens charged per tenant.",
                                   {"tenant"}, 256);
  key_prompt_ = reg.counter("citadel:key_prompt_tokens_total", "Prompt tokens charged per API key id.", {"key_id"}, 512);
  key_generation_ = reg.counter("citadel:key_generation_tokens_total", "Generated tokens charged per API key id.",
                                {"key_id"}, 512);
}

void ApiMetrics::record(const ExchangeRecord& rec) {
  const std::string route = rec.route.empty() ? "none" : rec.route;
  requests_->with({route, method_label(rec.method), std::to_string(rec.status)})->inc();
  duration_->with({route})->observe(rec.latency_s);
  if (const std::string why = failure_reason(rec); !why.empty()) failures_->with({route, why})->inc();
  if (rec.prompt_tokens > 0 || rec.completion_tokens > 0) {
    if (!rec.tenant.empty()) {
      tenant_prompt_->with({rec.tenant})->inc(rec.prompt_tokens);
      tenant_generation_->with({rec.tenant})->inc(rec.completion_tokens);
    }
    if (!rec.key_id.empty()) {
      key_prompt_->with({rec.key_id})->inc(rec.prompt_tokens);
      key_generation_->with({rec.key_id})->inc(rec.completion_tokens);
    }
  }
}

void add_state_collectors(metrics::Registry& reg, audit::AuditLog* audit, auth::KeyStore* keys) {
  if (audit) {
    auto* failures = reg.counter("citadel:audit_write_failures_total", "Audit batch commits that failed.")->get();
    auto* written = reg.counter("citadel:audit_records_written_total", "Audit records committed.")->get();
    auto* depth = reg.gauge("citadel:audit_queue_depth", "Audit records queued, not yet committed.")->get();
    auto* healthy = reg.gauge("citadel:audit_healthy", "1 while the audit log can write, else 0.")->get();
    auto* key_age = reg.gauge("citadel:audit_signing_key_age_seconds",
                              "Age of the audit signing key (-1: unknown, a key Citadel did not create).")->get();
    reg.add_collector([=] {
      const audit::AuditStats s = audit->stats();
      failures->set_total(static_cast<double>(s.write_failures));
      written->set_total(static_cast<double>(s.written));
      depth->set(static_cast<double>(s.queue_depth));
      healthy->set(audit->healthy() ? 1 : 0);
      key_age->set(s.signing_key_age_days < 0 ? -1.0 : static_cast<double>(s.signing_key_age_days) * 86400.0);
    });
  }
  if (keys) {
    auto* oldest = reg.gauge("citadel:api_key_oldest_age_seconds",
                             "Age of the oldest active (not revoked, not expired) API key.")->get();
    auto* active = reg.gauge("citadel:api_keys_active", "Active API keys.")->get();
    // The key store is a database: read it at most once a minute, whatever the scrape interval.
    auto last = std::make_shared<std::chrono::steady_clock::time_point>();
    reg.add_collector([=] {
      const auto now_steady = std::chrono::steady_clock::now();
      if (*last != std::chrono::steady_clock::time_point{} && now_steady - *last < std::chrono::seconds(60)) return;
      auto list = keys->list();
      if (!list.ok()) return;  // keep the last values; the store's own errors are logged where they happen
      *last = now_steady;
      const int64_t now = static_cast<int64_t>(std::time(nullptr));
      int64_t n = 0, age = 0;
      for (const auto& k : *list) {
        if (!k.active(now)) continue;
        ++n;
        age = std::max(age, now - k.created_at);
      }
      active->set(static_cast<double>(n));
      oldest->set(static_cast<double>(age));
    });
  }
}

void add_key_age_collector(metrics::Registry& reg, const State* state) {
  if (!state) return;
  auto* age = reg.gauge("citadel:encryption_key_age_seconds",
                        "Age of each watched encryption key (model key, stored-content key); -1: unknown.",
                        {"key", "key_id"}, 64);
  reg.add_collector([=] {
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    for (const auto& k : state->watched_keys())
      age->with({k.what, k.id})->set(k.created_unix > 0 ? static_cast<double>(now - k.created_unix) : -1.0);
  });
}

}  // namespace citadel::api
