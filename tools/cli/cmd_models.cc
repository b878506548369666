// citadel models list|load|unload|alias|rollback: the model registry of a running `citadel serve`, through its admin
// API (/admin/v1/models, /admin/v1/aliases; docs/API.md). The admin key comes from $CITADEL_API_KEY or --key-file.
//   citadel models list                                   -> models (state, in flight) and aliases, one per line
//   citadel models load MODEL --name chat@2027-01 [--max-context N] [--threads N] [--memory-mb N] [--sha256 H]
//                       [--no-wait]                       -> waits until it serves (or says why it failed)
//   citadel models unload NAME
//   citadel models alias NAME MODEL=WEIGHT [MODEL=WEIGHT ...] [--sticky]
//   citadel models rollback NAME
// Common: --url http://127.0.0.1:8080 (https with --ca-file). Exit 0 on success; errors: one line on stderr, exit 1.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "command.h"
#include "server/http_fetch.h"

namespace models_cmd {

using namespace citadel;
using json = nlohmann::json;

struct ModelsArgs {
  std::string url = "http://127.0.0.1:8080", key_file, ca_file;
  std::string model, name;
  std::vector<std::string> targets;
  int max_context = 0, threads = 0;
  int64_t memory_mb = 0;
  std::string sha256;
  bool sticky = false, no_wait = false;
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "citadel models: %s\n", msg.c_str());
  return 1;
}

Result<std::string> api_key(const ModelsArgs& a) {
  if (!a.key_file.empty()) {
    std::ifstream f(a.key_file);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string k = ss.str();
    while (!k.empty() && (k.back() == '\n' || k.back() == '\r' || k.back() == ' ')) k.pop_back();
    if (!f || k.empty()) return InvalidArgument("--key-file " + a.key_file + ": cannot read a key");
    return k;
  }
  if (const char* k = std::getenv("CITADEL_API_KEY"); k && *k) return std::string(k);
  return InvalidArgument("no admin key: set CITADEL_API_KEY or give --key-file");
}

// One admin call; the parsed JSON body of a 2xx answer, else the server's error message.
Result<json> call(const ModelsArgs& a, const std::string& method, const std::string& path, const json& body = {}) {
  auto key = api_key(a);
  if (!key.ok()) return key.status();
  server::HttpCall c{method, body.is_null() ? "" : body.dump(), *key};
  server::FetchOptions o;
  o.ca_file = a.ca_file;
  auto r = server::http_call(a.url + path, c, o);
  if (!r.ok()) return r.status();
  json j = json::parse(r->body, nullptr, false);
  if (r->status / 100 != 2) {
    const std::string why = j.is_object() && j.contains("error") ? j["error"].value("message", r->body) : r->body;
    return InvalidArgument(method + " " + path + ": HTTP " + std::to_string(r->status) + ": " + why.substr(0, 500));
  }
  return j;
}

int list(const ModelsArgs& a) {
  auto m = call(a, "GET", "/admin/v1/models");
  if (!m.ok()) return fail(m.status().message());
  for (const auto& x : (*m)["data"]) {
    std::printf("%-32s %-8s", x.value("id", "").c_str(), x.value("state", "").c_str());
    if (x.contains("in_flight")) std::printf(" in_flight %d", x["in_flight"].get<int>());
    if (x.contains("path")) std::printf(" %s", x["path"].get<std::string>().c_str());
    if (x.contains("error")) std::printf(" %s", x["error"].get<std::string>().c_str());
    std::printf("\n");
  }
  auto al = call(a, "GET", "/admin/v1/aliases");
  if (!al.ok()) return fail(al.status().message());
  for (const auto& x : (*al)["data"]) {
    std::string t;
    for (const auto& target : x["targets"])
      t += (t.empty() ? "" : " ") + target["model"].get<std::string>() + "=" + std::to_string(target["weight"].get<int>());
    std::printf("%-32s alias    %s%s\n", x["name"].get<std::string>().c_str(), t.c_str(),
                x["sticky"].get<bool>() ? " (sticky)" : "");
  }
  return 0;
}

