// citadel keys create|list|revoke|rotate: API keys in the state store of --data-dir (or --state-db), the same store
// `citadel serve` uses (it may be running: SQLite serialises writers, PostgreSQL is shared).
//   citadel keys create --role admin|developer|auditor|guest --name N [--tenant T] [--expires 30d|2027-01-31]
//                       [--models a,b] [--pii inherit|off|mask|reject] [--data-dir DIR]
//                                                                   -> the new key alone on stdout (shown once)
//   citadel keys list [--tenant T] [--json]                         -> id, name, role, tenant, state (never secrets)
//   citadel keys revoke ID
//   citadel keys rotate ID [--grace 3600]                           -> the new key alone on stdout
// A server's key cache picks up a revoke from the CLI within its cache lifetime (seconds); the admin API acts at once.
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>

#include <nlohmann/json.hpp>

#include "api/state.h"
#include "audit/audit_log.h"
#include "auth/key_store.h"
#include "base/strings.h"
#include "command.h"

namespace keys_cmd {

using namespace citadel;

struct KeysArgs {
  std::string data_dir, state_db;
  std::string role, name, tenant = "default", expires, models, pii = "inherit";
  std::string list_tenant;  // list: "" = every tenant
  std::string id;
  int64_t grace_s = 0;
  bool json = false;
};

int64_t now_unix() { return static_cast<int64_t>(std::time(nullptr)); }

// "30d", "12h", "90m" (from now) or "YYYY-MM-DD" (the end of that UTC day). 0 = never.
Result<int64_t> parse_expiry(const std::string& s, int64_t now) {
  if (s.empty() || s == "never") return int64_t{0};
  int y = 0, mo = 0, d = 0;
  char tail = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2d%c", &y, &mo, &d, &tail) == 3) {
    std::tm tm{};
    tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d, tm.tm_hour = 23, tm.tm_min = 59, tm.tm_sec = 59;
    const int64_t t = static_cast<int64_t>(timegm(&tm));
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || t <= now) return InvalidArgument("--expires: '" + s + "' is not a future date");
    return t;
  }
  char* end = nullptr;
  const long long n = std::strtoll(s.c_str(), &end, 10);
  const std::string unit = end ? end : "";
  const int64_t mult = unit == "d" ? 86400 : unit == "h" ? 3600 : unit == "m" ? 60 : 0;
  if (n <= 0 || mult == 0 || n > 36500LL * 86400 / mult)
    return InvalidArgument("--expires: '" + s + "' is not a duration (30d, 12h, 90m) or a date (YYYY-MM-DD)");
  return now + n * mult;
}


std::string state_of(const auth::ApiKeyInfo& k, int64_t now) {
  if (k.revoked_at) return "revoked";
  if (k.expires_at && k.expires_at <= now) return "expired";
  return "active";
}

// The CLI's own acts go into the audit log like the admin API's (principal "cli:<user>").
void audit_cli(api::State& s, const char* kind, nlohmann::json detail) {
  if (!s.audit) return;
  audit::AuditEvent e;
  e.kind = kind;
  const char* user = std::getenv("USER");
  e.principal = std::string("cli:") + (user && *user ? user : "unknown");
  e.detail = std::move(detail);
  s.audit->append(std::move(e));
}

int fail(const std::string& what, const Status& st) {
  std::fprintf(stderr, "citadel keys %s: %s\n", what.c_str(), st.message().c_str());
  return 1;
}

