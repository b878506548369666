// send(): one request handed to a Service with a FakeResponder, as the transport would hand it (the API tests' one
// way to build a request). The caller waits on the responder and releases it.
#pragma once

#include <memory>
#include <string>

#include "api/service.h"
#include "base/clock.h"
#include "tests/server/fake_responder.h"

namespace citadel::api {

inline std::shared_ptr<server::testing::FakeResponder> send(Service& svc, const std::string& method, const std::string& path,
                                           const std::string& body = "") {
  auto r = std::make_shared<server::testing::FakeResponder>();
  server::HttpRequest req;
  req.method = method;
  req.path = req.target = path;
  req.body = body;
  req.received_at = now_seconds();
  svc.handle(req, r);
  return r;
}

}  // namespace citadel::api
