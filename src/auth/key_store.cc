#include "auth/key_store.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <ctime>

#include "base/log.h"
#include "base/sha256.h"
#include "base/strings.h"

namespace citadel::auth {

using store::Row;
using store::Session;
using store::Value;

namespace {

constexpr size_t kIdLen = 12;      // hex characters: 48 bits
constexpr size_t kSecretLen = 43;  // base64url of 32 bytes, no padding
constexpr const char* kPrefix = "ck-";
constexpr size_t kRawLen = 3 + kIdLen + 1 + kSecretLen;

// Column order of every api_keys read (key_from_row depends on it).
constexpr const char* kKeyCols =
    "k.id, k.secret_hash, k.name, k.role, k.tenant, k.created_at, k.expires_at, k.revoked_at, k.allowed_models, "
    "k.rotated_from, k.created_by, k.rpm, k.tpm, k.concurrent, k.max_tokens, k.daily_tokens, k.pii";
constexpr size_t kKeyColCount = 17;
constexpr const char* kTenantCols =
    "id, name, created_at, disabled, rpm, tpm, concurrent, max_tokens, daily_tokens, pii";
// Keys with their tenant's policy appended (column kKeyColCount; NULL when the tenant is gone).
constexpr const char* kKeyWithTenantFrom = " FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant";

bool is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
bool is_b64url(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}
bool is_key_id(std::string_view id) {
  if (id.size() != kIdLen) return false;
  for (char c : id)
    if (!is_hex_lower(c)) return false;
  return true;
}

// Printable text: well-formed UTF-8 without control characters (names show up in admin listings and logs).
bool is_printable_text(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
      ++i;
      continue;
    }
    // Lead byte -> continuation count; overlong 2-byte leads (0xc0, 0xc1) and leads past U+10FFFF are refused.
    const size_t n = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 0;
    if (n == 0 || c == 0xc0 || c == 0xc1 || c > 0xf4 || i + n >= s.size()) return false;
    for (size_t j = 1; j <= n; ++j)
      if ((static_cast<unsigned char>(s[i + j]) & 0xc0) != 0x80) return false;
    i += n + 1;
  }
  return true;
}

Status check_name(const std::string& name, const char* what) {
  if (name.empty() || name.size() > 128 || !is_printable_text(name))
    return InvalidArgument(std::string(what) + " must be 1 to 128 bytes of printable text");
  return OkStatus();
}

std::vector<Value> limit_params(const QuotaLimits& l) {
  auto v = [](const std::optional<int64_t>& o) -> Value { return o ? Value(*o) : Value(); };
  return {v(l.requests_per_minute), v(l.tokens_per_minute), v(l.concurrent_requests), v(l.max_tokens_per_request),
          v(l.daily_tokens)};
}

QuotaLimits limits_from(const Row& r, size_t first) {
  auto v = [&](size_t i) -> std::optional<int64_t> {
    if (store::is_null(r[first + i])) return std::nullopt;
    return store::as_int(r[first + i]);
  };
  QuotaLimits l;
  l.requests_per_minute = v(0), l.tokens_per_minute = v(1), l.concurrent_requests = v(2);
  l.max_tokens_per_request = v(3), l.daily_tokens = v(4);
  return l;
}

std::string join_models(const std::vector<std::string>& m) {
  std::string out;
  for (const auto& s : m) out += (out.empty() ? "" : ",") + s;
  return out;
}


Status check_models(const std::vector<std::string>& models) {
  for (const auto& m : models)
    if (m.empty() || m.size() > 256 || m.find(',') != std::string::npos || !is_printable_text(m))
      return InvalidArgument("allowed model names must be 1 to 256 bytes of printable text without ','");
  return OkStatus();
}