int run_keys(const std::string& cmd, const KeysArgs& a) {
  api::StateOptions so;
  so.data_dir = a.data_dir, so.state_db = a.state_db;
  auto state = api::open_state(so);
  if (!state.ok()) return fail(cmd, state.status());
  auth::KeyStore& keys = *(*state)->keys;
  const int64_t now = now_unix();
  if (cmd == "create") {
    const auto role = auth::parse_role(a.role);
    if (!role) return fail(cmd, InvalidArgument("--role must be admin, developer, auditor or guest"));
    auto exp = parse_expiry(a.expires, now);
    if (!exp.ok()) return fail(cmd, exp.status());
    auth::NewKey nk;
    nk.name = a.name, nk.role = *role, nk.tenant = a.tenant, nk.expires_at = *exp;
    nk.allowed_models = split_list(a.models);
    const auto pii = auth::parse_pii_policy(a.pii);
    if (!pii) return fail(cmd, InvalidArgument("--pii must be inherit, off, mask or reject, got '" + a.pii + "'"));
    nk.pii = *pii;
    nk.created_by = "cli";
    auto r = keys.create(nk, now);
    if (!r.ok()) return fail(cmd, r.status());
    std::fprintf(stderr, "created key %s (%s, tenant %s); it is shown once:\n", r->first.id.c_str(),
                 auth::role_name(r->first.role), r->first.tenant.c_str());
    audit_cli(**state, "key.create", {{"key_id", r->first.id}, {"role", auth::role_name(r->first.role)},
                                      {"tenant", r->first.tenant}, {"pii", auth::pii_policy_name(r->first.pii)}});
    std::printf("%s\n", r->second.c_str());
    return 0;
  }
  if (cmd == "list") {
    auto r = keys.list(a.list_tenant.empty() ? std::nullopt : std::optional<std::string>(a.list_tenant));
    if (!r.ok()) return fail(cmd, r.status());
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& k : *r) {
      if (a.json) {
        arr.push_back({{"id", k.id}, {"name", k.name}, {"role", auth::role_name(k.role)}, {"tenant", k.tenant},
                       {"state", state_of(k, now)}, {"created_at", k.created_at}, {"expires_at", k.expires_at},
                       {"pii", auth::pii_policy_name(k.pii)}, {"effective_pii", auth::pii_policy_name(k.effective_pii)}});
      } else {
        std::printf("%-14s %-10s %-10s %-8s %s\n", k.id.c_str(), auth::role_name(k.role), k.tenant.c_str(),
                    state_of(k, now).c_str(), k.name.c_str());
      }
    }
    if (a.json) std::printf("%s\n", arr.dump(2).c_str());
    return 0;
  }
  if (cmd == "revoke") {
    const Status st = keys.revoke(a.id, now);
    if (!st.ok()) return fail(cmd, st);
    audit_cli(**state, "key.revoke", {{"key_id", a.id.substr(0, 64)}});
    std::fprintf(stderr, "revoked %s\n", a.id.c_str());
    return 0;
  }
  auto r = keys.rotate(a.id, a.grace_s, now);
  if (!r.ok()) return fail(cmd, r.status());
  std::fprintf(stderr, "rotated %s -> %s (the old key stops working in %lld s); the new key is shown once:\n",
               a.id.c_str(), r->first.id.c_str(), static_cast<long long>(a.grace_s));
  audit_cli(**state, "key.rotate", {{"key_id", a.id.substr(0, 64)}, {"new_key_id", r->first.id},
                                    {"grace_seconds", a.grace_s}});
  std::printf("%s\n", r->second.c_str());
  return 0;
}

citadel::cli::Registrar reg("keys", "Manage API keys (create, list, revoke, rotate)", [](CLI::App& sub) {
  auto a = std::make_shared<KeysArgs>();
  auto cmd = std::make_shared<std::string>();
  sub.require_subcommand(1);
  auto common = [a](CLI::App* c) {
    c->add_option("--data-dir", a->data_dir, "state directory (default as serve: ~/.local/share/citadel)");
    c->add_option("--state-db", a->state_db, "state database (SQLite path or postgresql:// URL)");
  };
  auto* create = sub.add_subcommand("create", "create a key; prints it once on stdout");
  create->add_option("--role", a->role, "admin | developer | auditor | guest")->required();
  create->add_option("--name", a->name, "a name to recognise it by")->required();
  create->add_option("--tenant", a->tenant, "tenant (default: default)");
  create->add_option("--expires", a->expires, "30d, 12h, 90m or YYYY-MM-DD (default: never)");
  create->add_option("--models", a->models, "comma-separated models it may use (default: all)");
  create->add_option("--pii", a->pii,
                     "prompt PII policy: mask, reject, off, or inherit (default: the tenant's policy)");
  common(create);
  auto* list = sub.add_subcommand("list", "list keys (never their secrets)");
  list->add_option("--tenant", a->list_tenant, "only this tenant");
  list->add_flag("--json", a->json, "JSON output");
  common(list);
  auto* revoke = sub.add_subcommand("revoke", "revoke a key now");
  revoke->add_option("id", a->id, "key id (the ck-<id>- part)")->required();
  common(revoke);
  auto* rotate = sub.add_subcommand("rotate", "replace a key; the old one works for --grace seconds");
  rotate->add_option("id", a->id, "key id")->required();
  rotate->add_option("--grace", a->grace_s, "seconds the old key keeps working (default 0)");
  common(rotate);
  for (auto* c : {create, list, revoke, rotate}) c->callback([cmd, c] { *cmd = c->get_name(); });
  return [a, cmd] { return run_keys(*cmd, *a); };
});

}  // namespace keys_cmd
