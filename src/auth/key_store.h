// KeyStore: API keys, tenants and per-role limit overrides in the state database (auth/schema.h).
//
// Raw key: "ck-<id>-<secret>", id = 12 lower-case hex characters (48 random bits, the public, loggable part: unique,
// collisions retried), secret = 43 base64url characters (32 random bytes from OpenSSL RAND_bytes). The database stores
// the id and the hex SHA-256 of the whole raw key, never the key: the raw text exists only in the result of create(),
// rotate() and ensure_bootstrap_admin(). A plain SHA-256 suffices because the secret carries 256 bits of entropy
// (no dictionary to slow down). Hash comparison is constant time (CRYPTO_memcmp).
//
// Authentication cache: authenticate() keeps verified database rows by key id for cache_ttl_s (default 2 s), so the
// hot path costs no database round trip. Writes through THIS KeyStore (revoke, rotate, update_limits, update_tenant,
// set_role_limits) invalidate it at once; a write made by another replica (another KeyStore over the same database)
// takes effect here within cache_ttl_s. The same holds for the PII policy (update_pii, update_tenant's pii): a
// cached key carries its effective policy, resolved from its own and its tenant's when it was loaded. Tenants (get_tenant) and role limits (effective_role_limits) are cached the
// same way. Cache age is measured with Options::clock (wall clock by default; tests inject one), while key expiry is
// judged against the `now` argument the caller passes.
//
// Errors: user mistakes are kInvalidArgument / kNotFound with a message fit for the API client; database failures
// come back as the store's Status. Messages never contain a raw key or a hash.
// Thread-safety: every method may be called from any thread; the Database must outlive the KeyStore.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "auth/identity.h"
#include "base/status.h"
#include "store/database.h"

namespace citadel::auth {

struct ApiKeyInfo {
  std::string id;                           // 12 lower-case hex characters
  std::string name;
  Role role = Role::kGuest;
  std::string tenant = "default";
  int64_t created_at = 0;
  int64_t expires_at = 0;                   // 0: never
  int64_t revoked_at = 0;                   // 0: not revoked
  std::vector<std::string> allowed_models;  // empty: every model
  std::string rotated_from;                 // id of the key this one replaced ("" if none)
  std::string created_by;                   // who made it (a principal id), "" if unknown
  QuotaLimits limits;                       // the key's own settings (nullopt: inherit from its role)
  QuotaLimits effective_limits;             // own over the role_limits table over default_role_limits(role)
  PiiPolicy pii = PiiPolicy::kInherit;      // the key's own prompt PII policy (inherit: its tenant's)
  PiiPolicy effective_pii = PiiPolicy::kOff;  // resolve_pii_policy(pii, its tenant's) (off if the tenant is gone)
  // Not revoked and not expired at `now` (the tenant's state is checked by authenticate()).
  bool active(int64_t now) const;
};

struct NewKey {
  std::string name;                          // 1..128 bytes of printable text (UTF-8 allowed, no control chars)
  Role role = Role::kGuest;
  std::string tenant = "default";            // must exist and not be disabled
  int64_t expires_at = 0;                    // 0: never; otherwise in the future
  std::vector<std::string> allowed_models;   // each 1..256 characters, no ',' (stored comma-separated)
  QuotaLimits limits;                        // nullopt fields inherit the role's limits
  std::string created_by;
  PiiPolicy pii = PiiPolicy::kInherit;       // prompt PII policy; inherit follows the tenant (auth/pii_policy.h)
};

struct TenantInfo {
  std::string id;      // [a-z0-9][a-z0-9_-]{0,63}
  std::string name;
  int64_t created_at = 0;
  bool disabled = false;
  QuotaLimits limits;  // nullopt: no tenant-wide limit for that field
  PiiPolicy pii = PiiPolicy::kOff;  // prompt PII policy of its keys that say inherit (never kInherit itself)
};

// Why authenticate() failed, for the audit log (every one of them is a 401/403 at the API). The Status code tells
// them apart too: kInvalidArgument malformed, kNotFound unknown id or wrong secret, kCancelled revoked,
// kDeadlineExceeded expired, kUnsupported the key's tenant is disabled (or gone).
enum class AuthFailure { kNone, kMalformed, kInvalidKey, kRevoked, kExpired, kTenantDisabled, kOther };
AuthFailure auth_failure_of(const Status& st);
const char* auth_failure_name(AuthFailure f);  // "none", "malformed", "invalid", "revoked", "expired", ...

// Strict syntax check of a raw key; returns its id, or nullopt when malformed (never echo `raw` anywhere).
std::optional<std::string> parse_api_key(std::string_view raw);
// [a-z0-9][a-z0-9_-]{0,63}
bool is_valid_tenant_id(std::string_view id);

class KeyStore {
 public:
  struct Options {
    int cache_ttl_s = 2;                 // 0 disables the caches
    size_t cache_capacity = 10000;       // keys; the cache is flushed when full
    std::function<int64_t()> clock;      // Unix seconds for cache age; empty: time(nullptr)
  };
  explicit KeyStore(store::Database* db);
  KeyStore(store::Database* db, Options options);

