// Service: the HTTP routes of the OpenAI-compatible API and the native endpoints, on top of one ModelHost.
//
//   POST /v1/chat/completions, POST /v1/completions     OpenAI (streaming and not)
//   GET  /v1/models, GET /v1/models/{id}
//   POST /api/v1/infer                                  native {prompt, max_tokens, ...} -> {text, usage}
//   GET  /api/v1/stats                                  engine + server counters (generated tokens, cancelled, ...)
//   GET  /health (alive), GET /ready (model loaded, engine running, not draining; 503 otherwise)
// Unknown routes 404, wrong methods 405, every error in the OpenAI shape. Nothing here knows about sockets.
// Thread-safety: handle() may run concurrently on any I/O thread; set_host()/set_draining() from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "api/model_host.h"
#include "api/openai/generation.h"
#include "server/http_types.h"

namespace citadel::api {

class Service {
 public:
  Service();
  // The model is served from now on (nullptr: not ready).
  void set_host(std::shared_ptr<const ModelHost> host);
  std::shared_ptr<const ModelHost> host() const;
  void set_draining(bool v) { draining_ = v; }
  bool ready() const;

  void handle(server::HttpRequest req, std::shared_ptr<server::Responder> responder);

  std::shared_ptr<ServiceStats> stats() const { return stats_; }
  // Extra JSON merged into /api/v1/stats (e.g. transport counters); set once before serving.
  void set_extra_stats(std::function<nlohmann::json()> fn) { extra_stats_ = std::move(fn); }

 private:
  void reply(server::Responder& r, int status, const nlohmann::json& body);
  void reply_error(server::Responder& r, const ApiError& e);
  void generate(Endpoint ep, const server::HttpRequest& req, std::shared_ptr<server::Responder> r);
  nlohmann::json stats_json() const;

  mutable std::mutex mu_;
  std::shared_ptr<const ModelHost> host_;
  std::atomic<bool> draining_{false};
  std::shared_ptr<ServiceStats> stats_;
  std::function<nlohmann::json()> extra_stats_;
};

}  // namespace citadel::api