// A stored policy column; an unknown value is data loss (never silently "off").
Result<PiiPolicy> pii_from(const Value& v, const char* table, const std::string& id) {
  if (store::is_null(v)) return PiiPolicy::kOff;  // LEFT JOIN without a tenant row
  const auto p = parse_pii_policy(store::as_text(v));
  if (!p) return DataLoss(std::string(table) + ": '" + id + "' has an unknown pii policy");
  return *p;
}

Status check_tenant_pii(PiiPolicy p) {
  if (p == PiiPolicy::kInherit) return InvalidArgument("a tenant's pii policy must be off, mask or reject");
  return OkStatus();
}

// Row in kKeyCols order -> record (effective_limits and effective_pii left to the caller).
Result<ApiKeyInfo> key_from_row(const Row& r) {
  ApiKeyInfo k;
  k.id = store::as_text(r[0]);
  k.name = store::as_text(r[2]);
  const auto role = parse_role(store::as_text(r[3]));
  if (!role) return DataLoss("api_keys: key '" + k.id + "' has an unknown role");
  k.role = *role;
  k.tenant = store::as_text(r[4]);
  k.created_at = store::as_int(r[5]);
  k.expires_at = store::as_int(r[6]);
  k.revoked_at = store::as_int(r[7]);
  k.allowed_models = split_list(store::as_text(r[8]));
  k.rotated_from = store::as_text(r[9]);
  k.created_by = store::as_text(r[10]);
  k.limits = limits_from(r, 11);
  ASSIGN_OR_RETURN(k.pii, pii_from(r[16], "api_keys", k.id));
  return k;
}

// Row in kKeyCols order plus the tenant's pii column -> record with effective_pii.
Result<ApiKeyInfo> key_with_tenant_from_row(const Row& r) {
  ASSIGN_OR_RETURN(ApiKeyInfo k, key_from_row(r));
  ASSIGN_OR_RETURN(PiiPolicy tenant_pii, pii_from(r[kKeyColCount], "tenants", k.tenant));
  k.effective_pii = resolve_pii_policy(k.pii, tenant_pii);
  return k;
}

Result<TenantInfo> tenant_from_row(const Row& r) {
  TenantInfo t;
  t.id = store::as_text(r[0]);
  t.name = store::as_text(r[1]);
  t.created_at = store::as_int(r[2]);
  t.disabled = store::as_int(r[3]) != 0;
  t.limits = limits_from(r, 4);
  ASSIGN_OR_RETURN(t.pii, pii_from(r[9], "tenants", t.id));
  return t;
}

// A fresh key: {id, raw}.
Result<std::pair<std::string, std::string>> generate_key() {
  unsigned char buf[6 + 32];
  if (RAND_bytes(buf, sizeof buf) != 1) return Internal("RAND_bytes failed: no randomness for a new API key");
  static const char kHex[] = "0123456789abcdef";
  static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string id;
  for (int i = 0; i < 6; ++i) id += kHex[buf[i] >> 4], id += kHex[buf[i] & 15];
  std::string secret;
  const unsigned char* s = buf + 6;
  for (int i = 0; i < 32; i += 3) {  // 10 full groups + one of 2 bytes -> 40 + 3 = 43 characters
    const uint32_t v = (uint32_t(s[i]) << 16) | (i + 1 < 32 ? uint32_t(s[i + 1]) << 8 : 0u) |
                       (i + 2 < 32 ? uint32_t(s[i + 2]) : 0u);
    secret += kB64[(v >> 18) & 63];
    secret += kB64[(v >> 12) & 63];
    if (i + 1 < 32) secret += kB64[(v >> 6) & 63];
    if (i + 2 < 32) secret += kB64[v & 63];
  }
  OPENSSL_cleanse(buf, sizeof buf);
  return std::make_pair(id, kPrefix + id + "-" + secret);
}

