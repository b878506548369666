// RouteTable: matching, captures, 405 vs 404, and the refusals that keep the table honest.
#include <gtest/gtest.h>

#include <set>
#include <type_traits>

#include "api/router.h"

namespace citadel::api {
namespace {

RouteHandler noop() {
  return [](const server::HttpRequest&, std::shared_ptr<RequestContext>, std::shared_ptr<ObservedResponder>) {};
}

TEST(RouteTable, MatchesLiteralsAndCaptures) {
  RouteTable t;
  ASSERT_TRUE(t.add(Route("GET", "/v1/models", auth::Permission::kModelsRead, noop())).ok());
  ASSERT_TRUE(t.add(Route("GET", "/v1/models/{id}", auth::Permission::kModelsRead, noop())).ok());
  ASSERT_TRUE(t.add(Route("POST", "/admin/v1/keys/{id}/rotate", auth::Permission::kOwnKeys, noop())).ok());
  ASSERT_TRUE(t.add(Route("GET", "/admin/v1/keys/{id}", auth::Permission::kOwnKeys, noop())).ok());

  auto m = t.match("GET", "/v1/models");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/v1/models");
  m = t.match("GET", "/v1/models/smollm2");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/v1/models/{id}");
  EXPECT_EQ(m.params["id"], "smollm2");
  m = t.match("POST", "/admin/v1/keys/ab12/rotate");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params["id"], "ab12");
  EXPECT_EQ(m.route->permission, auth::Permission::kOwnKeys);
}

TEST(RouteTable, WrongMethodIsKnownPathUnknownPathIsNot) {
  RouteTable t;
  ASSERT_TRUE(t.add(Route("POST", "/v1/completions", auth::Permission::kInference, noop())).ok());
  auto m = t.match("GET", "/v1/completions");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_TRUE(m.path_known);
  m = t.match("GET", "/v1/nothing");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_FALSE(m.path_known);
}

TEST(RouteTable, NearMissesDoNotMatch) {
  RouteTable t;
  ASSERT_TRUE(t.add(Route("GET", "/v1/models/{id}", auth::Permission::kModelsRead, noop())).ok());
  for (const char* p : {"/v1/models/", "/v1/models", "/v1/models//x", "/v1/models/a/b", "v1/models/a", "",
                        "/v1/modelsx/a", "/V1/models/a"})
    EXPECT_EQ(t.match("GET", p).route, nullptr) << p;
}

TEST(RouteTable, RefusesDuplicatesAndMalformedPatterns) {
  RouteTable t;
  ASSERT_TRUE(t.add(Route("GET", "/a/{id}", auth::Permission::kAdmin, noop())).ok());
  EXPECT_FALSE(t.add(Route("GET", "/a/{id}", auth::Permission::kAdmin, noop())).ok());
  EXPECT_TRUE(t.add(Route("DELETE", "/a/{id}", auth::Permission::kAdmin, noop())).ok());
  EXPECT_FALSE(t.add(Route("GET", "a", auth::Permission::kAdmin, noop())).ok());
  EXPECT_FALSE(t.add(Route("GET", "/a/{x", auth::Permission::kAdmin, noop())).ok());
  EXPECT_FALSE(t.add(Route("GET", "/b", auth::Permission::kAdmin, nullptr)).ok());
}

// Route has no default constructor and no default permission: this is a compile-time property.
static_assert(!std::is_default_constructible_v<Route>, "a route must name its permission");
static_assert(!std::is_constructible_v<Route, std::string, std::string, RouteHandler>,
              "a route without a permission must not compile");

TEST(RoleTable, EachRoleGetsExactlyItsPermissions) {
  using auth::Permission;
  using auth::Role;
  const Permission all[] = {Permission::kInference, Permission::kModelsRead, Permission::kStatsRead,
                            Permission::kAuditRead, Permission::kOwnKeys,    Permission::kAdmin};
  auto grants = [&](Role r) {
    std::set<Permission> s;
    for (Permission p : all)
      if (auth::role_permits(r, p)) s.insert(p);
    return s;
  };
  EXPECT_EQ(grants(Role::kAdmin).size(), 6u);
  EXPECT_EQ(grants(Role::kDeveloper),
            (std::set<Permission>{Permission::kInference, Permission::kModelsRead, Permission::kOwnKeys}));
  EXPECT_EQ(grants(Role::kAuditor), (std::set<Permission>{Permission::kStatsRead, Permission::kAuditRead}));
  EXPECT_EQ(grants(Role::kGuest), (std::set<Permission>{Permission::kInference, Permission::kModelsRead}));
  for (Role r : {Role::kAdmin, Role::kDeveloper, Role::kAuditor, Role::kGuest})
    EXPECT_TRUE(auth::role_permits(r, Permission::kPublic));
  EXPECT_EQ(auth::parse_role("admin"), Role::kAdmin);
  EXPECT_FALSE(auth::parse_role("Admin").has_value());
  EXPECT_FALSE(auth::parse_role("root").has_value());
}

TEST(QuotaLimits, KeySettingsOverRoleDefaults) {
  auth::QuotaLimits key;
  key.requests_per_minute = 5;
  const auth::QuotaLimits eff = key.or_else(auth::default_role_limits(auth::Role::kGuest));
  EXPECT_EQ(*eff.requests_per_minute, 5);
  EXPECT_EQ(*eff.tokens_per_minute, *auth::default_role_limits(auth::Role::kGuest).tokens_per_minute);
  EXPECT_LT(*auth::default_role_limits(auth::Role::kGuest).tokens_per_minute,
            *auth::default_role_limits(auth::Role::kDeveloper).tokens_per_minute);
  EXPECT_LT(*auth::default_role_limits(auth::Role::kAdmin).daily_tokens, 0);  // unlimited
}

}  // namespace
}  // namespace citadel::api
