// Who is calling, and with what rights: the four roles, the permissions routes ask for, the principal a credential
// resolves to (API key or OIDC token), and quota limits. Shared by auth/ (keys, OIDC, quotas) and api/ (the route
// table and middleware). Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/pii_policy.h"

namespace citadel::auth {

enum class Role { kAdmin, kDeveloper, kAuditor, kGuest };
const char* role_name(Role r);                               // "admin", "developer", "auditor", "guest"
std::optional<Role> parse_role(std::string_view s);           // exact lower-case names only

// What a route needs. kPublic routes (/health, /ready) skip authentication entirely.
enum class Permission {
  kPublic,
  kInference,     // chat/completions, completions, native infer, embeddings
  kModelsRead,    // GET /v1/models
  kStatsRead,     // GET /api/v1/stats, /metrics
  kAuditRead,     // GET /admin/v1/audit
  kOwnKeys,       // manage the caller's own keys (developer: create/list/revoke keys of its own tenant and role)
  kAdmin,         // keys, tenants, models, config of everyone
};
const char* permission_name(Permission p);
// The role table (one place): admin everything; developer inference, models, own keys; auditor stats and audit
// read-only, no inference; guest inference and the model list.
bool role_permits(Role r, Permission p);

// Limits of one scope (a key, a role default or a tenant). Each field: nullopt = not set here (inherit the role
// default for keys; no limit for tenants), a negative value = unlimited, >= 0 = the limit.
struct QuotaLimits {
  std::optional<int64_t> requests_per_minute;
  std::optional<int64_t> tokens_per_minute;       // prompt + completion tokens
  std::optional<int64_t> concurrent_requests;
  std::optional<int64_t> max_tokens_per_request;  // completion tokens one request may ask for
  std::optional<int64_t> daily_tokens;            // UTC day
  // This scope's value where set, else fallback's.
  QuotaLimits or_else(const QuotaLimits& fallback) const;
};
// Built-in defaults per role (admin unlimited; developer and guest bounded, guest smaller; auditor cannot infer).
QuotaLimits default_role_limits(Role r);

// The caller of one request, after authentication.
struct Principal {
  enum class Kind { kApiKey, kOidc, kAnonymous };
  Kind kind = Kind::kAnonymous;
  std::string id;        // stable and loggable: "key:<key id>" or "oidc:<subject>" (never a secret)
  std::string key_id;    // the API key's public id ("" for OIDC)
  std::string name;      // key name or the token's preferred_username / subject
  Role role = Role::kGuest;
  std::string tenant = "default";
  std::vector<std::string> allowed_models;  // empty: every model
  QuotaLimits limits;    // effective per-principal limits (own settings over the role default)
  PiiPolicy pii = PiiPolicy::kOff;  // effective prompt PII policy (resolve_pii_policy: key over tenant); never inherit
  bool may_use_model(const std::string& model) const;
};

}  // namespace citadel::auth
