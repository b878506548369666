#include "auth/oidc.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/sha256.h"

namespace citadel::auth {
namespace {

using nlohmann::json;

constexpr size_t kMaxTokenBytes = 16 * 1024;
constexpr size_t kMaxJwksFileBytes = 1u << 20;
constexpr int kMaxJsonDepth = 32;
constexpr int64_t kKidRefreshInterval = 10;  // seconds between refreshes an unknown kid may trigger
constexpr size_t kMaxIdChars = 200;          // of the principal id after "oidc:" and of the name
constexpr int64_t kMaxNumericDate = int64_t{1} << 53;  // clamp so leeway arithmetic cannot overflow
// Request threads read the clock at slightly different moments, so `now` may run a little backwards between calls;
// only a jump further back than this counts as a reset clock (and makes a refresh due).
constexpr int64_t kClockSlack = 60;

bool within(int64_t elapsed, int64_t interval) { return elapsed > -kClockSlack && elapsed < interval; }

struct Jws {
  std::string_view signing_input;  // "header.payload" exactly as received
  std::string alg;                 // "RS256" or "ES256"
  std::optional<std::string> kid;
  json claims;                     // an object
  std::string signature;           // raw bytes
};

Result<json> decode_json_part(std::string_view part, const char* what) {
  Status bad = InvalidArgument(std::string("malformed token ") + what);
  auto bytes = base64url_decode(part);
  if (!bytes.ok() || json_too_deep(*bytes, kMaxJsonDepth)) return bad;
  json j = json::parse(bytes->begin(), bytes->end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad;
  return j;
}

// The alg is attacker-chosen text: echo it only when it looks like an algorithm name.
Status alg_refused(const std::string& alg) {
  bool plain = !alg.empty() && alg.size() <= 16;
  for (char c : alg) plain = plain && std::isalnum(static_cast<unsigned char>(c));
  return InvalidArgument(plain ? "algorithm " + alg + " not allowed" : std::string("algorithm not allowed"));
}

Result<Jws> parse_jws(std::string_view token) {
  if (token.empty()) return InvalidArgument("empty token");
  if (token.size() > kMaxTokenBytes) return InvalidArgument("token too large");
  size_t d1 = token.find('.');
  size_t d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
    return InvalidArgument("malformed token");
  Jws jws;
  jws.signing_input = token.substr(0, d2);
  ASSIGN_OR_RETURN(json header, decode_json_part(token.substr(0, d1), "header"));
  auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string()) return InvalidArgument("malformed token header");
  jws.alg = alg->get<std::string>();
  if (jws.alg != "RS256" && jws.alg != "ES256") return alg_refused(jws.alg);
  // RFC 7515 4.1.11: a recipient must refuse extensions it does not understand (e.g. b64=false).
  if (header.contains("crit")) return InvalidArgument("token has critical header parameters");
  if (auto kid = header.find("kid"); kid != header.end()) {
    if (!kid->is_string()) return InvalidArgument("malformed token header");
    jws.kid = kid->get<std::string>();
  }
  ASSIGN_OR_RETURN(jws.claims, decode_json_part(token.substr(d1 + 1, d2 - d1 - 1), "payload"));
  auto sig = base64url_decode(token.substr(d2 + 1));
  if (!sig.ok()) return InvalidArgument("malformed token signature");
  jws.signature = std::move(sig).value();
  return jws;
}

// A NumericDate (RFC 7519 2) as whole seconds, or nullopt when the claim is not a number.
std::optional<int64_t> numeric_date(const json& v) {
  if (v.is_number_unsigned()) return static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), kMaxNumericDate));
  if (v.is_number_integer()) return std::clamp<int64_t>(v.get<int64_t>(), -kMaxNumericDate, kMaxNumericDate);
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (!std::isfinite(d)) return std::nullopt;
    d = std::clamp(std::floor(d), -static_cast<double>(kMaxNumericDate), static_cast<double>(kMaxNumericDate));
    return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

