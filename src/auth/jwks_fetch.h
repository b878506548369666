// The one seam between OIDC verification and the network: auth/ never opens a socket. The server layer supplies a
// fetcher (e.g. a lambda over server::http_get with a timeout and a size cap); tests supply a function over a string.
// Thread-safety: the verifier calls it from whichever request thread triggers a key refresh, at most one call at a
// time per verifier, so the function must be callable from any thread.
#pragma once

#include <functional>
#include <string>

#include "base/status.h"

namespace citadel::auth {

// Returns the body of the document at `url` (a JWKS), or why it could not. It should bound its own time and size:
// a call blocks the request that triggered the refresh.
using JwksFetchFn = std::function<Result<std::string>(const std::string& url)>;

}  // namespace citadel::auth
