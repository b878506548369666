// Access: the identity half of the middleware chain: authenticate (API key or OIDC bearer token) -> principal,
// authorise (the role table in auth/identity.h), and the quota stage (reserve at admission, settle at the end with
// the engine's real counts). Errors come back as ApiError in the OpenAI shape: 401 for every credential problem
// (missing, malformed, unknown, wrong secret, expired, revoked, bad token), 403 for a valid caller without the right
// (role, model, tenant), 429 with Retry-After over quota, 400 when one request asks for more than it may ever get.
// With access disabled (serve --auth off, for local experiments and the cost benchmark) every caller is an
// anonymous admin and no quota applies.
// Thread-safety: every method is safe from any thread (the stores are).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "api/errors.h"
#include "api/request_context.h"
#include "auth/identity.h"
#include "server/http_types.h"

namespace citadel::auth {
class KeyStore;
class OidcVerifier;
class QuotaManager;
}  // namespace citadel::auth

namespace citadel::api {

struct AccessOptions {
  bool enabled = true;
  auth::KeyStore* keys = nullptr;      // required when enabled
  auth::OidcVerifier* oidc = nullptr;  // optional: bearer JWTs
  auth::QuotaManager* quotas = nullptr;  // optional: no quotas when null
  int lease_ttl_s = 660;               // a crashed replica's concurrency slots free up after this
};

class Access {
 public:
  explicit Access(AccessOptions o) : o_(o) {}
  bool enabled() const { return o_.enabled; }
  auth::KeyStore* keys() const { return o_.keys; }
  auth::QuotaManager* quotas() const { return o_.quotas; }

  // The request's credential -> principal (or the 401/403 to answer). Reads `Authorization: Bearer <credential>`.
  std::optional<ApiError> authenticate(const server::HttpRequest& req, auth::Principal* out) const;
  // 403 unless the principal's role grants the permission.
  static std::optional<ApiError> authorise(const auth::Principal& p, auth::Permission perm);
  // Quota admission for an inference request of `tokens` (prompt + max completion over all choices) asking for
  // `max_completion` tokens per choice: reserves atomically across the key's and the tenant's scopes, records the
  // reservation and the x-ratelimit-* state in ctx. 429 (Retry-After) or 400 when refused.
  std::optional<ApiError> admit(RequestContext& ctx, int64_t tokens, int64_t max_completion) const;
  // Settles ctx's reservation (if any) with the real token count; idempotent.
  void settle(const RequestContext& ctx, const ExchangeRecord& rec) const;

 private:
  AccessOptions o_;
};

// The anonymous principal of a server with access disabled (admin rights, tenant "default").
auth::Principal anonymous_admin();

}  // namespace citadel::api
