#include "api/router.h"

#include <string_view>

namespace citadel::api {

namespace {

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    const size_t j = path.find('/', i);
    const size_t end = j == std::string_view::npos ? path.size() : j;
    out.push_back(path.substr(i, end - i));
    i = end;
  }
  return out;
}

bool is_capture(std::string_view s) { return s.size() > 2 && s.front() == '{' && s.back() == '}'; }

}  // namespace

Status RouteTable::add(Route r) {
  if (r.pattern.empty() || r.pattern[0] != '/') return InvalidArgument("route pattern must start with /: " + r.pattern);
  if (r.method.empty() || !r.handler) return InvalidArgument("route " + r.pattern + " has no method or handler");
  for (const auto& s : segments(r.pattern))
    if ((s.find('{') != std::string_view::npos || s.find('}') != std::string_view::npos) && !is_capture(s))
      return InvalidArgument("route pattern segment '" + std::string(s) + "' is malformed in " + r.pattern);
  for (const auto& e : routes_)
    if (e.method == r.method && e.pattern == r.pattern)
      return InvalidArgument("route " + r.method + " " + r.pattern + " is defined twice");
  routes_.push_back(std::move(r));
  return OkStatus();
}

bool RouteTable::match_pattern(const std::string& pattern, const std::string& path,
                               std::map<std::string, std::string>* params) {
  // Exact segment count; empty segments ("//") never match a capture.
  if (path.empty() || path[0] != '/') return false;
  if (path.size() > 1 && path.back() == '/') return false;
  const auto ps = segments(pattern), xs = segments(path);
  if (ps.size() != xs.size()) return false;
  if (path.find("//") != std::string::npos) return false;
  std::map<std::string, std::string> got;
  for (size_t i = 0; i < ps.size(); ++i) {
    if (is_capture(ps[i])) {
      got[std::string(ps[i].substr(1, ps[i].size() - 2))] = std::string(xs[i]);
    } else if (ps[i] != xs[i]) {
      return false;
    }
  }
  if (params) *params = std::move(got);
  return true;
}

RouteTable::Match RouteTable::match(const std::string& method, const std::string& path) const {
  Match m;
  // A literal route wins over a capture for the same path ("/v1/models" before "/v1/models/{id}" is moot, but
  // "/admin/v1/keys/{id}" vs a literal sibling is not): prefer the route with the fewest captures.
  int best_captures = 1 << 30;
  for (const auto& r : routes_) {
    std::map<std::string, std::string> params;
    if (!match_pattern(r.pattern, path, &params)) continue;
    m.path_known = true;
    if (r.method != method) continue;
    const int captures = static_cast<int>(params.size());
    if (captures < best_captures) {
      best_captures = captures;
      m.route = &r;
      m.params = std::move(params);
    }
  }
  return m;
}

}  // namespace citadel::api
