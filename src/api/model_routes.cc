// The model registry's admin routes (service.h):
//
//   GET    /admin/v1/models              loaded models (state ready), loads in progress (loading) and failed ones
//   POST   /admin/v1/models              {"model": PATH|NAME, "served_model_name": "chat@2027-01", ...}: 202, loads on
//                                        a loader thread; GET shows it ready (or failed, with the reason)
//   DELETE /admin/v1/models/{id}         takes the model out of the registry (409 while an alias routes to it); its
//                                        requests in flight finish, then it is freed on a service thread
//   GET    /admin/v1/aliases             {name, targets [{model, weight}], sticky, previous}
//   PUT    /admin/v1/aliases/{id}        {"targets": [{"model", "weight"}], "sticky": false}: set (canary, swap)
//   DELETE /admin/v1/aliases/{id}
//   POST   /admin/v1/aliases/{id}/rollback   the targets before the last PUT
#include <chrono>

#include "api/errors.h"
#include "api/openai/request.h"
#include "api/service.h"
#include "base/log.h"

namespace citadel::api {

using auth::Permission;
using json = nlohmann::json;

namespace {

ApiError conflict(std::string message) {
  ApiError e = bad_request(std::move(message));
  e.status = 409;
  e.code = "conflict";
  return e;
}

json alias_json(const ModelRegistry::Alias& a) {
  auto targets = [](const std::vector<ModelRegistry::Target>& ts) {
    json out = json::array();
    for (const auto& t : ts) out.push_back({{"model", t.model}, {"weight", t.weight}});
    return out;
  };
  return {{"name", a.name}, {"targets", targets(a.targets)}, {"sticky", a.sticky}, {"previous", targets(a.previous)}};
}

}  // namespace

Service::~Service() {
  stopping_ = true;
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
}

json Service::model_admin_json() const {
  json data = json::array();
  for (const auto& h : models_.hosts()) {
    json m = {{"id", h->served_name}, {"state", "ready"}, {"path", h->path}, {"aliases", h->aliases},
              {"max_context", h->max_context}, {"encrypted", !h->key_id.empty()}, {"kind", h->kind()}};
    if (h->engine) {
      const engine::EngineStats s = h->engine->stats();
      m["in_flight"] = s.running + s.waiting;
      m["failed"] = h->engine->failed();
    }
    data.push_back(std::move(m));
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, state] : pending_) {
    json m = {{"id", name}, {"state", state == "loading" ? "loading" : "failed"}};
    if (state != "loading") m["error"] = state;
    data.push_back(std::move(m));
  }
  return {{"object", "list"}, {"data", data}};
}