int load(const ModelsArgs& a) {
  json body = {{"model", a.model}, {"served_model_name", a.name}};
  if (a.max_context) body["max_context"] = a.max_context;
  if (a.threads) body["threads"] = a.threads;
  if (a.memory_mb) body["memory_mb"] = a.memory_mb;
  if (!a.sha256.empty()) body["sha256"] = a.sha256;
  auto r = call(a, "POST", "/admin/v1/models", body);
  if (!r.ok()) return fail(r.status().message());
  if (a.no_wait) return std::printf("%s loading\n", a.name.c_str()), 0;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto m = call(a, "GET", "/admin/v1/models");
    if (!m.ok()) return fail(m.status().message());
    for (const auto& x : (*m)["data"]) {
      if (x.value("id", "") != a.name || x.value("state", "") == "loading") continue;
      if (x.value("state", "") == "ready") return std::printf("%s ready\n", a.name.c_str()), 0;
      return fail(a.name + ": " + x.value("error", "failed"));
    }
  }
}

int alias(const ModelsArgs& a) {
  json targets = json::array();
  for (const std::string& t : a.targets) {
    const size_t eq = t.rfind('=');
    char* end = nullptr;
    const long w = eq == std::string::npos ? 1 : std::strtol(t.c_str() + eq + 1, &end, 10);
    if (eq != std::string::npos && (end == t.c_str() + eq + 1 || *end)) return fail("'" + t + "': expected MODEL=WEIGHT");
    targets.push_back({{"model", t.substr(0, eq)}, {"weight", w}});
  }
  auto r = call(a, "PUT", "/admin/v1/aliases/" + a.name, {{"targets", targets}, {"sticky", a.sticky}});
  if (!r.ok()) return fail(r.status().message());
  std::printf("%s\n", r->dump().c_str());
  return 0;
}

citadel::cli::Registrar reg("models", "List, load, unload and alias the models of a running server (admin API)",
                            [](CLI::App& sub) {
  auto a = std::make_shared<ModelsArgs>();
  auto common = [a](CLI::App* c) {
    c->add_option("--url", a->url, "the server (default http://127.0.0.1:8080)");
    c->add_option("--key-file", a->key_file, "file holding an admin API key (default: $CITADEL_API_KEY)");
    c->add_option("--ca-file", a->ca_file, "https: PEM bundle to trust");
  };
  auto* ls = sub.add_subcommand("list", "models and aliases");
  common(ls);
  auto* ld = sub.add_subcommand("load", "load a model and wait until it serves");
  common(ld);
  ld->add_option("model", a->model, "PATH or catalogue NAME")->required();
  ld->add_option("--name", a->name, "its served name (e.g. chat@2027-01)")->required();
  ld->add_option("--max-context", a->max_context, "context length (default: the server's)");
  ld->add_option("--threads", a->threads, "its own CPU threads (default: the server's pool)");
  ld->add_option("--memory-mb", a->memory_mb, "refuse it unless weights + KV fit this budget");
  ld->add_option("--sha256", a->sha256, "the file must hash to this");
  ld->add_flag("--no-wait", a->no_wait, "return once the load is accepted");
  auto* ul = sub.add_subcommand("unload", "take a model out (its requests in flight finish)");
  common(ul);
  ul->add_option("name", a->name, "served name")->required();
  auto* al = sub.add_subcommand("alias", "route NAME to models by weight (a canary, a swap)");
  common(al);
  al->add_option("name", a->name, "alias name")->required();
  al->add_option("targets", a->targets, "MODEL=WEIGHT ...")->required();
  al->add_flag("--sticky", a->sticky, "one caller always gets the same model");
  auto* rb = sub.add_subcommand("rollback", "the alias's targets before its last change");
  common(rb);
  rb->add_option("name", a->name, "alias name")->required();
  sub.require_subcommand(1);
  return [a, ls, ld, ul, al, rb] {
    if (*ls) return list(*a);
    if (*ld) return load(*a);
    if (*al) return alias(*a);
    const bool unload = static_cast<bool>(*ul);
    auto r = unload ? call(*a, "DELETE", "/admin/v1/models/" + a->name)
                    : call(*a, "POST", "/admin/v1/aliases/" + a->name + "/rollback");
    if (!r.ok()) return fail(r.status().message());
    std::printf("%s\n", r->dump().c_str());
    return 0;
  };
});

}  // namespace models_cmd
