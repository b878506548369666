// Service: the HTTP API of Citadel over the models of a ModelRegistry, as a route table behind one middleware chain.
//
//   every exchange:  ObservedResponder (exactly one ExchangeRecord at the end, also for transport errors and client
//                    disconnects) -> route match -> authenticate -> authorise (role x permission) -> handler
//                    (inference handlers apply the caller's PII policy to the prompt text before tokenizing it,
//                    then run the quota stage once the prompt is tokenized: Access::admit)
//   GET  /health                                  public, cheap: the process answers (liveness)
//   GET  /ready                                   public: 200 only when requests can be served; else 503 with the
//                                                 reason as the error code (loading, draining, shutting_down,
//                                                 model_failed) and nothing more (the detail is in the stats)
//   POST|GET|DELETE /admin/v1/drain               admin: start a drain (new generations 503 + Retry-After, /ready
//                                                 503, in-flight ones finish), its state {draining, in_flight},
//                                                 end it (ready again): for rolling updates behind a load balancer
//   POST /v1/chat/completions, /v1/completions, /api/v1/infer           inference (a decoder model; an embedding
//                                                                       model answers 400 model_not_supported)
//   POST /v1/embeddings                            inference (an embedding model; a decoder answers 400; through the
//                                                  model's EmbedEngine: bounded queue, 429 when full)
//   GET  /v1/models, /v1/models/{id}                                    models.read (models and aliases)
//   GET|POST /admin/v1/models, DELETE /admin/v1/models/{id}             admin: list / load (async) / unload (the
//                                                 model leaves the registry; its requests in flight finish)
//   GET  /admin/v1/aliases, PUT|DELETE /admin/v1/aliases/{id},
//   POST /admin/v1/aliases/{id}/rollback                                admin: weighted aliases (canary, swap)
//   GET  /api/v1/stats                                                  stats.read
//   GET  /metrics                      stats.read (Prometheus text format 0.0.4 of the registry; roles admin, auditor)
//   /admin/v1/keys..., /admin/v1/tenants...                             admin (developer: its own keys)
//   GET  /admin/v1/routes                                               admin (the table: method, path, permission)
//   GET  /admin/v1/audit                                                audit.read (query the audit log)
// Every exchange that matters to an auditor (api/audit_events.h) is appended to the audit log when one is given.
// Unknown routes 404 and wrong methods 405 (after authentication: an anonymous caller learns nothing of the route
// map), every error in the OpenAI shape. Nothing here knows about sockets.
// Requests name their model ("model"): the registry resolves it (an alias picks a version by weight, sticky per
// principal when asked); an unknown name answers the OpenAI 404 model_not_found.
// Thread-safety: handle() may run concurrently on any I/O thread; set_host()/set_draining() from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "api/access.h"
#include "api/api_metrics.h"
#include "api/model_host.h"
#include "api/model_registry.h"
#include "api/observed_responder.h"
#include "api/openai/generation.h"
#include "api/router.h"
#include "server/http_types.h"

namespace citadel::audit {
class AuditLog;
}
namespace citadel::crypto {
class PiiMasker;
}

namespace citadel::api {

class Service {
 public:
  // access: null = access control disabled (every caller an anonymous admin). audit: null = no audit log; with
  // audit_fail_closed, every non-public route answers 503 while the audit log cannot write.
  explicit Service(std::shared_ptr<Access> access = nullptr, audit::AuditLog* audit = nullptr,
                   bool audit_fail_closed = false);
  // The masker for audit text and the prompt PII policy (serve: the one with the operator's extra patterns, also
  // used for the log); the default has the built-in detectors only. Set once before serving (null: no change).
  void set_pii_masker(std::shared_ptr<const crypto::PiiMasker> masker);
  // This model alone is served from now on (nullptr: none, not ready).
  void set_host(std::shared_ptr<const ModelHost> host);
  std::shared_ptr<const ModelHost> host() const;  // the default model (the first loaded), or null
  ModelRegistry& models() { return models_; }
  // How POST /admin/v1/models loads a model (set by serve before serving; unset: that route answers 501). Runs on a
  // loader thread of the service; the spec is the request body (model, served_model_name, max_context, ...).
  using ModelLoader = std::function<Result<std::shared_ptr<ModelHost>>(const nlohmann::json& spec)>;
  void set_model_loader(ModelLoader fn) { loader_ = std::move(fn); }
  ~Service();
  // Shutdown (SIGTERM): new generations and /ready answer 503 shutting_down from now on.
  void set_draining(bool v) { shutting_down_ = v; }
  // The admin drain (POST/DELETE /admin/v1/drain): like shutdown for callers, but the process keeps running and
  // the drain can be ended.
  void set_admin_drain(bool v) { admin_drain_ = v; }
  bool admin_drain() const { return admin_drain_.load(); }