// The last reference to an unloaded model is dropped here, on a service thread, once no request holds it (never on
// the engine's own thread, which a host's destructor joins).
void Service::retire(std::shared_ptr<const ModelHost> host) {
  std::lock_guard<std::mutex> lock(mu_);
  workers_.emplace_back([this, h = std::move(host)]() mutable {
    while (h.use_count() > 1 && !stopping_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::string name = h->served_name;
    h.reset();
    log_info("model '" + name + "' unloaded");
  });
}

void Service::add_model_routes() {
  add_route("GET", "/admin/v1/models", Permission::kAdmin,
            [this](auto&, auto, auto r) { reply_json(*r, 200, model_admin_json()); });
  add_route("POST", "/admin/v1/models", Permission::kAdmin, [this](auto& req, auto ctx, auto r) {
    if (!loader_) {
      ApiError e = bad_request("this server cannot load models through the API");
      e.status = 501;
      e.code = "not_implemented";
      return reply_error(*r, ctx.get(), e);
    }
    nlohmann::ordered_json body;
    if (auto e = parse_json_body(req.body, &body)) return reply_error(*r, ctx.get(), *e);
    auto model = body.find("model");
    auto name = body.find("served_model_name");
    if (model == body.end() || !model->is_string() || model->get<std::string>().empty())
      return reply_error(*r, ctx.get(), bad_request("'model' (a path or a catalogue name) is required", "model"));
    if (name == body.end() || !name->is_string() || name->get<std::string>().empty() ||
        name->get<std::string>().size() > 200)
      return reply_error(*r, ctx.get(), bad_request("'served_model_name' (1 to 200 characters) is required",
                                                    "served_model_name"));
    const std::string served = name->get<std::string>();
    ctx->set_model(served);
    const json spec = json::parse(body.dump());
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto p = pending_.find(served);
      if (models_.resolve(served, "") || (p != pending_.end() && p->second == "loading"))
        return reply_error(*r, ctx.get(), conflict("the name '" + served + "' is already in use"));
      pending_[served] = "loading";
      workers_.emplace_back([this, spec, served] {
        log_info("model '" + served + "': loading through the admin API");
        auto host = loader_(spec);
        Status st = host.ok() ? models_.add(*host) : host.status();
        std::lock_guard<std::mutex> lock(mu_);
        if (st.ok()) {
          pending_.erase(served);
          log_info("model '" + served + "': loaded and serving");
        } else {
          pending_[served] = st.message();
          log_warn("model '" + served + "': load failed: " + st.message());
        }
      });
    }
    reply_json(*r, 202, {{"id", served}, {"state", "loading"}});
  });
  add_route("DELETE", "/admin/v1/models/{id}", Permission::kAdmin, [this](auto&, auto ctx, auto r) {
    const std::string id = ctx->path_params.at("id");
    ctx->set_model(id);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = pending_.find(id);
      if (it != pending_.end() && it->second != "loading") {  // forget a failed load
        pending_.erase(it);
        return reply_json(*r, 200, {{"id", id}, {"state", "removed"}});
      }
    }
    auto removed = models_.remove(id);
    if (!removed.ok()) {
      if (removed.status().code() == StatusCode::kNotFound)
        return reply_error(*r, ctx.get(), not_found(removed.status().message(), "model_not_found"));
      return reply_error(*r, ctx.get(), conflict(removed.status().message()));
    }
    int in_flight = 0;
    if ((*removed)->engine) {
      const engine::EngineStats s = (*removed)->engine->stats();
      in_flight = s.running + s.waiting;
    }
    retire(std::move(*removed));
    reply_json(*r, 200, {{"id", id}, {"state", "unloading"}, {"in_flight", in_flight}});
  });

  add_route("GET", "/admin/v1/aliases", Permission::kAdmin, [this](auto&, auto, auto r) {
    json data = json::array();
    for (const auto& a : models_.aliases()) data.push_back(alias_json(a));
    reply_json(*r, 200, {{"object", "list"}, {"data", data}});
  });
  add_route("PUT", "/admin/v1/aliases/{id}", Permission::kAdmin, [this](auto& req, auto ctx, auto r) {
    const std::string id = ctx->path_params.at("id");
    ctx->set_model(id);
    nlohmann::ordered_json body;
    if (auto e = parse_json_body(req.body, &body)) return reply_error(*r, ctx.get(), *e);
    auto targets = body.find("targets");
    if (targets == body.end() || !targets->is_array())
      return reply_error(*r, ctx.get(), bad_request("'targets' must be an array of {model, weight}", "targets"));
    std::vector<ModelRegistry::Target> ts;
    for (const auto& t : *targets) {
      if (!t.is_object() || !t.contains("model") || !t["model"].is_string() ||
          (t.contains("weight") && !t["weight"].is_number_integer()))
        return reply_error(*r, ctx.get(), bad_request("each target is {\"model\": NAME, \"weight\": INT}", "targets"));
      const int64_t w = t.value("weight", int64_t{1});
      ts.push_back({t["model"].get<std::string>(), w > 1'000'000 || w < -1 ? -1 : static_cast<int>(w)});
    }
    const bool sticky = body.contains("sticky") && body["sticky"].is_boolean() && body["sticky"].get<bool>();
    if (const Status st = models_.set_alias(id, std::move(ts), sticky); !st.ok())
      return reply_error(*r, ctx.get(), from_status(st, "targets"));
    for (const auto& a : models_.aliases()) {
      if (a.name == id) return reply_json(*r, 200, alias_json(a));
    }
    reply_json(*r, 200, {{"name", id}});
  });
  add_route("DELETE", "/admin/v1/aliases/{id}", Permission::kAdmin, [this](auto&, auto ctx, auto r) {
    const std::string id = ctx->path_params.at("id");
    if (const Status st = models_.delete_alias(id); !st.ok()) return reply_error(*r, ctx.get(), from_status(st));
    reply_json(*r, 200, {{"name", id}, {"deleted", true}});
  });
  add_route("POST", "/admin/v1/aliases/{id}/rollback", Permission::kAdmin, [this](auto&, auto ctx, auto r) {
    const std::string id = ctx->path_params.at("id");
    if (const Status st = models_.rollback(id); !st.ok()) {
      if (st.code() == StatusCode::kNotFound) return reply_error(*r, ctx.get(), from_status(st));
      return reply_error(*r, ctx.get(), conflict(st.message()));
    }
    for (const auto& a : models_.aliases()) {
      if (a.name == id) return reply_json(*r, 200, alias_json(a));
    }
    reply_json(*r, 200, {{"name", id}});
  });
}

}  // namespace citadel::api