// The tenant exists and is enabled; *pii (if given) receives its PII policy.
Status check_tenant_usable(Session& s, const std::string& tenant, PiiPolicy* pii = nullptr) {
  if (!is_valid_tenant_id(tenant)) return InvalidArgument("invalid tenant id: it must match [a-z0-9][a-z0-9_-]{0,63}");
  ASSIGN_OR_RETURN(auto rows, s.query("SELECT disabled, pii FROM tenants WHERE id = ?", {tenant}));
  if (rows.empty()) return NotFound("tenant '" + tenant + "' does not exist");
  if (store::as_int(rows[0][0]) != 0) return InvalidArgument("tenant '" + tenant + "' is disabled");
  if (pii) {
    ASSIGN_OR_RETURN(*pii, pii_from(rows[0][1], "tenants", tenant));
  }
  return OkStatus();
}

Status insert_key(Session& s, const ApiKeyInfo& k, const std::string& hash) {
  std::vector<Value> p = {k.id,         hash,       k.name,       std::string(role_name(k.role)),
                          k.tenant,     k.created_at, k.expires_at, join_models(k.allowed_models),
                          k.rotated_from, k.created_by};
  for (auto& v : limit_params(k.limits)) p.push_back(std::move(v));
  p.push_back(std::string(pii_policy_name(k.pii)));
  auto r = s.exec(
      "INSERT INTO api_keys (id, secret_hash, name, role, tenant, created_at, expires_at, revoked_at, allowed_models, "
      "rotated_from, created_by, rpm, tpm, concurrent, max_tokens, daily_tokens, pii) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      p);
  return r.status();
}

Result<bool> key_id_taken(Session& s, const std::string& id) {
  ASSIGN_OR_RETURN(auto rows, s.query("SELECT 1 FROM api_keys WHERE id = ?", {id}));
  return !rows.empty();
}

}  // namespace

bool ApiKeyInfo::active(int64_t now) const { return revoked_at == 0 && (expires_at == 0 || now < expires_at); }

AuthFailure auth_failure_of(const Status& st) {
  switch (st.code()) {
    case StatusCode::kOk: return AuthFailure::kNone;
    case StatusCode::kInvalidArgument: return AuthFailure::kMalformed;
    case StatusCode::kNotFound: return AuthFailure::kInvalidKey;
    case StatusCode::kCancelled: return AuthFailure::kRevoked;
    case StatusCode::kDeadlineExceeded: return AuthFailure::kExpired;
    case StatusCode::kUnsupported: return AuthFailure::kTenantDisabled;
    default: return AuthFailure::kOther;
  }
}

const char* auth_failure_name(AuthFailure f) {
  switch (f) {
    case AuthFailure::kNone: return "none";
    case AuthFailure::kMalformed: return "malformed";
    case AuthFailure::kInvalidKey: return "invalid";
    case AuthFailure::kRevoked: return "revoked";
    case AuthFailure::kExpired: return "expired";
    case AuthFailure::kTenantDisabled: return "tenant_disabled";
    case AuthFailure::kOther: return "error";
  }
  return "error";
}

std::optional<std::string> parse_api_key(std::string_view raw) {
  if (raw.size() != kRawLen || raw.substr(0, 3) != kPrefix || raw[3 + kIdLen] != '-') return std::nullopt;
  const std::string_view id = raw.substr(3, kIdLen);
  if (!is_key_id(id)) return std::nullopt;
  for (char c : raw.substr(3 + kIdLen + 1))
    if (!is_b64url(c)) return std::nullopt;
  return std::string(id);
}

bool is_valid_tenant_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '_' && c != '-'))) return false;
  }
  return true;
}

KeyStore::KeyStore(store::Database* db) : KeyStore(db, Options()) {}
KeyStore::KeyStore(store::Database* db, Options options) : db_(db), options_(std::move(options)) {}

int64_t KeyStore::clock_now() const {
  return options_.clock ? options_.clock() : static_cast<int64_t>(std::time(nullptr));
}

