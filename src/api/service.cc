#include "api/service.h"

#include "api/admin_routes.h"
#include "api/audit_events.h"
#include "audit/audit_log.h"
#include "crypto/pii.h"
#include "api/errors.h"
#include "api/openai/embeddings.h"
#include "api/openai/pii_filter.h"
#include "api/openai/request.h"
#include "base/check.h"
#include "base/clock.h"
#include "base/log.h"

namespace citadel::api {

using ojson = nlohmann::ordered_json;
using auth::Permission;

void reply_json(server::Responder& r, int status, const nlohmann::json& body) {
  server::HttpResponse resp;
  resp.status = status;
  resp.headers.push_back({"Content-Type", "application/json"});
  resp.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  r.send(std::move(resp));
}

void reply_error(server::Responder& r, RequestContext* ctx, const ApiError& e) {
  if (ctx) ctx->set_error(e.code, e.message);
  r.send(error_response(e));
}

Service::Service(std::shared_ptr<Access> access, audit::AuditLog* audit, bool audit_fail_closed)
    : stats_(std::make_shared<ServiceStats>()), registry_(std::make_shared<metrics::Registry>()),
      api_metrics_(std::make_unique<ApiMetrics>(*registry_)), access_(std::move(access)), audit_(audit),
      audit_fail_closed_(audit_fail_closed) {
  if (auto m = crypto::PiiMasker::create({}); m.ok()) masker_ = std::make_shared<crypto::PiiMasker>(std::move(*m));
  add_route("GET", "/health", Permission::kPublic, [](auto&, auto, auto r) { reply_json(*r, 200, {{"status", "ok"}}); });
  add_route("GET", "/ready", Permission::kPublic, [this](auto&, auto ctx, auto r) {
    const Readiness state = readiness();
    if (state == Readiness::kReady) return reply_json(*r, 200, {{"status", "ready"}});
    ApiError e = unavailable(std::string("not ready: ") + readiness_name(state));
    e.code = readiness_name(state);
    reply_error(*r, ctx.get(), e);
  });
  add_route("POST", "/v1/chat/completions", Permission::kInference,
            [this](auto& req, auto ctx, auto r) { generate(Endpoint::kChat, req, ctx, r); });
  add_route("POST", "/v1/completions", Permission::kInference,
            [this](auto& req, auto ctx, auto r) { generate(Endpoint::kCompletion, req, ctx, r); });
  add_route("POST", "/api/v1/infer", Permission::kInference,
            [this](auto& req, auto ctx, auto r) { generate(Endpoint::kInfer, req, ctx, r); });
  add_route("POST", "/v1/embeddings", Permission::kInference,
            [this](auto& req, auto ctx, auto r) { embeddings(req, ctx, r); });
  add_route("GET", "/v1/models", Permission::kModelsRead,
            [this](auto& req, auto ctx, auto r) { list_models(req, *ctx, *r); });
  add_route("GET", "/v1/models/{id}", Permission::kModelsRead,
            [this](auto& req, auto ctx, auto r) { list_models(req, *ctx, *r); });
  add_route("GET", "/api/v1/stats", Permission::kStatsRead,
            [this](auto&, auto, auto r) { reply_json(*r, 200, stats_json()); });
  add_route("GET", "/metrics", Permission::kStatsRead, [this](auto&, auto, auto r) {
    server::HttpResponse resp;
    resp.status = 200;
    resp.headers.push_back({"Content-Type", "text/plain; version=0.0.4; charset=utf-8"});
    resp.body = registry_->render();
    r->send(std::move(resp));
  });
  // The route table itself (method, pattern, permission): what the access tests walk, so none can be missed.
  add_route("GET", "/admin/v1/routes", Permission::kAdmin, [this](auto&, auto, auto r) {
    nlohmann::json data = nlohmann::json::array();
    for (const auto& rt : routes_.routes())
      data.push_back({{"method", rt.method}, {"path", rt.pattern}, {"permission", auth::permission_name(rt.permission)}});
    reply_json(*r, 200, {{"object", "list"}, {"data", data}});
  });
  add_drain_routes();
  add_model_routes();
  if (access_ && access_->enabled() && access_->keys())
    for (auto& route : admin_routes(access_, audit_)) {
      const Status st = routes_.add(std::move(route));
      CHECK_MSG(st.ok(), st.message().c_str());
    }
}

void Service::add_route(const char* method, const char* pattern, Permission perm, RouteHandler h) {
  const Status st = routes_.add(Route(method, pattern, perm, std::move(h)));
  CHECK_MSG(st.ok(), st.message().c_str());
}

void Service::set_pii_masker(std::shared_ptr<const crypto::PiiMasker> masker) {
  if (masker) masker_ = std::move(masker);
}

void Service::set_host(std::shared_ptr<const ModelHost> host) { models_.reset(std::move(host)); }

std::shared_ptr<const ModelHost> Service::host() const { return models_.default_host(); }

Service::Readiness Service::readiness() const {
  if (shutting_down_) return Readiness::kShuttingDown;
  const auto hosts = models_.hosts();
  if (hosts.empty()) return Readiness::kLoading;
  for (const auto& h : hosts) {
    if (h->engine && h->engine->failed()) return Readiness::kFailed;
  }
  if (admin_drain_) return Readiness::kDraining;
  return Readiness::kReady;
}

const char* Service::readiness_name(Readiness r) {
  switch (r) {
    case Readiness::kReady: return "ready";
    case Readiness::kLoading: return "loading";
    case Readiness::kShuttingDown: return "shutting_down";
    case Readiness::kFailed: return "model_failed";
    case Readiness::kDraining: return "draining";
  }
  return "unknown";
}

nlohmann::json Service::drain_json() const {
  int in_flight = 0;
  for (const auto& h : models_.hosts()) {
    if (h->embedder) {
      const engine::EmbedEngineStats s = h->embedder->stats();
      in_flight += s.running + s.waiting;
    }
    if (!h->engine) continue;
    const engine::EngineStats s = h->engine->stats();
    in_flight += s.running + s.waiting;
  }
  return {{"draining", admin_drain_.load() || shutting_down_.load()}, {"in_flight", in_flight},
          {"streams_active", stats_->streams_active.load()}, {"readiness", readiness_name(readiness())}};
}

// The admin drain: a rolling update drains a replica (the load balancer's /ready probe takes it out, new
// generations are refused with 503 + Retry-After so a retrying client lands elsewhere), waits for in_flight to
// reach 0 (GET), then stops it; DELETE ends a drain that is called off. The body of POST is ignored.
void Service::add_drain_routes() {
  add_route("POST", "/admin/v1/drain", Permission::kAdmin, [this](auto&, auto, auto r) {
    if (!admin_drain_.exchange(true)) log_info("drain: started by the admin API; new generations get 503");
    reply_json(*r, 200, drain_json());
  });
  add_route("GET", "/admin/v1/drain", Permission::kAdmin, [this](auto&, auto, auto r) { reply_json(*r, 200, drain_json()); });
  add_route("DELETE", "/admin/v1/drain", Permission::kAdmin, [this](auto&, auto, auto r) {
    if (admin_drain_.exchange(false)) log_info("drain: ended by the admin API; accepting generations again");
    reply_json(*r, 200, drain_json());
  });
}

nlohmann::json Service::stats_json() const {
  registry_->collect();  // collector-fed values (transport, process) as fresh as a scrape's
  nlohmann::json j;
  j["server"] = stats_->to_json(*registry_);
  auto h = host();
  const Readiness state = readiness();
  j["readiness"] = {{"ready", state == Readiness::kReady}, {"reason", readiness_name(state)}};
  if (h && h->engine) {
    if (const Status why = h->engine->failure(); !why.ok()) j["readiness"]["failure"] = why.message();
  }
  if (h && h->engine) {
    const engine::EngineStats s = h->engine->stats();
    nlohmann::json e;
    e["running"] = s.running, e["waiting"] = s.waiting;
    e["kv_blocks_total"] = s.kv_blocks_total, e["kv_blocks_used"] = s.kv_blocks_used;
    e["kv_blocks_free"] = s.kv_blocks_free, e["block_size"] = s.block_size;
    e["steps"] = s.steps, e["pipelined_steps"] = s.pipelined_steps, e["last_step_ms"] = s.last_step_ms;
    e["last_forward_ms"] = s.last_forward_ms;
    e["step_ms_total"] = s.step_ms_total, e["forward_ms_total"] = s.forward_ms_total;
    e["last_batch_tokens"] = s.last_batch_tokens, e["last_batch_seqs"] = s.last_batch_seqs;
    e["last_prefill_budget"] = s.last_prefill_budget;
    e["prompt_tokens_total"] = s.prompt_tokens_total, e["computed_tokens_total"] = s.computed_tokens_total;
    e["generated_tokens_total"] = s.generated_tokens_total, e["finished_total"] = s.finished_total;
    e["cancelled_total"] = s.cancelled_total, e["rejected_busy_total"] = s.rejected_busy_total;
    e["rejected_invalid_total"] = s.rejected_invalid_total, e["errors_total"] = s.errors_total;
    e["prefix_hit_tokens"] = s.prefix_hit_tokens, e["preemptions"] = s.preemptions;
    j["engine"] = std::move(e);
  }
  nlohmann::json per_model = nlohmann::json::array();
  for (const auto& mh : models_.hosts()) {
    if (mh->embedder) {
      const engine::EmbedEngineStats s = mh->embedder->stats();
      per_model.push_back({{"id", mh->served_name}, {"kind", "embedding"}, {"running", s.running},
                           {"waiting", s.waiting}, {"requests_total", s.requests_total},
                           {"inputs_total", s.inputs_total}, {"tokens_total", s.tokens_total},
                           {"batches_total", s.batches_total}, {"rejected_busy_total", s.rejected_busy_total},
                           {"rejected_invalid_total", s.rejected_invalid_total},
                           {"cancelled_total", s.cancelled_total}, {"errors_total", s.errors_total}});
    }
    if (!mh->engine) continue;
    const engine::EngineStats s = mh->engine->stats();
    per_model.push_back({{"id", mh->served_name}, {"running", s.running}, {"waiting", s.waiting},
                         {"finished_total", s.finished_total}, {"generated_tokens_total", s.generated_tokens_total}});
  }
  j["models"] = std::move(per_model);
  if (extra_stats_) j["transport"] = extra_stats_();
  if (audit_) {
    const audit::AuditStats a = audit_->stats();
    j["audit"] = {{"written", a.written},
                  {"write_failures", a.write_failures},
                  {"queue_depth", a.queue_depth},
                  {"last_error", a.last_error},
                  {"healthy", audit_->healthy()},
                  {"signing_key_id", a.signing_key_id},
                  {"signing_key_version", a.signing_key_version},
                  {"signing_key_age_days", a.signing_key_age_days},
                  {"retention_days", audit_->options().retention_days}};
  }
  return j;
}

// Every loaded model the caller may use, then every alias (its card is the model it would route the caller to).
void Service::list_models(const server::HttpRequest& http, RequestContext& ctx, ObservedResponder& r) {
  (void)http;
  // version: what follows '@' in the served name ("chat@2027-01"); kind: what the model answers.
  auto card = [&](const std::string& id, const ModelHost& mh) {
    const size_t at = mh.served_name.rfind('@');
    return nlohmann::json{{"id", id}, {"object", "model"}, {"created", mh.created}, {"owned_by", "citadel"},
                          {"max_model_len", mh.max_context}, {"root", mh.served_name}, {"kind", mh.kind()},
                          {"version", at == std::string::npos ? "" : mh.served_name.substr(at + 1)}};
  };
  auto visible = [&](const ModelHost& mh) { return !ctx.principal || ctx.principal->may_use_model(mh.served_name); };
  const std::string sticky = ctx.principal ? ctx.principal->id : std::string();
  auto it = ctx.path_params.find("id");
  if (it == ctx.path_params.end()) {
    nlohmann::json data = nlohmann::json::array();
    for (const auto& h : models_.hosts()) {
      if (visible(*h)) data.push_back(card(h->served_name, *h));
    }
    for (const auto& a : models_.aliases()) {
      auto h = models_.resolve(a.name, sticky);
      if (h && visible(*h)) data.push_back(card(a.name, *h));
    }
    return reply_json(r, 200, {{"object", "list"}, {"data", data}});
  }
  const std::string& id = it->second;
  ctx.set_model(id);
  auto h = models_.resolve(id, sticky);
  if (h && visible(*h)) return reply_json(r, 200, card(id, *h));
  reply_error(r, &ctx, not_found("the model '" + id.substr(0, 200) + "' does not exist", "model_not_found"));
}

std::optional<ApiError> Service::not_serving() const {
  if (models_.empty()) return unavailable("the model is not loaded yet");
  switch (readiness()) {
    case Readiness::kReady:
    case Readiness::kLoading: break;
    case Readiness::kShuttingDown: {
      ApiError e = unavailable("the server is shutting down; retry on another replica");
      e.code = "shutting_down";
      return e;
    }
    case Readiness::kDraining: {
      ApiError e = unavailable("this replica is draining; retry on another replica");
      e.code = "draining";
      return e;
    }
    case Readiness::kFailed:
      return model_failed("the model failed on its device; this replica needs a restart");
  }
  return std::nullopt;
}

void Service::embeddings(const server::HttpRequest& http, std::shared_ptr<RequestContext> ctx,
                         std::shared_ptr<ObservedResponder> r) {
  if (auto e = not_serving()) return reply_error(*r, ctx.get(), *e);
  ojson body;
  if (auto e = parse_json_body(http.body, &body)) return reply_error(*r, ctx.get(), *e);
  EmbeddingRequest req;
  if (auto e = parse_embedding_request(body, &req)) return reply_error(*r, ctx.get(), *e);
  auto host = resolve_or_404(req.model, /*use_default=*/false, ctx.get(), *r);
  if (!host) return;
  if (!host->is_embedding())
    return reply_error(*r, ctx.get(),
                       bad_request("the model '" + host->served_name + "' is not an embedding model: use "
                                   "/v1/chat/completions or /v1/completions", "model", "model_not_supported"));
  const auth::Principal* who = ctx->principal ? &*ctx->principal : nullptr;
  if (who && !who->may_use_model(host->served_name)) {
    ApiError e = forbidden("this credential may not use the model '" + host->served_name + "'", "model_not_allowed");
    e.param = "model";
    return reply_error(*r, ctx.get(), e);
  }
  std::vector<std::vector<int32_t>> inputs;
  if (auto e = tokenize_embedding_inputs(*host, req, &inputs)) return reply_error(*r, ctx.get(), *e);
  int64_t tokens = 0;
  for (const auto& in : inputs) tokens += static_cast<int64_t>(in.size());
  if (access_ && access_->enabled()) {
    if (auto e = access_->admit(*ctx, tokens, 0)) return reply_error(*r, ctx.get(), *e);
  }
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  r->on_closed([cancelled] { cancelled->store(true); });
  engine::EmbedJob job;
  job.inputs = std::move(inputs);
  job.cancelled = cancelled;
  const int dim = host->embed_runner->dim();
  const std::string model = host->served_name;
  // Runs on the embedding engine's thread; the response is built on the connection's executor.
  job.done = [r, ctx, req = std::move(req), model, dim, tokens](Status st, std::vector<float> rows) mutable {
    r->post([r, ctx, req = std::move(req), model, dim, tokens, st, rows = std::move(rows)] {
      if (!st.ok()) return reply_error(*r, ctx.get(), from_status(st, "input"));
      ctx->set_usage(static_cast<int>(tokens), 0, 0);
      server::HttpResponse resp;
      resp.status = 200;
      resp.headers.push_back({"Content-Type", "application/json"});
      resp.body = dump_json(embedding_response(req, model, dim, rows, tokens));
      r->send(std::move(resp));
    });
  };
  if (Status st = host->embedder->submit(std::move(job)); !st.ok())
    return reply_error(*r, ctx.get(), from_status(st));
}

void Service::generate(Endpoint ep, const server::HttpRequest& http, std::shared_ptr<RequestContext> ctx,
                       std::shared_ptr<ObservedResponder> r) {
  if (auto e = not_serving()) return reply_error(*r, ctx.get(), *e);
  ojson body;
  if (auto e = parse_json_body(http.body, &body)) return reply_error(*r, ctx.get(), *e);
  ParsedRequest req;
  std::optional<ApiError> err;
  switch (ep) {
    case Endpoint::kChat: err = parse_chat_request(body, &req); break;
    case Endpoint::kCompletion: err = parse_completion_request(body, &req); break;
    case Endpoint::kInfer: err = parse_infer_request(body, &req); break;
  }
  if (err) return reply_error(*r, ctx.get(), *err);
  // /api/v1/infer may name no model: the default one.
  auto host = resolve_or_404(req.model, ep == Endpoint::kInfer && req.model.empty(), ctx.get(), *r);
  if (!host) return;
  if (host->is_embedding())
    return reply_error(*r, ctx.get(),
                       bad_request("the model '" + host->served_name + "' is an embedding model: use /v1/embeddings",
                                   "model", "model_not_supported"));
  apply_sampling_defaults(host->default_sampling, &req);
  const auth::Principal* who = ctx->principal ? &*ctx->principal : nullptr;
  if (who && !who->may_use_model(host->served_name)) {
    ApiError e = forbidden("this credential may not use the model '" + host->served_name + "'", "model_not_allowed");
    e.param = "model";
    return reply_error(*r, ctx.get(), e);
  }
  // The caller's prompt PII policy, before the template and the tokenizer see any text (api/openai/pii_filter.h).
  if (who) {
    if (auto e = apply_pii_policy(who->pii, masker_.get(), &req, host->codec.get(), ctx.get()))
      return reply_error(*r, ctx.get(), *e);
  }
  PreparedRequest prep;
  if (auto e = prepare_prompts(*host, req, &prep)) return reply_error(*r, ctx.get(), *e);
  // A request that names no max_tokens gets the caller's per-request cap instead of the rest of the context.
  const auto cap = who ? who->limits.max_tokens_per_request : std::nullopt;
  if (req.max_tokens < 0 && cap && *cap > 0 && prep.max_tokens > *cap) prep.max_tokens = static_cast<int>(*cap);
  if (access_ && access_->enabled()) {
    int64_t tokens = 0;
    for (const auto& p : prep.prompts) tokens += static_cast<int64_t>(p.tokens.size()) + prep.max_tokens;
    tokens *= req.n;
    if (auto e = access_->admit(*ctx, tokens, prep.max_tokens)) return reply_error(*r, ctx.get(), *e);
  }
  if (audit_ && audit_->stores_content()) {
    // Stored content: the prompt as received; the audit writer encrypts it (never logged, never in clear).
    auto p = body.find(ep == Endpoint::kChat ? "messages" : "prompt");
    ctx->capture_content_prompt(p == body.end() ? "null" : dump_json(*p));
  }
  start_generation(std::move(host), stats_, http, std::move(req), std::move(prep), r, ctx);
}

std::shared_ptr<const ModelHost> Service::resolve_or_404(const std::string& model, bool use_default,
                                                         RequestContext* ctx, ObservedResponder& r) {
  auto host = use_default ? models_.default_host()
                          : models_.resolve(model, ctx->principal ? ctx->principal->id : std::string());
  if (!host) {
    ctx->set_model(model);
    ApiError e = not_found("the model '" + model.substr(0, 200) + "' does not exist", "model_not_found");
    e.param = "model";
    reply_error(r, ctx, e);
    return nullptr;
  }
  ctx->set_model(host->served_name);
  return host;
}

void Service::exchange_ended(const ExchangeRecord& rec, const RequestContext& ctx) {
  // This may run on another thread than handle() (a stream ends on the connection's executor, a disconnect anywhere).
  LogRequestScope log_scope(rec.request_id);
  if (access_) access_->settle(ctx, rec);
  if (audit_) {
    if (auto ev = audit_event_for(rec, ctx.permission, masker_.get())) {
      if (!audit_->append(std::move(*ev)) && (audit_dropped_++ % 1000) == 0)
        log_error("audit log: a record could not be queued (" + audit_->stats().last_error + ")");
    }
  }
  api_metrics_->record(rec);
  for (const auto& fn : observers_) fn(rec, ctx);
  if (!log_enabled(LogLevel::kInfo)) return;
  // The access line: one per exchange, from the record alone. The route pattern, never the raw path (it may name a
  // key or a tenant); no prompt, output or credential is in the record's fields used here.
  const std::string& route = rec.route.empty() ? std::string("-") : rec.route;
  log_event(LogLevel::kInfo, "access", rec.method + " " + route + " " + std::to_string(rec.status),
            {{"method", rec.method},
             {"route", route},
             {"status", rec.status},
             {"duration_ms", rec.latency_s * 1000.0},
             {"principal", rec.principal_id.empty() ? std::string_view("-") : std::string_view(rec.principal_id)},
             {"tenant", rec.tenant.empty() ? std::string_view("-") : std::string_view(rec.tenant)},
             {"model", rec.model.empty() ? std::string_view("-") : std::string_view(rec.model)},
             {"prompt_tokens", rec.prompt_tokens},
             {"completion_tokens", rec.completion_tokens},
             {"cached_prompt_tokens", rec.cached_prompt_tokens},
             {"error", rec.error_code.empty() ? std::string_view("-") : std::string_view(rec.error_code)},
             {"streamed", rec.streamed ? 1 : 0},
             {"client_disconnected", rec.client_disconnected ? 1 : 0}});
}

void Service::handle(server::HttpRequest req, std::shared_ptr<server::Responder> raw) {
  auto ctx = std::make_shared<RequestContext>();
  ctx->request_id = req.request_id;
  // Lines this thread writes while the handler runs carry the request id (work it hands to other threads does not).
  LogRequestScope log_scope(req.request_id);
  // A request built in-process (tests, internal callers) has no read time: it starts now.
  ctx->received_at = req.received_at > 0 ? req.received_at : now_seconds();
  ctx->client = req.peer;
  ctx->method = req.method.substr(0, 16);
  ctx->path = req.path;
  auto r = ObservedResponder::create(std::move(raw), ctx,
                                     [this](const ExchangeRecord& rec, const RequestContext& c) { exchange_ended(rec, c); });
  if (req.transport_status != 0) {
    ApiError e = bad_request(req.transport_error);
    e.status = req.transport_status;
    e.code = req.transport_status == 413 ? "request_too_large"
             : req.transport_status == 431 ? "headers_too_large" : "malformed_request";
    return reply_error(*r, ctx.get(), e);
  }
  const RouteTable::Match m = routes_.match(req.method, req.path);
  if (m.route && m.route->permission == Permission::kPublic) {
    ctx->route = m.route->pattern, ctx->permission = Permission::kPublic;
    return m.route->handler(req, ctx, r);
  }
  if (m.route) ctx->route = m.route->pattern, ctx->permission = m.route->permission, ctx->path_params = m.params;
  if (audit_ && audit_fail_closed_ && !audit_->healthy()) {
    ApiError e = unavailable("the audit log cannot be written; this server refuses requests until it can");
    e.code = "audit_unavailable";
    return reply_error(*r, ctx.get(), e);
  }
  auth::Principal who = anonymous_admin();
  if (access_ && access_->enabled()) {
    if (auto e = access_->authenticate(req, &who)) return reply_error(*r, ctx.get(), *e);
  }
  ctx->principal = who;
  if (!m.route) {
    if (m.path_known) return reply_error(*r, ctx.get(), method_not_allowed(req.method.substr(0, 16), req.path.substr(0, 200)));
    return reply_error(*r, ctx.get(), not_found("no route for " + req.method.substr(0, 16) + " " + req.path.substr(0, 200), "not_found"));
  }
  if (auto e = Access::authorise(who, m.route->permission)) return reply_error(*r, ctx.get(), *e);
  m.route->handler(req, ctx, r);
}

}  // namespace citadel::api