Status check_time_claims(const json& c, int64_t now, int64_t leeway) {
  auto exp_it = c.find("exp");
  if (exp_it == c.end()) return InvalidArgument("token has no expiry");
  std::optional<int64_t> exp = numeric_date(*exp_it);
  if (!exp) return InvalidArgument("malformed exp claim");
  if (now >= *exp + leeway) return InvalidArgument("token expired");
  if (auto it = c.find("nbf"); it != c.end()) {
    std::optional<int64_t> nbf = numeric_date(*it);
    if (!nbf) return InvalidArgument("malformed nbf claim");
    if (now < *nbf - leeway) return InvalidArgument("token not yet valid");
  }
  if (auto it = c.find("iat"); it != c.end()) {
    std::optional<int64_t> iat = numeric_date(*it);
    if (!iat) return InvalidArgument("malformed iat claim");
    if (*iat > now + leeway) return InvalidArgument("token issued in the future");
  }
  return OkStatus();
}

Status check_claims(const json& c, const OidcConfig& cfg, int64_t now) {
  auto iss = c.find("iss");
  if (iss == c.end() || !iss->is_string() || iss->get_ref<const std::string&>() != cfg.issuer)
    return InvalidArgument("issuer not accepted");
  auto aud = c.find("aud");
  if (aud == c.end()) return InvalidArgument("token has no audience");
  auto accepted = [&](const json& a) {
    return a.is_string() &&
           std::find(cfg.audiences.begin(), cfg.audiences.end(), a.get_ref<const std::string&>()) !=
               cfg.audiences.end();
  };
  bool aud_ok = aud->is_array() ? std::any_of(aud->begin(), aud->end(), accepted) : accepted(*aud);
  if (!aud_ok) return InvalidArgument("audience not accepted");
  RETURN_IF_ERROR(check_time_claims(c, now, cfg.leeway_s));
  auto sub = c.find("sub");
  if (sub == c.end() || !sub->is_string() || sub->get_ref<const std::string&>().empty())
    return InvalidArgument("token has no subject");
  return OkStatus();
}

// A claim by literal name first (namespaced claim names contain dots), then as a dotted path of nested objects.
const json* find_claim(const json& claims, const std::string& name) {
  if (auto it = claims.find(name); it != claims.end()) return &*it;
  if (name.find('.') == std::string::npos) return nullptr;
  const json* cur = &claims;
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    std::string seg = name.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(seg);
    if (it == cur->end()) return nullptr;
    cur = &*it;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

int privilege(Role r) {
  switch (r) {
    case Role::kAdmin: return 3;
    case Role::kDeveloper: return 2;
    case Role::kAuditor: return 1;
    case Role::kGuest: return 0;
  }
  return 0;
}

std::optional<Role> role_from_claim(const json* v) {
  if (!v) return std::nullopt;
  if (v->is_string()) return parse_role(v->get_ref<const std::string&>());
  if (!v->is_array()) return std::nullopt;
  std::optional<Role> best;
  for (const json& e : *v) {
    if (!e.is_string()) continue;
    std::optional<Role> r = parse_role(e.get_ref<const std::string&>());
    if (r && (!best || privilege(*r) > privilege(*best))) best = r;
  }
  return best;
}

// Same rule as API-key tenants: [a-z0-9][a-z0-9_-]{0,63}.
bool valid_tenant(std::string_view t) {
  if (t.empty() || t.size() > 64) return false;
  for (size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '_' || c == '-'));
    if (!ok) return false;
  }
  return true;
}

// Printable ASCII without spaces; other bytes and '%' are percent-encoded so distinct subjects stay distinct. An
// over-long result keeps a prefix and a hash of the whole subject for the same reason.
std::string principal_id(const std::string& sub) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : sub) {
    if (c > 0x20 && c < 0x7f && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
    if (out.size() > kMaxIdChars) break;
  }
  if (out.size() > kMaxIdChars) out = out.substr(0, kMaxIdChars - 17) + "~" + sha256_hex(sub).substr(0, 16);
  return "oidc:" + out;
}