  // Why the server cannot serve now (the order says which reason wins), or kReady.
  enum class Readiness { kReady, kLoading, kShuttingDown, kFailed, kDraining };
  Readiness readiness() const;
  static const char* readiness_name(Readiness r);  // "ready", "loading", "shutting_down", "model_failed", "draining"
  bool ready() const { return readiness() == Readiness::kReady; }

  void handle(server::HttpRequest req, std::shared_ptr<server::Responder> responder);

  std::shared_ptr<ServiceStats> stats() const { return stats_; }
  // The metrics registry that GET /metrics renders and /api/v1/stats reads: the engine (EngineConfig::metrics),
  // the transport and the process collectors write into it too. Created with the service.
  std::shared_ptr<metrics::Registry> metrics() const { return registry_; }
  // Extra JSON merged into /api/v1/stats (e.g. transport counters); set once before serving.
  void set_extra_stats(std::function<nlohmann::json()> fn) { extra_stats_ = std::move(fn); }
  // Called once per exchange, after quota settlement (audit and metrics attach here). Set before serving.
  void add_observer(ExchangeCallback fn) { observers_.push_back(std::move(fn)); }
  const RouteTable& routes() const { return routes_; }

 private:
  void add_route(const char* method, const char* pattern, auth::Permission perm, RouteHandler h);
  void exchange_ended(const ExchangeRecord& rec, const RequestContext& ctx);
  void generate(Endpoint ep, const server::HttpRequest& req, std::shared_ptr<RequestContext> ctx,
                std::shared_ptr<ObservedResponder> r);
  void embeddings(const server::HttpRequest& req, std::shared_ptr<RequestContext> ctx,
                  std::shared_ptr<ObservedResponder> r);
  void list_models(const server::HttpRequest& req, RequestContext& ctx, ObservedResponder& r);
  // The model a request names (use_default: the default one), noted in ctx; null after answering 404 model_not_found.
  std::shared_ptr<const ModelHost> resolve_or_404(const std::string& model, bool use_default, RequestContext* ctx,
                                                  ObservedResponder& r);
  // Why no request can be served now (no model, shutting down, draining, failed), or nothing.
  std::optional<ApiError> not_serving() const;
  void add_drain_routes();
  void add_model_routes();  // api/model_routes.cc
  nlohmann::json model_admin_json() const;
  void retire(std::shared_ptr<const ModelHost> host);
  nlohmann::json drain_json() const;
  nlohmann::json stats_json() const;

  mutable std::mutex mu_;
  ModelRegistry models_;
  ModelLoader loader_;
  // Admin loads in progress or failed (served name -> "loading" or the error), and the threads that load models and
  // free unloaded ones once their last request ends; joined by the destructor.
  std::map<std::string, std::string> pending_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> shutting_down_{false};
  std::atomic<bool> admin_drain_{false};
  std::shared_ptr<ServiceStats> stats_;
  std::shared_ptr<metrics::Registry> registry_;
  std::unique_ptr<ApiMetrics> api_metrics_;
  std::function<nlohmann::json()> extra_stats_;
  std::shared_ptr<Access> access_;
  audit::AuditLog* audit_ = nullptr;
  bool audit_fail_closed_ = false;
  std::shared_ptr<const crypto::PiiMasker> masker_;  // masks PII in audit detail text and prompts (PII policy)
  std::atomic<int64_t> audit_dropped_{0};
  RouteTable routes_;
  std::vector<ExchangeCallback> observers_;
};

// Answers helpers shared by the route handlers (they also note the error in the request's context).
void reply_json(server::Responder& r, int status, const nlohmann::json& body);
void reply_error(server::Responder& r, RequestContext* ctx, const ApiError& e);

}  // namespace citadel::api
