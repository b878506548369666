// The admin API of identity and access (OpenAI error shape throughout):
//   GET    /admin/v1/keys[?tenant=T]          list (admin: all or one tenant; developer: the keys it created)
//   POST   /admin/v1/keys                     create {name, role, tenant?, expires_at? | expires_in_days?,
//                                             allowed_models?, limits?} -> 201 with the raw key, shown once
//   GET    /admin/v1/keys/{id}                one key (never its secret or hash)
//   DELETE /admin/v1/keys/{id}                revoke
//   POST   /admin/v1/keys/{id}/rotate         {grace_seconds?} -> 201 with the new raw key; the old one works until
//                                             the grace period ends
//   PATCH  /admin/v1/keys/{id}                {limits} (admin only)
//   GET    /admin/v1/tenants, POST /admin/v1/tenants {id, name?, limits?}, GET|PATCH /admin/v1/tenants/{id}
//   GET|PATCH /admin/v1/roles/{role}          the role's default limits {limits} (null: the built-in default)
//   GET    /admin/v1/audit?since=&until=&kind=&principal=&tenant=&limit=&cursor=&order=oldest   (audit.read)
// Keys routes but PATCH need keys.own (developer: only keys it created, in its own tenant, roles developer or guest; another
// tenant's or another principal's key answers 404); tenant routes need admin.
// Thread-safety: the handlers are safe from any thread.
#pragma once

#include <memory>
#include <vector>

#include "api/access.h"
#include "api/router.h"

namespace citadel::audit {
class AuditLog;
}

namespace citadel::api {

// audit: null = no /admin/v1/audit route.
std::vector<Route> admin_routes(std::shared_ptr<Access> access, audit::AuditLog* audit);

}  // namespace citadel::api
