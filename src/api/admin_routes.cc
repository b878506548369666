#include "api/admin_routes.h"

#include <cctype>
#include <cstdio>
#include <ctime>

#include <nlohmann/json.hpp>

#include "api/observed_responder.h"
#include "api/request_context.h"
#include "api/service.h"
#include "audit/audit_log.h"
#include "auth/key_store.h"
#include "base/clock.h"

namespace citadel::api {

namespace {

using json = nlohmann::json;
using auth::Permission;
using auth::Role;

int64_t now_unix() { return static_cast<int64_t>(std::time(nullptr)); }

const char* const kLimitNames[] = {"requests_per_minute", "tokens_per_minute", "concurrent_requests",
                                   "max_tokens_per_request", "daily_tokens"};

std::optional<int64_t>* limit_field(auth::QuotaLimits& q, int i) {
  switch (i) {
    case 0: return &q.requests_per_minute;
    case 1: return &q.tokens_per_minute;
    case 2: return &q.concurrent_requests;
    case 3: return &q.max_tokens_per_request;
    default: return &q.daily_tokens;
  }
}

json limits_json(auth::QuotaLimits q) {
  json j = json::object();
  for (int i = 0; i < 5; ++i) {
    const auto& f = *limit_field(q, i);
    j[kLimitNames[i]] = f ? json(*f) : json(nullptr);
  }
  return j;
}

// {"requests_per_minute": 60, "daily_tokens": null, ...}: null clears (inherit); unknown names are errors.
std::optional<ApiError> parse_limits(const json& j, auth::QuotaLimits* out) {
  if (j.is_null()) return std::nullopt;
  if (!j.is_object()) return bad_request("limits must be an object", "limits");
  for (const auto& [k, v] : j.items()) {
    int idx = -1;
    for (int i = 0; i < 5; ++i)
      if (k == kLimitNames[i]) idx = i;
    if (idx < 0) return bad_request("unknown limit '" + k.substr(0, 64) + "'", "limits");
    if (v.is_null()) limit_field(*out, idx)->reset();
    else if (v.is_number_integer()) *limit_field(*out, idx) = v.get<int64_t>();
    else return bad_request("limit '" + k + "' must be an integer or null", "limits");
  }
  return std::nullopt;
}

// "pii": inherit|off|mask|reject for a key (allow_inherit), off|mask|reject for a tenant; absent leaves *out as is.
std::optional<ApiError> parse_pii(const json& b, bool allow_inherit, auth::PiiPolicy* out) {
  auto it = b.find("pii");
  if (it == b.end()) return std::nullopt;
  const auto p = it->is_string() ? auth::parse_pii_policy(it->get<std::string>()) : std::nullopt;
  if (!p || (!allow_inherit && *p == auth::PiiPolicy::kInherit))
    return bad_request(allow_inherit ? "pii must be one of inherit, off, mask, reject"
                                     : "pii must be one of off, mask, reject",
                       "pii");
  *out = *p;
  return std::nullopt;
}

json key_json(const auth::ApiKeyInfo& k, int64_t now) {
  const char* state = k.revoked_at ? "revoked" : (k.expires_at && k.expires_at <= now) ? "expired" : "active";
  return {{"id", k.id},
          {"object", "api_key"},
          {"name", k.name},
          {"role", auth::role_name(k.role)},
          {"tenant", k.tenant},
          {"state", state},
          {"created_at", k.created_at},
          {"expires_at", k.expires_at ? json(k.expires_at) : json(nullptr)},
          {"revoked_at", k.revoked_at ? json(k.revoked_at) : json(nullptr)},
          {"allowed_models", k.allowed_models},
          {"rotated_from", k.rotated_from.empty() ? json(nullptr) : json(k.rotated_from)},
          {"created_by", k.created_by},
          {"limits", limits_json(k.limits)},
          {"effective_limits", limits_json(k.effective_limits)},
          {"pii", auth::pii_policy_name(k.pii)},
          {"effective_pii", auth::pii_policy_name(k.effective_pii)}};
}

json tenant_json(const auth::TenantInfo& t) {
  return {{"id", t.id},           {"object", "tenant"}, {"name", t.name}, {"created_at", t.created_at},
          {"disabled", t.disabled}, {"limits", limits_json(t.limits)}, {"pii", auth::pii_policy_name(t.pii)}};
}

std::optional<ApiError> parse_body(const std::string& body, json* out, bool allow_empty) {
  if (body.empty() && allow_empty) {
    *out = json::object();
    return std::nullopt;
  }
  if (auto e = invalid_utf8_body(body)) return e;
  *out = json::parse(body, nullptr, false);
  if (out->is_discarded() || !out->is_object()) return bad_request("the body must be a JSON object");
  return std::nullopt;
}

ApiError status_error(const Status& st, const std::string& param = "") {
  ApiError e = from_status(st, param);
  if (st.code() == StatusCode::kNotFound) e.code = "not_found";
  return e;
}

// Developers manage only the keys they created; anything else is "not found" (no probing of other tenants).
bool may_manage(const auth::Principal& p, const auth::ApiKeyInfo& k) {
  return p.role == Role::kAdmin || (k.created_by == p.id && k.tenant == p.tenant);
}

// %XX and '+' of a query string value (malformed escapes are kept as they are).
std::string url_decode(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '+') {
      out.push_back(' ');
    } else if (v[i] == '%' && i + 2 < v.size() && std::isxdigit(static_cast<unsigned char>(v[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(v[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(v.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(v[i]);
    }
  }
  return out;
}

class AdminApi {
 public:
  AdminApi(std::shared_ptr<Access> a, audit::AuditLog* audit)
      : access_(std::move(a)), keys_(*access_->keys()), audit_(audit) {}

  void query_audit(const server::HttpRequest& req, RequestContext& ctx, ObservedResponder& r) {
    audit::AuditQuery q;
    const auto since = parse_time_ms(query_param(req.target, "since"));
    const auto until = parse_time_ms(query_param(req.target, "until"));
    if (!since) return reply_error(r, &ctx, bad_request("since: Unix seconds or an RFC 3339 UTC time", "since"));
    if (!until) return reply_error(r, &ctx, bad_request("until: Unix seconds or an RFC 3339 UTC time", "until"));
    q.since_ms = *since, q.until_ms = *until;
    q.kind = query_param(req.target, "kind");
    q.principal = query_param(req.target, "principal");
    q.tenant = query_param(req.target, "tenant");
    q.cursor = query_param(req.target, "cursor");
    q.newest_first = query_param(req.target, "order") != "oldest";
    const std::string limit = query_param(req.target, "limit");
    if (!limit.empty()) {
      if (limit.size() > 4 || limit.find_first_not_of("0123456789") != std::string::npos)
        return reply_error(r, &ctx, bad_request("limit must be an integer in [1, 1000]", "limit"));
      q.limit = std::stoi(limit);
    }
    ctx.set_detail("kind_filter", q.kind.substr(0, 32));
    auto page = audit_->query(q);
    if (!page.ok()) return reply_error(r, &ctx, status_error(page.status()));
    json data = json::array();
    for (const auto& rec : page->records) data.push_back(audit::audit_record_json(rec));
    reply_json(r, 200, {{"object", "list"}, {"data", data},
                        {"next_cursor", page->next_cursor.empty() ? json(nullptr) : json(page->next_cursor)}});
  }

  void list_keys(const server::HttpRequest& req, RequestContext& ctx, ObservedResponder& r) {
    const auth::Principal& p = *ctx.principal;
    std::string tenant = query_param(req.target, "tenant");
    if (p.role != Role::kAdmin) tenant = p.tenant;
    auto ks = keys_.list(tenant.empty() ? std::nullopt : std::optional<std::string>(tenant));
    if (!ks.ok()) return reply_error(r, &ctx, status_error(ks.status()));
    json data = json::array();
    const int64_t now = now_unix();
    for (const auto& k : *ks)
      if (may_manage(p, k)) data.push_back(key_json(k, now));
    reply_json(r, 200, {{"object", "list"}, {"data", data}});
  }

  void create_key(const server::HttpRequest& req, RequestContext& ctx, ObservedResponder& r) {
    const auth::Principal& p = *ctx.principal;
    json b;
    if (auto e = parse_body(req.body, &b, false)) return reply_error(r, &ctx, *e);
    auth::NewKey nk;
    if (!b.contains("name") || !b["name"].is_string()) return reply_error(r, &ctx, bad_request("name is required", "name"));
    nk.name = b["name"].get<std::string>();
    const auto role = b.contains("role") && b["role"].is_string() ? auth::parse_role(b["role"].get<std::string>())
                                                                  : std::nullopt;
    if (!role) return reply_error(r, &ctx, bad_request("role must be admin, developer, auditor or guest", "role"));
    nk.role = *role;
    nk.tenant = b.value("tenant", p.tenant);
    if (p.role != Role::kAdmin) {
      if (nk.role != Role::kDeveloper && nk.role != Role::kGuest)
        return reply_error(r, &ctx, forbidden_error("a developer may create developer or guest keys only"));
      if (nk.tenant != p.tenant)
        return reply_error(r, &ctx, forbidden_error("a developer may create keys in its own tenant only"));
    }
    const int64_t now = now_unix();
    if (b.contains("expires_at") && b["expires_at"].is_number_integer()) nk.expires_at = b["expires_at"].get<int64_t>();
    else if (b.contains("expires_in_days") && b["expires_in_days"].is_number())
      nk.expires_at = now + static_cast<int64_t>(b["expires_in_days"].get<double>() * 86400);
    if (b.contains("allowed_models")) {
      if (!b["allowed_models"].is_array()) return reply_error(r, &ctx, bad_request("allowed_models must be an array", "allowed_models"));
      for (const auto& m : b["allowed_models"]) {
        if (!m.is_string()) return reply_error(r, &ctx, bad_request("allowed_models must hold strings", "allowed_models"));
        nk.allowed_models.push_back(m.get<std::string>());
      }
    }
    if (auto e = parse_limits(b.value("limits", json()), &nk.limits)) return reply_error(r, &ctx, *e);
    if (auto e = parse_pii(b, true, &nk.pii)) return reply_error(r, &ctx, *e);
    // A developer may tighten its tenant's PII policy on a key, never loosen it.
    if (p.role != Role::kAdmin && nk.pii != auth::PiiPolicy::kInherit) {
      auto t = keys_.get_tenant(nk.tenant);
      if (!t.ok()) return reply_error(r, &ctx, status_error(t.status(), "tenant"));
      if (auth::pii_policy_strictness(nk.pii) < auth::pii_policy_strictness(t->pii))
        return reply_error(r, &ctx, forbidden_error(std::string("a developer may not set pii '") +
                                                    auth::pii_policy_name(nk.pii) + "' below its tenant's '" +
                                                    auth::pii_policy_name(t->pii) + "'"));
    }
    nk.created_by = p.id;
    auto made = keys_.create(nk, now);
    if (!made.ok()) return reply_error(r, &ctx, status_error(made.status()));
    ctx.set_detail("key_id", made->first.id);
    ctx.set_detail("role", auth::role_name(made->first.role));
    ctx.set_detail("tenant", made->first.tenant);
    ctx.set_detail("pii", auth::pii_policy_name(made->first.pii));
    json out = key_json(made->first, now);
    out["key"] = made->second;  // the only time the raw key leaves the server
    reply_json(r, 201, out);
  }

  // The key named by {id}, if the caller may manage it (else the 404 is sent and nullopt returned).
  std::optional<auth::ApiKeyInfo> target_key(RequestContext& ctx, ObservedResponder& r) {
    const std::string& id = ctx.path_params["id"];
    auto k = keys_.get(id);
    if (!k.ok() || !may_manage(*ctx.principal, *k)) {
      reply_error(r, &ctx, not_found("no API key '" + id.substr(0, 64) + "'"));
      return std::nullopt;
    }
    return *k;
  }

  void get_key(const server::HttpRequest&, RequestContext& ctx, ObservedResponder& r) {
    if (auto k = target_key(ctx, r)) reply_json(r, 200, key_json(*k, now_unix()));
  }

  void revoke_key(const server::HttpRequest&, RequestContext& ctx, ObservedResponder& r) {
    auto k = target_key(ctx, r);
    if (!k) return;
    ctx.set_detail("key_id", k->id);
    const Status st = keys_.revoke(k->id, now_unix());
    if (!st.ok()) return reply_error(r, &ctx, status_error(st));
    auto after = keys_.get(k->id);
    reply_json(r, 200, after.ok() ? key_json(*after, now_unix()) : json{{"id", k->id}, {"state", "revoked"}});
  }

  void rotate_key(const server::HttpRequest& req, RequestContext& ctx, ObservedResponder& r) {
    auto k = target_key(ctx, r);
    if (!k) return;
    json b;
    if (auto e = parse_body(req.body, &b, true)) return reply_error(r, &ctx, *e);
    const json g = b.value("grace_seconds", json(0));
    if (!g.is_number_integer() || g.get<int64_t>() < 0 || g.get<int64_t>() > 90LL * 86400)
      return reply_error(r, &ctx, bad_request("grace_seconds must be an integer in [0, 7776000]", "grace_seconds"));
    const int64_t now = now_unix();
    ctx.set_detail("key_id", k->id);
    ctx.set_detail("grace_seconds", std::to_string(g.get<int64_t>()));
    auto made = keys_.rotate(k->id, g.get<int64_t>(), now);
    if (!made.ok()) return reply_error(r, &ctx, status_error(made.status()));
    ctx.set_detail("new_key_id", made->first.id);
    json out = key_json(made->first, now);
    out["key"] = made->second;
    reply_json(r, 201, out);
  }

  void patch_key(const server::HttpRequest& req, RequestContext& ctx, ObservedResponder& r) {
    auto k = target_key(ctx, r);
    if (!k) return;
    json b;
    if (auto e = parse_body(req.body, &b, false)) return reply_error(r, &ctx, *e);
    auth::QuotaLimits q = k->limits;
    if (auto e = parse_limits(b.value("limits", json()), &q)) return reply_error(r, &ctx, *e);
    auth::PiiPolicy pii = k->pii;
    if (auto e = parse_pii(b, true, &pii)) return reply_error(r, &ctx, *e);
    ctx.set_detail("key_id", k->id);
    const Status st = keys_.update_limits(k->id, q);
    if (!st.ok()) return reply_error(r, &ctx, status_error(st));
    if (pii != k->pii) {
      ctx.set_detail("pii", auth::pii_policy_name(pii));
      const Status ps = keys_.update_pii(k->id, pii);
      if (!ps.ok()) return reply_error(r, &ctx, status_error(ps));
    }
    auto after = keys_.get(k->id);
    if (!after.ok()) return reply_error(r, &ctx, status_error(after.status()));
    reply_json(r, 200, key_json(*after, now_unix()));
  }

  // The per-role defaults under every key that sets no limit of its own: the built-in values overridden field by field.
  void get_role(const server::HttpRequest&, RequestContext& ctx, ObservedResponder& r) {
    const auto role = auth::parse_role(ctx.path_params["id"]);
    if (!role) return reply_error(r, &ctx, not_found("no role '" + ctx.path_params["id"].substr(0, 32) + "'"));
    auto own = keys_.role_limits(*role);
    if (!own.ok()) return reply_error(r, &ctx, status_error(own.status()));
    reply_json(r, 200, role_json(*role, *own));
  }

  void patch_role(const server::HttpRequest& req, RequestContext& ctx, ObservedResponder& r) {
    const auto role = auth::parse_role(ctx.path_params["id"]);
    if (!role) return reply_error(r, &ctx, not_found("no role '" + ctx.path_params["id"].substr(0, 32) + "'"));
    json b;
    if (auto e = parse_body(req.body, &b, false)) return reply_error(r, &ctx, *e);
    auto own = keys_.role_limits(*role);
    if (!own.ok()) return reply_error(r, &ctx, status_error(own.status()));
    auth::QuotaLimits q = *own;
    if (auto e = parse_limits(b.value("limits", json()), &q)) return reply_error(r, &ctx, *e);
    ctx.set_detail("role", auth::role_name(*role));
    const Status st = keys_.set_role_limits(*role, q);
    if (!st.ok()) return reply_error(r, &ctx, status_error(st));
    reply_json(r, 200, role_json(*role, q));
  }

  void list_tenants(const server::HttpRequest&, RequestContext& ctx, ObservedResponder& r) {
    auto ts = keys_.list_tenants();
    if (!ts.ok()) return reply_error(r, &ctx, status_error(ts.status()));
    json data = json::array();
    for (const auto& t : *ts) data.push_back(tenant_json(t));
    reply_json(r, 200, {{"object", "list"}, {"data", data}});
  }

  void create_tenant(const server::HttpRequest& req, RequestContext& ctx, ObservedResponder& r) {
    json b;
    if (auto e = parse_body(req.body, &b, false)) return reply_error(r, &ctx, *e);
    if (!b.contains("id") || !b["id"].is_string()) return reply_error(r, &ctx, bad_request("id is required", "id"));
    const std::string id = b["id"].get<std::string>();
    const json name = b.value("name", json(id));
    if (!name.is_string()) return reply_error(r, &ctx, bad_request("name must be a string", "name"));
    auth::QuotaLimits q;
    if (auto e = parse_limits(b.value("limits", json()), &q)) return reply_error(r, &ctx, *e);
    auth::PiiPolicy pii = auth::PiiPolicy::kOff;
    if (auto e = parse_pii(b, false, &pii)) return reply_error(r, &ctx, *e);
    ctx.set_detail("tenant", id.substr(0, 64));
    ctx.set_detail("pii", auth::pii_policy_name(pii));
    auto t = keys_.create_tenant(id, name.get<std::string>(), q, now_unix(), pii);
    if (!t.ok()) return reply_error(r, &ctx, status_error(t.status(), "id"));
    reply_json(r, 201, tenant_json(*t));
  }

  void get_tenant(const server::HttpRequest&, RequestContext& ctx, ObservedResponder& r) {
    auto t = keys_.get_tenant(ctx.path_params["id"]);
    if (!t.ok()) return reply_error(r, &ctx, not_found("no tenant '" + ctx.path_params["id"].substr(0, 64) + "'"));
    reply_json(r, 200, tenant_json(*t));
  }

  void patch_tenant(const server::HttpRequest& req, RequestContext& ctx, ObservedResponder& r) {
    auto t = keys_.get_tenant(ctx.path_params["id"]);
    if (!t.ok()) return reply_error(r, &ctx, not_found("no tenant '" + ctx.path_params["id"].substr(0, 64) + "'"));
    json b;
    if (auto e = parse_body(req.body, &b, false)) return reply_error(r, &ctx, *e);
    auth::QuotaLimits q = t->limits;
    if (auto e = parse_limits(b.value("limits", json()), &q)) return reply_error(r, &ctx, *e);
    bool disabled = t->disabled;
    if (b.contains("disabled")) {
      if (!b["disabled"].is_boolean()) return reply_error(r, &ctx, bad_request("disabled must be a boolean", "disabled"));
      disabled = b["disabled"].get<bool>();
    }
    auth::PiiPolicy pii = t->pii;
    if (auto e = parse_pii(b, false, &pii)) return reply_error(r, &ctx, *e);
    ctx.set_detail("tenant", t->id);
    ctx.set_detail("disabled", disabled ? "true" : "false");
    ctx.set_detail("pii", auth::pii_policy_name(pii));
    const Status st = keys_.update_tenant(t->id, q, disabled, pii);
    if (!st.ok()) return reply_error(r, &ctx, status_error(st));
    auto after = keys_.get_tenant(t->id);
    if (!after.ok()) return reply_error(r, &ctx, status_error(after.status()));
    reply_json(r, 200, tenant_json(*after));
  }

 private:
  json role_json(Role role, const auth::QuotaLimits& own) {
    return {{"id", auth::role_name(role)}, {"object", "role"}, {"limits", limits_json(own)},
            {"effective_limits", limits_json(own.or_else(auth::default_role_limits(role)))}};
  }
  static ApiError forbidden_error(std::string m) { return forbidden(std::move(m), "permission_denied"); }
  static std::string query_param(const std::string& target, const std::string& name) {
    const size_t q = target.find('?');
    if (q == std::string::npos) return "";
    const std::string qs = target.substr(q + 1);
    size_t i = 0;
    while (i < qs.size()) {
      const size_t amp = qs.find('&', i);
      const std::string kv = qs.substr(i, amp == std::string::npos ? std::string::npos : amp - i);
      const size_t eq = kv.find('=');
      if (kv.substr(0, eq) == name) return eq == std::string::npos ? "" : url_decode(kv.substr(eq + 1));
      if (amp == std::string::npos) break;
      i = amp + 1;
    }
    return "";
  }

  std::shared_ptr<Access> access_;
  auth::KeyStore& keys_;
  audit::AuditLog* audit_;
};

}  // namespace

std::vector<Route> admin_routes(std::shared_ptr<Access> access, audit::AuditLog* audit) {
  auto api = std::make_shared<AdminApi>(std::move(access), audit);
  auto h = [api](void (AdminApi::*fn)(const server::HttpRequest&, RequestContext&, ObservedResponder&)) {
    return [api, fn](const server::HttpRequest& req, std::shared_ptr<RequestContext> ctx,
                     std::shared_ptr<ObservedResponder> r) { ((*api).*fn)(req, *ctx, *r); };
  };
  std::vector<Route> out;
  out.emplace_back("GET", "/admin/v1/keys", Permission::kOwnKeys, h(&AdminApi::list_keys));
  out.emplace_back("POST", "/admin/v1/keys", Permission::kOwnKeys, h(&AdminApi::create_key));
  out.emplace_back("GET", "/admin/v1/keys/{id}", Permission::kOwnKeys, h(&AdminApi::get_key));
  out.emplace_back("DELETE", "/admin/v1/keys/{id}", Permission::kOwnKeys, h(&AdminApi::revoke_key));
  out.emplace_back("POST", "/admin/v1/keys/{id}/rotate", Permission::kOwnKeys, h(&AdminApi::rotate_key));
  out.emplace_back("PATCH", "/admin/v1/keys/{id}", Permission::kAdmin, h(&AdminApi::patch_key));
  out.emplace_back("GET", "/admin/v1/roles/{id}", Permission::kAdmin, h(&AdminApi::get_role));
  out.emplace_back("PATCH", "/admin/v1/roles/{id}", Permission::kAdmin, h(&AdminApi::patch_role));
  out.emplace_back("GET", "/admin/v1/tenants", Permission::kAdmin, h(&AdminApi::list_tenants));
  if (audit) out.emplace_back("GET", "/admin/v1/audit", Permission::kAuditRead, h(&AdminApi::query_audit));
  out.emplace_back("POST", "/admin/v1/tenants", Permission::kAdmin, h(&AdminApi::create_tenant));
  out.emplace_back("GET", "/admin/v1/tenants/{id}", Permission::kAdmin, h(&AdminApi::get_tenant));
  out.emplace_back("PATCH", "/admin/v1/tenants/{id}", Permission::kAdmin, h(&AdminApi::patch_tenant));
  return out;
}

}  // namespace citadel::api
