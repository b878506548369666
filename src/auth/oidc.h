// OIDC bearer tokens: verifies a compact JWS (RS256 or ES256 only) against the identity provider's JWKS and maps its
// claims to a Principal {kind kOidc, id "oidc:<sub>", name, role, tenant}.
//
// Security contract:
// - Only the algorithms RS256 and ES256 are accepted, and a key's type must match the header's alg, so `none`, HMAC
//   (including the RSA-public-key-as-HMAC-secret confusion), RS384, PS256 and the rest are refused; header members
//   that point at keys (jku, x5u, jwk, x5c) are never followed; a `crit` header is refused.
// - RSA keys need a modulus of at least 2048 bits.
// - iss must equal the configured issuer exactly; aud (string or array) must contain a configured audience; exp and sub
//   are required; exp, nbf and iat are checked with `leeway_s` of clock skew either way.
// - Error messages are short, fixed reasons ("token expired", "signature does not verify", "unknown key id",
//   "algorithm HS256 not allowed", ...) safe to return to the client and to log; they never contain the token, its
//   claims or its key id. All token errors have code kInvalidArgument (the caller answers 401); kInternal means
//   OpenSSL itself failed.
// - Tokens over 16 KiB, JSON nested deeper than 32 and malformed base64url are refused before any parsing work.
//
// Keys: from `jwks_file` (re-read like a URL) or `jwks_url` through the injected fetch function (auth/ never opens a
// socket). A token whose kid is not in the set triggers one refresh, at most once per 10 s, so key rotation works;
// the set is also refreshed when older than `jwks_refresh_s` (by the first request that notices, others keep using
// the current set meanwhile). A failed refresh keeps the previous set and logs a warning. All time comparisons use the
// caller's `now_unix` (seconds since the epoch), which makes rotation and expiry testable without sleeping; calls whose
// clocks disagree by less than a minute (threads reading time at different moments) do not count as a reset clock.
//
// Thread-safety: verify() and refresh() may be called concurrently from any threads. At most one fetch runs at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/identity.h"
#include "auth/jwk.h"
#include "auth/jwks_fetch.h"
#include "base/status.h"

namespace citadel::auth {

struct OidcConfig {
  std::string issuer;                  // required; compared byte for byte with the token's iss
  std::vector<std::string> audiences;  // required, at least one; the token's aud must contain one of them
  std::string jwks_file;               // exactly one of jwks_file and jwks_url
  std::string jwks_url;                // fetched through the injected JwksFetchFn
  // Claim names; a name with dots is tried first as a literal claim name (namespaced claims such as
  // "https://example.com/role"), then as a path through nested objects ("realm_access.roles").
  // The role claim is a string or an array of strings; from an array the most privileged recognised role wins
  // (admin > developer > auditor > guest); unrecognised names are ignored.
  std::string role_claim = "citadel_role";
  std::string tenant_claim = "citadel_tenant";
  std::string default_role;            // for tokens without a recognised role; empty: such tokens are refused
  std::string default_tenant = "default";
  int leeway_s = 60;                   // clock skew allowed on exp, nbf and iat (0..600)
  int jwks_refresh_s = 300;            // refresh the key set when older than this; <= 0: only on unknown kid
};

class OidcVerifier {
 public:
  // Checks the config (issuer, audiences, one key source, fetch present for a URL, default_role a known role,
  // default_tenant well formed, leeway in range) and loads the key set once; an unreachable or unusable JWKS is an
  // error here, so a misconfiguration shows at start-up.
  static Result<std::unique_ptr<OidcVerifier>> create(OidcConfig config, JwksFetchFn fetch = nullptr);

  // The principal a bearer token (without the "Bearer " prefix) stands for, or why it is refused.
  Result<Principal> verify(std::string_view token, int64_t now_unix);

  // Reloads the key set now (e.g. from an admin action); on failure the previous set stays in use.
  Status refresh(int64_t now_unix);

  size_t key_count() const;
  const OidcConfig& config() const { return config_; }

 private:
  OidcVerifier(OidcConfig config, JwksFetchFn fetch, std::optional<Role> default_role);

  Result<std::shared_ptr<const JwkSet>> load_keys() const;
  std::shared_ptr<const JwkSet> current_keys() const;
  // Loads and installs a new set; callers hold fetch_mu_.
  Status reload_locked(int64_t now_unix);
  void maybe_refresh_stale(int64_t now_unix);
  // After a kid miss: refreshes unless a fetch happened in the last 10 s (the caller then looks the kid up again,
  // which also sees a set another thread just installed).
  void refresh_for_unknown_kid(int64_t now_unix);

  const OidcConfig config_;
  const JwksFetchFn fetch_;
  const std::optional<Role> default_role_;

  std::mutex fetch_mu_;  // one JWKS load at a time; never held while keys_mu_ is wanted by verify for long
  mutable std::mutex keys_mu_;
  std::shared_ptr<const JwkSet> keys_;        // guarded by keys_mu_
  std::optional<int64_t> loaded_unix_;        // guarded by keys_mu_; verify clock of the last load (unset: at create)
  std::optional<int64_t> last_fetch_unix_;    // guarded by keys_mu_; verify clock of the last attempt of any kind
};

}  // namespace citadel::auth