// For display and logs only: control characters dropped, at most kMaxIdChars bytes, cut on a UTF-8 boundary
// (nlohmann already refused invalid UTF-8).
std::string display_name(const std::string& s) {
  std::string out;
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != 0x7f) out.push_back(ch);
  }
  if (out.size() > kMaxIdChars) {
    size_t cut = kMaxIdChars;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
  }
  return out;
}

Result<Principal> principal_from_claims(const json& c, const OidcConfig& cfg, std::optional<Role> default_role) {
  Principal p;
  p.kind = Principal::Kind::kOidc;
  const std::string& sub = c.at("sub").get_ref<const std::string&>();
  p.id = principal_id(sub);
  auto user = c.find("preferred_username");
  bool has_user = user != c.end() && user->is_string() && !user->get_ref<const std::string&>().empty();
  p.name = display_name(has_user ? user->get_ref<const std::string&>() : sub);
  std::optional<Role> role = role_from_claim(find_claim(c, cfg.role_claim));
  if (!role) role = default_role;
  if (!role) return InvalidArgument("token carries no recognised role");
  p.role = *role;
  p.tenant = cfg.default_tenant;
  if (const json* t = find_claim(c, cfg.tenant_claim)) {
    if (!t->is_string() || !valid_tenant(t->get_ref<const std::string&>()))
      return InvalidArgument("tenant claim is not a valid tenant id");
    p.tenant = t->get<std::string>();
  }
  p.limits = default_role_limits(p.role);
  return p;
}

Status validate_config(const OidcConfig& cfg, const JwksFetchFn& fetch) {
  if (cfg.issuer.empty()) return InvalidArgument("oidc: issuer is required");
  if (cfg.audiences.empty()) return InvalidArgument("oidc: at least one audience is required");
  for (const std::string& a : cfg.audiences)
    if (a.empty()) return InvalidArgument("oidc: empty audience");
  if (cfg.jwks_file.empty() == cfg.jwks_url.empty())
    return InvalidArgument("oidc: set exactly one of jwks_file and jwks_url");
  if (!cfg.jwks_url.empty() && !fetch) return InvalidArgument("oidc: jwks_url needs a fetch function");
  if (cfg.role_claim.empty() || cfg.tenant_claim.empty()) return InvalidArgument("oidc: empty claim name");
  if (!cfg.default_role.empty() && !parse_role(cfg.default_role))
    return InvalidArgument("oidc: default_role '" + cfg.default_role + "' is not admin, developer, auditor or guest");
  if (!valid_tenant(cfg.default_tenant))
    return InvalidArgument("oidc: default_tenant '" + cfg.default_tenant + "' is not a valid tenant id");
  if (cfg.leeway_s < 0 || cfg.leeway_s > 600) return InvalidArgument("oidc: leeway_s must be within 0..600");
  return OkStatus();
}

}  // namespace

Result<std::unique_ptr<OidcVerifier>> OidcVerifier::create(OidcConfig config, JwksFetchFn fetch) {
  RETURN_IF_ERROR(validate_config(config, fetch));
  std::optional<Role> default_role;
  if (!config.default_role.empty()) default_role = parse_role(config.default_role);
  std::unique_ptr<OidcVerifier> v(new OidcVerifier(std::move(config), std::move(fetch), default_role));
  ASSIGN_OR_RETURN(v->keys_, v->load_keys());
  return v;
}

OidcVerifier::OidcVerifier(OidcConfig config, JwksFetchFn fetch, std::optional<Role> default_role)
    : config_(std::move(config)), fetch_(std::move(fetch)), default_role_(default_role) {}

Result<std::shared_ptr<const JwkSet>> OidcVerifier::load_keys() const {
  std::string text;
  std::string source;
  if (!config_.jwks_file.empty()) {
    source = config_.jwks_file;
    std::ifstream in(config_.jwks_file, std::ios::binary);
    if (!in) return IoError("oidc: cannot open JWKS file " + source);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) return IoError("oidc: cannot read JWKS file " + source);
    if (text.size() > kMaxJwksFileBytes) return InvalidArgument("oidc: JWKS file " + source + " larger than 1 MiB");
  } else {
    source = config_.jwks_url;
    Result<std::string> body = fetch_(config_.jwks_url);
    if (!body.ok()) return body.status().with_context("oidc: JWKS " + source);
    text = std::move(body).value();
  }
  Result<JwkSet> set = parse_jwks(text);
  if (!set.ok()) return set.status().with_context("oidc: JWKS " + source);
  return std::make_shared<const JwkSet>(std::move(set).value());
}

