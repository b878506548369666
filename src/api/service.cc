#include "api/service.h"

#include "api/errors.h"
#include "api/openai/request.h"

namespace citadel::api {

using ojson = nlohmann::ordered_json;

Service::Service() : stats_(std::make_shared<ServiceStats>()) {}

void Service::set_host(std::shared_ptr<const ModelHost> host) {
  std::lock_guard<std::mutex> lock(mu_);
  host_ = std::move(host);
}

std::shared_ptr<const ModelHost> Service::host() const {
  std::lock_guard<std::mutex> lock(mu_);
  return host_;
}

bool Service::ready() const { return host() != nullptr && !draining_.load(); }

void Service::reply(server::Responder& r, int status, const nlohmann::json& body) {
  server::HttpResponse resp;
  resp.status = status;
  resp.headers.push_back({"Content-Type", "application/json"});
  resp.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  stats_->record_request(status);
  r.send(std::move(resp));
}

void Service::reply_error(server::Responder& r, const ApiError& e) {
  stats_->record_request(e.status);
  r.send(error_response(e));
}

nlohmann::json Service::stats_json() const {
  nlohmann::json j;
  j["server"] = stats_->to_json();
  auto h = host();
  if (h && h->engine) {
    const engine::EngineStats s = h->engine->stats();
    nlohmann::json e;
    e["running"] = s.running, e["waiting"] = s.waiting;
    e["kv_blocks_total"] = s.kv_blocks_total, e["kv_blocks_used"] = s.kv_blocks_used;
    e["kv_blocks_free"] = s.kv_blocks_free, e["block_size"] = s.block_size;
    e["steps"] = s.steps, e["last_step_ms"] = s.last_step_ms, e["last_forward_ms"] = s.last_forward_ms;
    e["step_ms_total"] = s.step_ms_total, e["forward_ms_total"] = s.forward_ms_total;
    e["prompt_tokens_total"] = s.prompt_tokens_total, e["computed_tokens_total"] = s.computed_tokens_total;
    e["generated_tokens_total"] = s.generated_tokens_total, e["finished_total"] = s.finished_total;
    e["cancelled_total"] = s.cancelled_total, e["rejected_busy_total"] = s.rejected_busy_total;
    e["rejected_invalid_total"] = s.rejected_invalid_total, e["errors_total"] = s.errors_total;
    e["prefix_hit_tokens"] = s.prefix_hit_tokens, e["preemptions"] = s.preemptions;
    j["engine"] = std::move(e);
  }
  if (extra_stats_) j["transport"] = extra_stats_();
  return j;
}

void Service::generate(Endpoint ep, const server::HttpRequest& http, std::shared_ptr<server::Responder> r) {
  auto host = this->host();
  if (!host) return reply_error(*r, unavailable("the model is not loaded yet"));
  if (draining_) return reply_error(*r, unavailable("the server is shutting down"));
  ojson body;
  if (auto e = parse_json_body(http.body, &body)) return reply_error(*r, *e);
  ParsedRequest req;
  std::optional<ApiError> err;
  switch (ep) {
    case Endpoint::kChat: err = parse_chat_request(body, &req); break;
    case Endpoint::kCompletion: err = parse_completion_request(body, &req); break;
    case Endpoint::kInfer: err = parse_infer_request(body, &req); break;
  }
  if (err) return reply_error(*r, *err);
  if (ep != Endpoint::kInfer || !req.model.empty()) {
    if (!host->accepts(req.model))
      return reply_error(*r, bad_request("the model '" + req.model.substr(0, 200) + "' does not exist; this server "
                                             "serves '" + host->served_name + "'",
                                         "model", "model_not_found"));
  }
  PreparedRequest prep;
  if (auto e = prepare_prompts(*host, req, &prep)) return reply_error(*r, *e);
  start_generation(std::move(host), stats_, http, std::move(req), std::move(prep), std::move(r));
}

void Service::handle(server::HttpRequest req, std::shared_ptr<server::Responder> r) {
  const std::string& p = req.path;
  const std::string& m = req.method;
  auto route = [&](const char* method) { return m == method; };
  if (p == "/v1/chat/completions" || p == "/v1/completions" || p == "/api/v1/infer") {
    if (!route("POST")) return reply_error(*r, method_not_allowed(m, p));
    const Endpoint ep = p == "/v1/chat/completions" ? Endpoint::kChat
                        : p == "/v1/completions"    ? Endpoint::kCompletion
                                                    : Endpoint::kInfer;
    return generate(ep, req, std::move(r));
  }
  if (p == "/health") {
    if (!route("GET")) return reply_error(*r, method_not_allowed(m, p));
    return reply(*r, 200, {{"status", "ok"}});
  }
  if (p == "/ready") {
    if (!route("GET")) return reply_error(*r, method_not_allowed(m, p));
    auto h = host();
    if (!h) return reply_error(*r, unavailable("the model is not loaded yet"));
    if (draining_) return reply_error(*r, unavailable("the server is shutting down"));
    return reply(*r, 200, {{"status", "ready"}, {"model", h->served_name}});
  }
  if (p == "/api/v1/stats") {
    if (!route("GET")) return reply_error(*r, method_not_allowed(m, p));
    return reply(*r, 200, stats_json());
  }
  if (p == "/v1/models" || p.rfind("/v1/models/", 0) == 0) {
    if (!route("GET")) return reply_error(*r, method_not_allowed(m, p));
    auto h = host();
    auto card = [&](const ModelHost& mh) {
      return nlohmann::json{{"id", mh.served_name}, {"object", "model"}, {"created", mh.created},
                            {"owned_by", "citadel"}, {"max_model_len", mh.max_context}};
    };
    if (p == "/v1/models") {
      nlohmann::json data = nlohmann::json::array();
      if (h) data.push_back(card(*h));
      return reply(*r, 200, {{"object", "list"}, {"data", data}});
    }
    const std::string id = p.substr(std::string("/v1/models/").size());
    if (h && h->accepts(id)) return reply(*r, 200, card(*h));
    return reply_error(*r, not_found("the model '" + id.substr(0, 200) + "' does not exist", "model_not_found"));
  }
  return reply_error(*r, not_found("no route for " + m + " " + p.substr(0, 200), "not_found"));
}

}  // namespace citadel::api
