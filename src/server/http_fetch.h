// http_fetch: one synchronous request (a GET, or any method with http_call) over http:// or https:// (certificate verified against the system store or a
// given CA file), with a deadline and a size cap. For small control-plane documents (an OIDC JWKS), never for
// request traffic: it blocks the calling thread.
// Thread-safety: a free function; each call has its own connection.
#pragma once

#include <cstddef>
#include <string>

#include "base/status.h"

namespace citadel::server {

struct FetchOptions {
  int timeout_s = 10;
  size_t max_bytes = 1u << 20;
  std::string ca_file;  // https: PEM bundle to trust instead of the system default store
};

// The body of a 200 response. Errors: bad URL, connect/TLS failure, timeout, non-200 status, too large.
Result<std::string> http_get(const std::string& url, const FetchOptions& opts = {});

// One request of any method with an optional JSON body and bearer token (the `citadel models` admin CLI): the
// status and body of whatever the server answered. Errors: bad URL, connect/TLS failure, timeout, too large.
struct HttpCall {
  std::string method = "GET";
  std::string body;    // sent as application/json when not empty
  std::string bearer;  // Authorization: Bearer <bearer> when not empty
};
struct HttpReply {
  int status = 0;
  std::string body;
};
Result<HttpReply> http_call(const std::string& url, const HttpCall& call, const FetchOptions& opts = {});

}  // namespace citadel::server
