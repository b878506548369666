#include "auth/schema.h"

namespace citadel::auth {

namespace {

// quota_usage holds one row per (scope, window): minute rows under "m:<scope>", UTC-day rows under "d:<scope>"
// (quota.cc), so the two windows never collide whatever the scope text. quota_leases holds one row per in-flight
// request and scope: its reserved tokens and the windows they were counted in, so settle() can correct them.
constexpr const char* kV1 = R"sql(
CREATE TABLE tenants (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  disabled BIGINT NOT NULL DEFAULT 0,
  rpm BIGINT, tpm BIGINT, concurrent BIGINT, max_tokens BIGINT, daily_tokens BIGINT
);
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  secret_hash TEXT NOT NULL,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  tenant TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL DEFAULT 0,
  revoked_at BIGINT NOT NULL DEFAULT 0,
  allowed_models TEXT NOT NULL DEFAULT '',
  rotated_from TEXT NOT NULL DEFAULT '',
  created_by TEXT NOT NULL DEFAULT '',
  rpm BIGINT, tpm BIGINT, concurrent BIGINT, max_tokens BIGINT, daily_tokens BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);
CREATE INDEX api_keys_role ON api_keys (role, revoked_at);
CREATE TABLE role_limits (
  role TEXT PRIMARY KEY,
  rpm BIGINT, tpm BIGINT, concurrent BIGINT, max_tokens BIGINT, daily_tokens BIGINT
);
CREATE TABLE quota_usage (
  scope TEXT NOT NULL,
  window_start BIGINT NOT NULL,
  requests BIGINT NOT NULL,
  tokens BIGINT NOT NULL,
  PRIMARY KEY (scope, window_start)
);
CREATE INDEX quota_usage_window ON quota_usage (window_start);
CREATE TABLE quota_leases (
  request_id TEXT NOT NULL,
  scope TEXT NOT NULL,
  tokens BIGINT NOT NULL,
  minute_start BIGINT NOT NULL,
  day_start BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  PRIMARY KEY (request_id, scope)
);
CREATE INDEX quota_leases_scope ON quota_leases (scope, expires_at);
CREATE INDEX quota_leases_expiry ON quota_leases (expires_at);
INSERT INTO tenants (id, name, created_at, disabled) VALUES ('default', 'Default tenant', 0, 0)
)sql";

// The prompt PII policy (auth/pii_policy.h): a key's own setting ('inherit' follows its tenant) and the tenant's.
// Existing rows get the defaults, so an upgraded server behaves as before (no policy anywhere).
constexpr const char* kV3 = R"sql(
ALTER TABLE api_keys ADD COLUMN pii TEXT NOT NULL DEFAULT 'inherit';
ALTER TABLE tenants ADD COLUMN pii TEXT NOT NULL DEFAULT 'off'
)sql";

}  // namespace

const std::vector<store::Migration>& state_migrations() {
  static const std::vector<store::Migration> steps = {
      {1, "keys, tenants, quotas", kV1},
      {3, "prompt PII policy on keys and tenants", kV3},
  };
  return steps;
}

}  // namespace citadel::auth