bool KeyStore::fresh(int64_t fetched_at) const {
  const int64_t age = clock_now() - fetched_at;
  return options_.cache_ttl_s > 0 && age >= 0 && age < options_.cache_ttl_s;
}

void KeyStore::forget_key(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  keys_.erase(id);
}

void KeyStore::forget_all() {
  std::lock_guard<std::mutex> l(mu_);
  keys_.clear();
  tenants_.clear();
  for (auto& r : roles_) r.valid = false;
}

// --- keys ---

Result<std::pair<ApiKeyInfo, std::string>> KeyStore::insert_generated(const Prepare& prepare) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    ASSIGN_OR_RETURN(auto gen, generate_key());
    const std::string hash = sha256_hex(gen.second);
    ApiKeyInfo info;
    bool collided = false, inserted = false;
    const Status st = db_->transact([&](Session& s) -> Status {
      collided = inserted = false;
      info = ApiKeyInfo();
      info.id = gen.first;
      ASSIGN_OR_RETURN(bool want, prepare(s, info));
      if (!want) return OkStatus();
      ASSIGN_OR_RETURN(bool taken, key_id_taken(s, info.id));
      if (taken) {
        collided = true;
        return Internal("key id collision");  // rolls back whatever prepare wrote; retried with a new id
      }
      RETURN_IF_ERROR(insert_key(s, info, hash));
      inserted = true;
      return OkStatus();
    });
    if (collided) continue;
    RETURN_IF_ERROR(st);
    if (!inserted) return std::make_pair(ApiKeyInfo(), std::string());
    info.effective_limits = info.limits.or_else(effective_role_limits(info.role));
    return std::make_pair(std::move(info), std::move(gen.second));
  }
  return Internal("could not find an unused API key id after 8 tries");
}

Result<std::pair<ApiKeyInfo, std::string>> KeyStore::create(const NewKey& k, int64_t now) {
  RETURN_IF_ERROR(check_name(k.name, "key name"));
  RETURN_IF_ERROR(check_models(k.allowed_models));
  if (k.expires_at != 0 && k.expires_at <= now)
    return InvalidArgument("expires_at " + std::to_string(k.expires_at) + " is not in the future (now " +
                           std::to_string(now) + ")");
  if (k.created_by.size() > 256) return InvalidArgument("created_by is longer than 256 bytes");
  return insert_generated([&](Session& s, ApiKeyInfo& info) -> Result<bool> {
    PiiPolicy tenant_pii = PiiPolicy::kOff;
    RETURN_IF_ERROR(check_tenant_usable(s, k.tenant, &tenant_pii));
    info.name = k.name, info.role = k.role, info.tenant = k.tenant;
    info.created_at = now, info.expires_at = k.expires_at;
    info.allowed_models = k.allowed_models, info.limits = k.limits, info.created_by = k.created_by;
    info.pii = k.pii, info.effective_pii = resolve_pii_policy(k.pii, tenant_pii);
    return true;
  });
}

Result<KeyStore::CachedKey> KeyStore::load_key(const std::string& id) {
  ASSIGN_OR_RETURN(auto rows, db_->query(std::string("SELECT ") + kKeyCols +
                                             ", t.pii, t.disabled" + kKeyWithTenantFrom + " WHERE k.id = ?",
                                         {id}));
  if (rows.empty()) return NotFound("invalid API key");
  CachedKey c;
  ASSIGN_OR_RETURN(c.info, key_with_tenant_from_row(rows[0]));
  c.secret_hash = store::as_text(rows[0][1]);
  const Value& disabled = rows[0][kKeyColCount + 1];
  c.tenant_usable = !store::is_null(disabled) && store::as_int(disabled) == 0;
  c.info.effective_limits = c.info.limits.or_else(effective_role_limits(c.info.role));
  return c;
}