  // --- keys ---
  // Validates (see NewKey), makes the key and returns its record and the raw key (shown once).
  Result<std::pair<ApiKeyInfo, std::string>> create(const NewKey& k, int64_t now);
  // The key's record with effective_limits filled, or the failure (see AuthFailure).
  Result<ApiKeyInfo> authenticate(std::string_view raw, int64_t now);
  // Every key (revoked and expired ones included), of one tenant when `tenant` is set; ordered by created_at, id.
  Result<std::vector<ApiKeyInfo>> list(const std::optional<std::string>& tenant = std::nullopt);
  Result<ApiKeyInfo> get(const std::string& id);
  // Marks the key revoked at `now` (kNotFound if unknown; revoking twice keeps the first time).
  Status revoke(const std::string& id, int64_t now);
  // Makes a new key with the old one's name, role, tenant, models, limits and creator (no expiry), rotated_from =
  // old id, and cuts the old key's life to min(its expiry if any, now + grace_s) (grace 0: invalid at once).
  // The old key must be active. Returns the new record and raw key.
  Result<std::pair<ApiKeyInfo, std::string>> rotate(const std::string& id, int64_t grace_s, int64_t now);
  Status update_limits(const std::string& id, const QuotaLimits& limits);
  // The key's own PII policy (kInherit allowed); kNotFound if unknown.
  Status update_pii(const std::string& id, PiiPolicy pii);
  // Active keys (not revoked, not expired) of every tenant.
  Result<int64_t> count_active(int64_t now);
  // If no active admin key of an enabled tenant exists, creates one named "bootstrap-admin" in the "default" tenant
  // and returns its raw key; returns "" when one exists. `supplied_raw` (from a file or the environment, for
  // automation) must be a well-formed key; its hash is stored instead of a generated key's. Exactly-once across
  // replicas: the check and the insert are one transaction.
  Result<std::string> ensure_bootstrap_admin(int64_t now, const std::string& supplied_raw = "");

  // --- tenants ---
  // pii: off, mask or reject (kInherit is refused: a tenant has nothing to inherit from).
  Result<TenantInfo> create_tenant(const std::string& id, const std::string& name, const QuotaLimits& limits,
                                   int64_t now, PiiPolicy pii = PiiPolicy::kOff);
  Result<std::vector<TenantInfo>> list_tenants();
  Result<TenantInfo> get_tenant(const std::string& id);  // cached (see the file comment); kNotFound if unknown
  // Changes what is given; kNotFound if unknown. Disabling a tenant makes its keys fail authentication.
  // pii: as create_tenant (kInherit refused). Every cached key is forgotten (they carry their tenant's state).
  Status update_tenant(const std::string& id, const std::optional<QuotaLimits>& limits,
                       std::optional<bool> disabled, std::optional<PiiPolicy> pii = std::nullopt);

  // --- role limits (overrides of default_role_limits) ---
  Status set_role_limits(Role r, const QuotaLimits& limits);  // nullopt fields: use the built-in default
  Result<QuotaLimits> role_limits(Role r);                   // the table's row only (all nullopt if none)
  // role_limits(r).or_else(default_role_limits(r)); cached; the built-in default if the database fails.
  QuotaLimits effective_role_limits(Role r);

 private:
  struct CachedKey {
    ApiKeyInfo info;
    std::string secret_hash;
    bool tenant_usable = false;
    int64_t fetched_at = 0;
  };
  struct CachedTenant {
    TenantInfo info;
    int64_t fetched_at = 0;
  };
  struct CachedRole {
    QuotaLimits limits;
    int64_t fetched_at = 0;
    bool valid = false;
  };

  int64_t clock_now() const;
  bool fresh(int64_t fetched_at) const;
  Result<CachedKey> load_key(const std::string& id);
  Status check_key_state(const CachedKey& k, int64_t now) const;
  // Generates a key and inserts the record `prepare` fills inside the same transaction (retried on an id
  // collision); prepare returns false to insert nothing (the result's raw key is then "").
  using Prepare = std::function<Result<bool>(store::Session&, ApiKeyInfo&)>;
  Result<std::pair<ApiKeyInfo, std::string>> insert_generated(const Prepare& prepare);
  void forget_key(const std::string& id);
  void forget_all();

  store::Database* db_;
  Options options_;
  mutable std::mutex mu_;  // guards the three caches below (never held across a database call)
  std::unordered_map<std::string, CachedKey> keys_;
  std::unordered_map<std::string, CachedTenant> tenants_;
  CachedRole roles_[4];
};

}  // namespace citadel::auth
