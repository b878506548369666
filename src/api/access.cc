#include "api/access.h"

#include <unistd.h>

#include <atomic>
#include <ctime>

#include "auth/key_store.h"
#include "auth/oidc.h"
#include "auth/quota.h"
#include "base/log.h"

namespace citadel::api {

namespace {

// The credential of `Authorization: Bearer <credential>` ("" when absent; nullopt when the header is malformed).
std::optional<std::string> bearer(const server::HttpRequest& req) {
  const std::string* h = req.header("authorization");
  if (!h) return std::string();
  const std::string& v = *h;
  if (v.size() < 7 || (v.compare(0, 7, "Bearer ") != 0 && v.compare(0, 7, "bearer ") != 0)) return std::nullopt;
  size_t a = 7;
  while (a < v.size() && v[a] == ' ') ++a;
  size_t b = v.size();
  while (b > a && v[b - 1] == ' ') --b;
  return v.substr(a, b - a);
}

bool limited(const auth::QuotaLimits& l) {
  for (const auto* f : {&l.requests_per_minute, &l.tokens_per_minute, &l.concurrent_requests,
                        &l.max_tokens_per_request, &l.daily_tokens})
    if (*f && **f >= 0) return true;
  return false;
}

bool looks_like_jwt(const std::string& s) {
  size_t dots = 0;
  for (char c : s) dots += c == '.';
  return dots == 2;
}

}  // namespace

auth::Principal anonymous_admin() {
  auth::Principal p;
  p.kind = auth::Principal::Kind::kAnonymous;
  p.id = "anonymous";
  p.name = "anonymous";
  p.role = auth::Role::kAdmin;
  p.limits = auth::default_role_limits(auth::Role::kAdmin);
  return p;
}

std::optional<ApiError> Access::authenticate(const server::HttpRequest& req, auth::Principal* out) const {
  const auto cred = bearer(req);
  if (!cred) return unauthorized("malformed Authorization header: expected 'Bearer <API key or token>'");
  if (cred->empty())
    return unauthorized("no credential: send 'Authorization: Bearer <API key>' (citadel keys create makes one)");
  if (cred->size() > 16384) return unauthorized("credential too long");
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  if (o_.oidc && looks_like_jwt(*cred)) {
    auto p = o_.oidc->verify(*cred, now);
    if (!p.ok()) return unauthorized("invalid bearer token: " + p.status().message());
    auto t = o_.keys->get_tenant(p->tenant);
    if (!t.ok() || t->disabled) return forbidden("tenant '" + p->tenant.substr(0, 64) + "' is not active", "tenant_disabled");
    p->limits = p->limits.or_else(o_.keys->effective_role_limits(p->role));
    p->pii = auth::resolve_pii_policy(auth::PiiPolicy::kInherit, t->pii);  // no key: the tenant's policy
    *out = std::move(*p);
    return std::nullopt;
  }
  auto k = o_.keys->authenticate(*cred, now);
  if (!k.ok()) {
    switch (auth::auth_failure_of(k.status())) {
      case auth::AuthFailure::kTenantDisabled: return forbidden(k.status().message(), "tenant_disabled");
      case auth::AuthFailure::kOther: {  // the store itself failed: not the caller's fault, and no details out
        log_warn("authentication: credential store error: " + k.status().message());
        ApiError e = unavailable("the credential store is unavailable; retry shortly");
        e.code = "credential_store_unavailable";
        return e;
      }
      default: return unauthorized(k.status().message());
    }
  }
  auth::Principal& p = *out;
  p = auth::Principal();
  p.kind = auth::Principal::Kind::kApiKey;
  p.id = "key:" + k->id;
  p.key_id = k->id;
  p.name = k->name;
  p.role = k->role;
  p.tenant = k->tenant;
  p.allowed_models = k->allowed_models;
  p.limits = k->effective_limits;  // own over the role table over the built-in defaults
  p.pii = k->effective_pii;        // the key's own policy over its tenant's (auth/pii_policy.h)
  return std::nullopt;
}

std::optional<ApiError> Access::authorise(const auth::Principal& p, auth::Permission perm) {
  if (auth::role_permits(p.role, perm)) return std::nullopt;
  return forbidden(std::string("the role '") + auth::role_name(p.role) + "' does not grant '" +
                       auth::permission_name(perm) + "'",
                   "permission_denied");
}

std::optional<ApiError> Access::admit(RequestContext& ctx, int64_t tokens, int64_t max_completion) const {
  if (!o_.enabled || !o_.quotas || !ctx.principal) return std::nullopt;
  const auth::Principal& p = *ctx.principal;
  // Only scopes with a limit are metered: an unlimited admin or a tenant without limits costs no database write.
  std::vector<auth::QuotaScope> scopes;
  if (limited(p.limits)) scopes.push_back({p.id, p.limits});
  if (o_.keys) {
    auto t = o_.keys->get_tenant(p.tenant);
    if (t.ok() && limited(t->limits)) scopes.push_back({"tenant:" + p.tenant, t->limits});
  }
  if (scopes.empty()) return std::nullopt;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  // The client may choose its x-request-id (and reuse it): the reservation gets a server-made unique id.
  static std::atomic<uint64_t> counter{0};
  const std::string reservation_id = ctx.request_id.substr(0, 128) + "#" + std::to_string(now) + "." +
                                     std::to_string(++counter) + "." + std::to_string(::getpid());
  auto d = o_.quotas->reserve(reservation_id, scopes, tokens, max_completion, now, o_.lease_ttl_s);
  if (!d.ok()) {
    ApiError e = internal_error("quota store: " + d.status().message());
    e.status = 503, e.type = "service_unavailable", e.code = "quota_store_unavailable", e.retry_after_s = 1;
    return e;
  }
  RateLimitState rl;
  rl.limit_requests = d->info.limit_requests, rl.remaining_requests = d->info.remaining_requests;
  rl.reset_requests_s = d->info.reset_requests_s;
  rl.limit_tokens = d->info.limit_tokens, rl.remaining_tokens = d->info.remaining_tokens;
  rl.reset_tokens_s = d->info.reset_tokens_s;
  ctx.set_rate_limit(rl);
  if (d->allowed) {
    ctx.set_reservation(reservation_id);
    return std::nullopt;
  }
  ApiError e;
  if (d->limit == "max_tokens_per_request") {
    e = bad_request(d->message, "max_tokens", "max_tokens_exceeds_limit");
    return e;
  }
  e.status = 429;
  e.message = d->message;
  e.retry_after_s = d->retry_after_s;  // 0: no retry can succeed (the request alone exceeds the limit)
  if (d->limit == "daily_tokens") {
    e.type = "insufficient_quota", e.code = "insufficient_quota";
  } else {
    e.type = d->limit == "requests_per_minute" ? "requests" : d->limit == "tokens_per_minute" ? "tokens" : "concurrency";
    e.code = "rate_limit_exceeded";
  }
  return e;
}

void Access::settle(const RequestContext& ctx, const ExchangeRecord& rec) const {
  if (!o_.quotas) return;
  const std::string id = ctx.reservation();
  if (id.empty()) return;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  // Off this (I/O) thread; the next reservation on this server applies it first (QuotaManager::settle_later).
  o_.quotas->settle_later(id, static_cast<int64_t>(rec.prompt_tokens) + rec.completion_tokens, now);
}

}  // namespace citadel::api