Status KeyStore::check_key_state(const CachedKey& k, int64_t now) const {
  if (k.info.revoked_at != 0) return Status(StatusCode::kCancelled, "API key revoked");
  if (k.info.expires_at != 0 && now >= k.info.expires_at)
    return Status(StatusCode::kDeadlineExceeded, "API key expired");
  if (!k.tenant_usable) return Status(StatusCode::kUnsupported, "tenant disabled");
  return OkStatus();
}

Result<ApiKeyInfo> KeyStore::authenticate(std::string_view raw, int64_t now) {
  const auto id = parse_api_key(raw);
  if (!id) return InvalidArgument("malformed API key");
  const std::string hash = sha256_hex(raw.data(), raw.size());
  std::optional<CachedKey> entry;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = keys_.find(*id);
    if (it != keys_.end() && fresh(it->second.fetched_at)) entry = it->second;
  }
  if (!entry) {
    ASSIGN_OR_RETURN(CachedKey loaded, load_key(*id));
    loaded.fetched_at = clock_now();
    if (options_.cache_ttl_s > 0) {
      std::lock_guard<std::mutex> l(mu_);
      if (keys_.size() >= options_.cache_capacity) keys_.clear();  // rare; refilled from the database
      keys_[*id] = loaded;
    }
    entry = std::move(loaded);
  }
  if (entry->secret_hash.size() != hash.size() ||
      CRYPTO_memcmp(entry->secret_hash.data(), hash.data(), hash.size()) != 0)
    return NotFound("invalid API key");
  RETURN_IF_ERROR(check_key_state(*entry, now));
  return std::move(entry->info);
}

Result<std::vector<ApiKeyInfo>> KeyStore::list(const std::optional<std::string>& tenant) {
  std::string sql = std::string("SELECT ") + kKeyCols + ", t.pii" + kKeyWithTenantFrom;
  std::vector<Value> params;
  if (tenant) sql += " WHERE k.tenant = ?", params.push_back(*tenant);
  sql += " ORDER BY k.created_at, k.id";
  ASSIGN_OR_RETURN(auto rows, db_->query(sql, params));
  std::vector<ApiKeyInfo> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    ASSIGN_OR_RETURN(ApiKeyInfo k, key_with_tenant_from_row(r));
    k.effective_limits = k.limits.or_else(effective_role_limits(k.role));
    out.push_back(std::move(k));
  }
  return out;
}

Result<ApiKeyInfo> KeyStore::get(const std::string& id) {
  if (!is_key_id(id)) return NotFound("no such API key (an id is 12 lower-case hex characters)");
  ASSIGN_OR_RETURN(auto rows, db_->query(std::string("SELECT ") + kKeyCols + ", t.pii" + kKeyWithTenantFrom +
                                             " WHERE k.id = ?",
                                         {id}));
  if (rows.empty()) return NotFound("API key '" + id + "' not found");
  ASSIGN_OR_RETURN(ApiKeyInfo k, key_with_tenant_from_row(rows[0]));
  k.effective_limits = k.limits.or_else(effective_role_limits(k.role));
  return k;
}

Status KeyStore::revoke(const std::string& id, int64_t now) {
  if (!is_key_id(id)) return NotFound("no such API key (an id is 12 lower-case hex characters)");
  RETURN_IF_ERROR(db_->transact([&](Session& s) -> Status {
    ASSIGN_OR_RETURN(bool exists, key_id_taken(s, id));
    if (!exists) return NotFound("API key '" + id + "' not found");
    return s.exec("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at = 0", {now, id}).status();
  }));
  forget_key(id);
  return OkStatus();
}