std::shared_ptr<const JwkSet> OidcVerifier::current_keys() const {
  std::lock_guard<std::mutex> lk(keys_mu_);
  return keys_;
}

size_t OidcVerifier::key_count() const { return current_keys()->keys.size(); }

Status OidcVerifier::reload_locked(int64_t now_unix) {
  {
    // Stamped before loading so a failing source is retried on schedule, not on every request.
    std::lock_guard<std::mutex> lk(keys_mu_);
    loaded_unix_ = now_unix;
    last_fetch_unix_ = now_unix;
  }
  Result<std::shared_ptr<const JwkSet>> keys = load_keys();
  if (!keys.ok()) return keys.status();
  std::lock_guard<std::mutex> lk(keys_mu_);
  keys_ = std::move(keys).value();
  return OkStatus();
}

Status OidcVerifier::refresh(int64_t now_unix) {
  std::lock_guard<std::mutex> fl(fetch_mu_);
  return reload_locked(now_unix);
}

void OidcVerifier::maybe_refresh_stale(int64_t now_unix) {
  if (config_.jwks_refresh_s <= 0) return;
  auto fresh = [&] {
    std::lock_guard<std::mutex> lk(keys_mu_);
    if (!loaded_unix_) loaded_unix_ = now_unix;  // the create-time load, placed on the caller's clock
    return within(now_unix - *loaded_unix_, config_.jwks_refresh_s);
  };
  if (fresh()) return;
  std::unique_lock<std::mutex> fl(fetch_mu_, std::try_to_lock);
  if (!fl.owns_lock() || fresh()) return;  // another thread is loading or just did; use the current set
  Status st = reload_locked(now_unix);
  if (!st.ok()) log_warn("oidc: JWKS refresh failed, keeping the previous keys: " + st.message());
}

void OidcVerifier::refresh_for_unknown_kid(int64_t now_unix) {
  std::lock_guard<std::mutex> fl(fetch_mu_);
  {
    std::lock_guard<std::mutex> lk(keys_mu_);
    if (last_fetch_unix_ && within(now_unix - *last_fetch_unix_, kKidRefreshInterval)) return;
  }
  Status st = reload_locked(now_unix);
  if (!st.ok()) log_warn("oidc: JWKS refresh for an unknown key id failed: " + st.message());
}

Result<Principal> OidcVerifier::verify(std::string_view token, int64_t now_unix) {
  try {
    ASSIGN_OR_RETURN(Jws jws, parse_jws(token));
    maybe_refresh_stale(now_unix);
    const JwkType want = jws.alg == "RS256" ? JwkType::kRsa : JwkType::kEcP256;
    std::shared_ptr<const JwkSet> keys = current_keys();
    const Jwk* key = jws.kid ? keys->find(*jws.kid) : keys->only_of_type(want);
    if (!key && jws.kid) {
      refresh_for_unknown_kid(now_unix);
      keys = current_keys();
      key = keys->find(*jws.kid);
    }
    if (!key) return InvalidArgument(jws.kid ? "unknown key id" : "token has no key id and no single key matches");
    if (key->type != want) return InvalidArgument("key type does not match algorithm");
    RETURN_IF_ERROR(want == JwkType::kRsa ? verify_rs256(*key, jws.signing_input, jws.signature)
                                          : verify_es256(*key, jws.signing_input, jws.signature));
    RETURN_IF_ERROR(check_claims(jws.claims, config_, now_unix));
    return principal_from_claims(jws.claims, config_, default_role_);
  } catch (const nlohmann::json::exception&) {
    // Every access above is type-checked first; this is a backstop so hostile claims can never escape as a throw.
    return InvalidArgument("malformed token claims");
  }
}

}  // namespace citadel::auth
