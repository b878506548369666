#include "auth/identity.h"

#include <algorithm>

namespace citadel::auth {

const char* role_name(Role r) {
  switch (r) {
    case Role::kAdmin: return "admin";
    case Role::kDeveloper: return "developer";
    case Role::kAuditor: return "auditor";
    case Role::kGuest: return "guest";
  }
  return "guest";
}

std::optional<Role> parse_role(std::string_view s) {
  for (Role r : {Role::kAdmin, Role::kDeveloper, Role::kAuditor, Role::kGuest})
    if (s == role_name(r)) return r;
  return std::nullopt;
}

const char* permission_name(Permission p) {
  switch (p) {
    case Permission::kPublic: return "public";
    case Permission::kInference: return "inference";
    case Permission::kModelsRead: return "models.read";
    case Permission::kStatsRead: return "stats.read";
    case Permission::kAuditRead: return "audit.read";
    case Permission::kOwnKeys: return "keys.own";
    case Permission::kAdmin: return "admin";
  }
  return "admin";
}

bool role_permits(Role r, Permission p) {
  if (p == Permission::kPublic) return true;
  switch (r) {
    case Role::kAdmin: return true;
    case Role::kDeveloper:
      return p == Permission::kInference || p == Permission::kModelsRead || p == Permission::kOwnKeys;
    case Role::kAuditor: return p == Permission::kStatsRead || p == Permission::kAuditRead;
    case Role::kGuest: return p == Permission::kInference || p == Permission::kModelsRead;
  }
  return false;
}

QuotaLimits QuotaLimits::or_else(const QuotaLimits& f) const {
  QuotaLimits o;
  o.requests_per_minute = requests_per_minute ? requests_per_minute : f.requests_per_minute;
  o.tokens_per_minute = tokens_per_minute ? tokens_per_minute : f.tokens_per_minute;
  o.concurrent_requests = concurrent_requests ? concurrent_requests : f.concurrent_requests;
  o.max_tokens_per_request = max_tokens_per_request ? max_tokens_per_request : f.max_tokens_per_request;
  o.daily_tokens = daily_tokens ? daily_tokens : f.daily_tokens;
  return o;
}

QuotaLimits default_role_limits(Role r) {
  QuotaLimits q;
  switch (r) {
    case Role::kAdmin:
      q.requests_per_minute = q.tokens_per_minute = q.concurrent_requests = q.max_tokens_per_request =
          q.daily_tokens = -1;
      break;
    case Role::kDeveloper:
      q.requests_per_minute = 600, q.tokens_per_minute = 400000, q.concurrent_requests = 32;
      q.max_tokens_per_request = 32768, q.daily_tokens = -1;
      break;
    case Role::kGuest:
      q.requests_per_minute = 60, q.tokens_per_minute = 40000, q.concurrent_requests = 4;
      q.max_tokens_per_request = 2048, q.daily_tokens = 1000000;
      break;
    case Role::kAuditor:  // cannot infer (role table); nothing to count
      q.requests_per_minute = q.tokens_per_minute = q.concurrent_requests = q.max_tokens_per_request =
          q.daily_tokens = 0;
      break;
  }
  return q;
}

bool Principal::may_use_model(const std::string& model) const {
  return allowed_models.empty() || std::find(allowed_models.begin(), allowed_models.end(), model) !=
                                       allowed_models.end();
}

}  // namespace citadel::auth