Result<std::pair<ApiKeyInfo, std::string>> KeyStore::rotate(const std::string& id, int64_t grace_s, int64_t now) {
  if (!is_key_id(id)) return NotFound("no such API key (an id is 12 lower-case hex characters)");
  if (grace_s < 0) return InvalidArgument("grace period must be >= 0 seconds");
  auto r = insert_generated([&](Session& s, ApiKeyInfo& info) -> Result<bool> {
    ASSIGN_OR_RETURN(auto rows, s.query(std::string("SELECT ") + kKeyCols + " FROM api_keys k WHERE k.id = ?", {id}));
    if (rows.empty()) return NotFound("API key '" + id + "' not found");
    ASSIGN_OR_RETURN(ApiKeyInfo old, key_from_row(rows[0]));
    if (!old.active(now)) return InvalidArgument("API key '" + id + "' is revoked or expired: nothing to rotate");
    PiiPolicy tenant_pii = PiiPolicy::kOff;
    RETURN_IF_ERROR(check_tenant_usable(s, old.tenant, &tenant_pii));
    const int64_t cut = now + grace_s;
    const int64_t new_expiry = old.expires_at != 0 && old.expires_at < cut ? old.expires_at : cut;
    RETURN_IF_ERROR(s.exec("UPDATE api_keys SET expires_at = ? WHERE id = ?", {new_expiry, id}).status());
    info.name = old.name, info.role = old.role, info.tenant = old.tenant;
    info.created_at = now, info.expires_at = 0;
    info.allowed_models = old.allowed_models, info.limits = old.limits;
    info.rotated_from = old.id, info.created_by = old.created_by;
    info.pii = old.pii, info.effective_pii = resolve_pii_policy(old.pii, tenant_pii);
    return true;
  });
  forget_key(id);
  return r;
}

Status KeyStore::update_limits(const std::string& id, const QuotaLimits& limits) {
  if (!is_key_id(id)) return NotFound("no such API key (an id is 12 lower-case hex characters)");
  std::vector<Value> p = limit_params(limits);
  p.push_back(id);
  ASSIGN_OR_RETURN(int64_t n, db_->exec("UPDATE api_keys SET rpm = ?, tpm = ?, concurrent = ?, max_tokens = ?, "
                                        "daily_tokens = ? WHERE id = ?",
                                        p));
  forget_key(id);
  if (n == 0) return NotFound("API key '" + id + "' not found");
  return OkStatus();
}

Status KeyStore::update_pii(const std::string& id, PiiPolicy pii) {
  if (!is_key_id(id)) return NotFound("no such API key (an id is 12 lower-case hex characters)");
  ASSIGN_OR_RETURN(int64_t n, db_->exec("UPDATE api_keys SET pii = ? WHERE id = ?",
                                        {std::string(pii_policy_name(pii)), id}));
  forget_key(id);
  if (n == 0) return NotFound("API key '" + id + "' not found");
  return OkStatus();
}

Result<int64_t> KeyStore::count_active(int64_t now) {
  ASSIGN_OR_RETURN(auto rows, db_->query("SELECT COUNT(*) FROM api_keys WHERE revoked_at = 0 AND "
                                         "(expires_at = 0 OR expires_at > ?)",
                                         {now}));
  return rows.empty() ? int64_t{0} : store::as_int(rows[0][0]);
}

