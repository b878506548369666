// Router: the route table {method, path pattern, permission, handler}. A Route cannot be built without a
// permission (no default constructor, no default argument), and RouteTable::add refuses duplicates, so a route that
// forgets its permission does not compile and one that shadows another fails at start-up (and in the route test).
// Patterns are literal segments and `{name}` captures of one segment: "/admin/v1/keys/{id}/rotate".
// Thread-safety: built once before serving; match() is const and safe from any thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "auth/identity.h"
#include "base/status.h"
#include "server/http_types.h"

namespace citadel::api {

class RequestContext;
class ObservedResponder;

// A handler answers through the responder exactly once (send, or start_stream ... end_stream).
using RouteHandler = std::function<void(const server::HttpRequest& req, std::shared_ptr<RequestContext> ctx,
                                        std::shared_ptr<ObservedResponder> r)>;

struct Route {
  Route(std::string method, std::string pattern, auth::Permission permission, RouteHandler handler)
      : method(std::move(method)), pattern(std::move(pattern)), permission(permission), handler(std::move(handler)) {}
  std::string method;
  std::string pattern;
  auth::Permission permission;
  RouteHandler handler;
};

class RouteTable {
 public:
  // Error: a malformed pattern or the same method + pattern twice.
  Status add(Route r);

  struct Match {
    const Route* route = nullptr;               // null: no route for this method and path
    bool path_known = false;                    // some route has this path (with another method: 405)
    std::map<std::string, std::string> params;  // {name} -> segment
  };
  Match match(const std::string& method, const std::string& path) const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  static bool match_pattern(const std::string& pattern, const std::string& path,
                            std::map<std::string, std::string>* params);
  std::vector<Route> routes_;
};

}  // namespace citadel::api
