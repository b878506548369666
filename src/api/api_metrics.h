// ApiMetrics: what the API writes in the metrics registry from each ExchangeRecord (exactly one per exchange, see
// observed_responder.h), and the read-only collectors for the state (audit log, API keys).
//
//   citadel:http_requests_total{route, method, status}        every exchange (route "none" when no route matched)
//   citadel:http_request_duration_seconds{route}              received -> last byte queued
//   citadel:request_failures_total{route, reason}             reason: see failure_reason()
//   citadel:tenant_prompt_tokens_total{tenant}, citadel:tenant_generation_tokens_total{tenant}
//                                                             bounded (256 tenants, then tenant="other")
//   citadel:key_prompt_tokens_total{key_id}, citadel:key_generation_tokens_total{key_id}
//                                                             bounded (512 keys, then "other"); key ids, never keys
//   citadel:audit_write_failures_total, citadel:audit_records_written_total, citadel:audit_queue_depth,
//   citadel:audit_healthy                                      (AuditLog::stats(), when the audit log is on)
//   citadel:api_key_oldest_age_seconds, citadel:api_keys_active  (active keys; the key store is read once a minute)
// Route, method and status are bounded by the route table (unmatched paths are "none", odd methods "other").
// Thread-safety: record() from any thread (atomics after one map lookup per family).
#pragma once

#include <string>

#include "api/request_context.h"
#include "base/metrics.h"

namespace citadel::audit {
class AuditLog;
}
namespace citadel::auth {
class KeyStore;
}

namespace citadel::api {

struct State;

// Why an exchange failed, or "" when it did not (status < 400):
//   429: "quota" (insufficient_quota), "busy" (engine queue full), "rate_limited" (per-minute / concurrency limits);
//   401, 403: "auth"; 499: "client_disconnected"; 503: "unavailable"; other 5xx: "engine_error";
//   other 4xx (400, 404, 405, 413, 431, ...): "invalid".
std::string failure_reason(const ExchangeRecord& rec);

class ApiMetrics {
 public:
  explicit ApiMetrics(metrics::Registry& reg);
  void record(const ExchangeRecord& rec);

 private:
  metrics::CounterFamily* requests_;
  metrics::HistogramFamily* duration_;
  metrics::CounterFamily* failures_;
  metrics::CounterFamily *tenant_prompt_, *tenant_generation_;
  metrics::CounterFamily *key_prompt_, *key_generation_;
};

// Collectors for the state: the audit log's counters and queue (audit may be null: nothing registered) and the age
// of the oldest active API key (keys may be null). Read-only use of both.
void add_state_collectors(metrics::Registry& reg, audit::AuditLog* audit, auth::KeyStore* keys);
// citadel:encryption_key_age_seconds{key, key_id}: the age of each key State::watch_key() added (the model key of an
// encrypted model, the stored-content key); -1 when its creation time is unknown. Key ids only, never key bytes.
void add_key_age_collector(metrics::Registry& reg, const State* state);

}  // namespace citadel::api