Result<std::string> KeyStore::ensure_bootstrap_admin(int64_t now, const std::string& supplied_raw) {
  // Counts usable admin keys inside the transaction that inserts, so two replicas starting at once make one key.
  auto admin_exists = [now](Session& s) -> Result<bool> {
    ASSIGN_OR_RETURN(auto rows, s.query("SELECT COUNT(*) FROM api_keys k JOIN tenants t ON t.id = k.tenant "
                                        "WHERE k.role = 'admin' AND k.revoked_at = 0 AND "
                                        "(k.expires_at = 0 OR k.expires_at > ?) AND t.disabled = 0",
                                        {now}));
    return !rows.empty() && store::as_int(rows[0][0]) > 0;
  };
  auto fill = [now](Session& s, ApiKeyInfo& info) -> Status {
    RETURN_IF_ERROR(check_tenant_usable(s, "default").with_context("bootstrap admin key"));
    info.name = "bootstrap-admin", info.role = Role::kAdmin, info.tenant = "default";
    info.created_at = now, info.created_by = "bootstrap";
    return OkStatus();
  };
  if (supplied_raw.empty()) {
    ASSIGN_OR_RETURN(auto r, insert_generated([&](Session& s, ApiKeyInfo& info) -> Result<bool> {
      ASSIGN_OR_RETURN(bool exists, admin_exists(s));
      if (exists) return false;
      RETURN_IF_ERROR(fill(s, info));
      return true;
    }));
    return std::move(r.second);
  }
  const auto id = parse_api_key(supplied_raw);
  if (!id) return InvalidArgument("the supplied bootstrap admin key is malformed (expected ck-<12 hex>-<43 base64url>)");
  const std::string hash = sha256_hex(supplied_raw);
  bool inserted = false;
  RETURN_IF_ERROR(db_->transact([&](Session& s) -> Status {
    inserted = false;
    ASSIGN_OR_RETURN(bool exists, admin_exists(s));
    if (exists) return OkStatus();
    ApiKeyInfo info;
    info.id = *id;
    RETURN_IF_ERROR(fill(s, info));
    ASSIGN_OR_RETURN(bool taken, key_id_taken(s, info.id));
    if (taken)
      return InvalidArgument("the supplied bootstrap admin key's id " + *id +
                             " is already in use (revoked or expired?): supply a new key");
    RETURN_IF_ERROR(insert_key(s, info, hash));
    inserted = true;
    return OkStatus();
  }));
  return inserted ? supplied_raw : std::string();
}

// --- tenants ---

Result<TenantInfo> KeyStore::create_tenant(const std::string& id, const std::string& name, const QuotaLimits& limits,
                                           int64_t now, PiiPolicy pii) {
  if (!is_valid_tenant_id(id)) return InvalidArgument("invalid tenant id: it must match [a-z0-9][a-z0-9_-]{0,63}");
  RETURN_IF_ERROR(check_name(name, "tenant name"));
  RETURN_IF_ERROR(check_tenant_pii(pii));
  RETURN_IF_ERROR(db_->transact([&](Session& s) -> Status {
    ASSIGN_OR_RETURN(auto rows, s.query("SELECT 1 FROM tenants WHERE id = ?", {id}));
    if (!rows.empty()) return InvalidArgument("tenant '" + id + "' already exists");
    std::vector<Value> p = {id, name, now};
    for (auto& v : limit_params(limits)) p.push_back(std::move(v));
    p.push_back(std::string(pii_policy_name(pii)));
    return s
        .exec("INSERT INTO tenants (id, name, created_at, disabled, rpm, tpm, concurrent, max_tokens, daily_tokens, "
              "pii) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
              p)
        .status();
  }));
  {
    std::lock_guard<std::mutex> l(mu_);
    tenants_.erase(id);
  }
  TenantInfo t;
  t.id = id, t.name = name, t.created_at = now, t.limits = limits, t.pii = pii;
  return t;
}

Result<std::vector<TenantInfo>> KeyStore::list_tenants() {
  ASSIGN_OR_RETURN(auto rows, db_->query(std::string("SELECT ") + kTenantCols + " FROM tenants ORDER BY id"));
  std::vector<TenantInfo> out;
  for (const auto& r : rows) {
    ASSIGN_OR_RETURN(TenantInfo t, tenant_from_row(r));
    out.push_back(std::move(t));
  }
  return out;
}

Result<TenantInfo> KeyStore::get_tenant(const std::string& id) {
  if (!is_valid_tenant_id(id)) return NotFound("no such tenant (invalid tenant id)");
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = tenants_.find(id);
    if (it != tenants_.end() && fresh(it->second.fetched_at)) return it->second.info;
  }
  ASSIGN_OR_RETURN(auto rows, db_->query(std::string("SELECT ") + kTenantCols + " FROM tenants WHERE id = ?", {id}));
  if (rows.empty()) return NotFound("tenant '" + id + "' does not exist");
  ASSIGN_OR_RETURN(TenantInfo t, tenant_from_row(rows[0]));
  if (options_.cache_ttl_s > 0) {
    std::lock_guard<std::mutex> l(mu_);
    if (tenants_.size() >= options_.cache_capacity) tenants_.clear();
    tenants_[id] = CachedTenant{t, clock_now()};
  }
  return t;
}

