#include "api/audit_events.h"

#include <cmath>

#include "crypto/pii.h"

namespace citadel::api {

namespace {

// The admin actions that change identity or access, by method and route pattern.
const char* admin_kind(const std::string& method, const std::string& route) {
  struct Entry {
    const char* method;
    const char* route;
    const char* kind;
  };
  static const Entry kTable[] = {
      {"POST", "/admin/v1/keys", "key.create"},
      {"DELETE", "/admin/v1/keys/{id}", "key.revoke"},
      {"POST", "/admin/v1/keys/{id}/rotate", "key.rotate"},
      {"PATCH", "/admin/v1/keys/{id}", "key.update"},
      {"POST", "/admin/v1/tenants", "tenant.create"},
      {"PATCH", "/admin/v1/tenants/{id}", "tenant.update"},
      {"PATCH", "/admin/v1/roles/{id}", "role.update"},
      {"GET", "/admin/v1/audit", "audit.query"},
      // Drain and undrain change how the server serves (the audit module's closed kind list has no server.drain):
      // config.change, with method and route in the detail telling which.
      {"POST", "/admin/v1/drain", "config.change"},
      {"DELETE", "/admin/v1/drain", "config.change"},
      // The model registry (api/model_routes.cc): a load is recorded when accepted (202; the log line says when it
      // is serving), an unload when the model leaves the registry, alias changes as swaps.
      {"POST", "/admin/v1/models", "model.load"},
      {"DELETE", "/admin/v1/models/{id}", "model.unload"},
      {"PUT", "/admin/v1/aliases/{id}", "model.swap"},
      {"DELETE", "/admin/v1/aliases/{id}", "model.swap"},
      {"POST", "/admin/v1/aliases/{id}/rollback", "model.swap"},
  };
  for (const auto& e : kTable)
    if (method == e.method && route == e.route) return e.kind;
  return nullptr;
}

}  // namespace

std::optional<audit::AuditEvent> audit_event_for(const ExchangeRecord& rec, auth::Permission permission,
                                                 const crypto::PiiMasker* masker) {
  const char* kind = nullptr;
  if (rec.status == 401) kind = "auth.failure";
  else if (rec.status == 403) kind = "permission.denied";
  else if (rec.status == 429 && permission == auth::Permission::kInference) kind = "quota.rejected";
  else if (permission == auth::Permission::kInference && !rec.route.empty()) kind = "inference";
  else if (rec.status >= 200 && rec.status < 300) kind = admin_kind(rec.method, rec.route);
  if (!kind) return std::nullopt;
  audit::AuditEvent e;
  e.kind = kind;
  e.time_ms = static_cast<int64_t>(std::llround(rec.received_at * 1000.0));
  e.principal = rec.principal_id;
  e.tenant = rec.tenant;
  e.request_id = rec.request_id;
  e.client = rec.client;
  e.model = rec.model;
  e.status = rec.status;
  nlohmann::json& d = e.detail;
  d["method"] = rec.method;
  d["route"] = rec.route.empty() ? rec.path.substr(0, 128) : rec.route;
  d["latency_ms"] = std::llround(rec.latency_s * 1000.0);
  if (!rec.role.empty()) d["role"] = rec.role;
  if (!rec.error_code.empty()) d["error_code"] = rec.error_code;
  if (!rec.error_message.empty())
    d["error"] = masker ? masker->mask(rec.error_message) : std::string("(error text withheld)");
  if (permission == auth::Permission::kInference) {
    d["prompt_tokens"] = rec.prompt_tokens;
    d["completion_tokens"] = rec.completion_tokens;
    d["cached_prompt_tokens"] = rec.cached_prompt_tokens;
    if (!rec.finish_reason.empty()) d["finish_reason"] = rec.finish_reason;
    d["streamed"] = rec.streamed;
    if (rec.client_disconnected) d["client_disconnected"] = true;
  }
  for (const auto& [k, v] : rec.detail) d[k] = masker ? masker->mask(v) : v;
  // Stored content goes to the writer, which encrypts it; it never enters the detail.
  if (rec.content && std::string(kind) == "inference") e.content = rec.content;
  return e;
}

}  // namespace citadel::api