Status KeyStore::update_tenant(const std::string& id, const std::optional<QuotaLimits>& limits,
                               std::optional<bool> disabled, std::optional<PiiPolicy> pii) {
  if (!is_valid_tenant_id(id)) return NotFound("no such tenant (invalid tenant id)");
  if (pii) RETURN_IF_ERROR(check_tenant_pii(*pii));
  RETURN_IF_ERROR(db_->transact([&](Session& s) -> Status {
    ASSIGN_OR_RETURN(auto rows, s.query("SELECT 1 FROM tenants WHERE id = ?", {id}));
    if (rows.empty()) return NotFound("tenant '" + id + "' does not exist");
    if (limits) {
      std::vector<Value> p = limit_params(*limits);
      p.push_back(id);
      RETURN_IF_ERROR(s.exec("UPDATE tenants SET rpm = ?, tpm = ?, concurrent = ?, max_tokens = ?, daily_tokens = ? "
                             "WHERE id = ?",
                             p)
                          .status());
    }
    if (disabled)
      RETURN_IF_ERROR(s.exec("UPDATE tenants SET disabled = ? WHERE id = ?", {int64_t{*disabled ? 1 : 0}, id}).status());
    if (pii)
      RETURN_IF_ERROR(s.exec("UPDATE tenants SET pii = ? WHERE id = ?", {std::string(pii_policy_name(*pii)), id}).status());
    return OkStatus();
  }));
  forget_all();  // cached keys carry their tenant's state
  return OkStatus();
}

// --- role limits ---

Status KeyStore::set_role_limits(Role r, const QuotaLimits& limits) {
  std::vector<Value> p = {std::string(role_name(r))};
  for (auto& v : limit_params(limits)) p.push_back(std::move(v));
  RETURN_IF_ERROR(db_->exec("INSERT INTO role_limits (role, rpm, tpm, concurrent, max_tokens, daily_tokens) "
                            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (role) DO UPDATE SET rpm = excluded.rpm, "
                            "tpm = excluded.tpm, concurrent = excluded.concurrent, max_tokens = excluded.max_tokens, "
                            "daily_tokens = excluded.daily_tokens",
                            p)
                      .status());
  forget_all();  // cached keys carry effective limits
  return OkStatus();
}

Result<QuotaLimits> KeyStore::role_limits(Role r) {
  ASSIGN_OR_RETURN(auto rows, db_->query("SELECT rpm, tpm, concurrent, max_tokens, daily_tokens FROM role_limits "
                                         "WHERE role = ?",
                                         {std::string(role_name(r))}));
  if (rows.empty()) return QuotaLimits();
  return limits_from(rows[0], 0);
}

QuotaLimits KeyStore::effective_role_limits(Role r) {
  const auto i = static_cast<size_t>(r);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (roles_[i].valid && fresh(roles_[i].fetched_at)) return roles_[i].limits;
  }
  auto row = role_limits(r);
  if (!row.ok()) {
    // Bounded built-in defaults keep serving while the database is unreachable; the next call retries.
    log_warn(std::string("role limits for '") + role_name(r) + "': " + row.status().message() +
             "; using built-in defaults");
    return default_role_limits(r);
  }
  const QuotaLimits eff = row->or_else(default_role_limits(r));
  if (options_.cache_ttl_s > 0) {
    std::lock_guard<std::mutex> l(mu_);
    roles_[i] = CachedRole{eff, clock_now(), true};
  }
  return eff;
}

}  // namespace citadel::auth
