// citadel serve: the OpenAI-compatible HTTP server for one model.
//   citadel serve --model PATH|NAME [--host 127.0.0.1] [--port 8080] [--max-queue N] [--config FILE] [--threads N]
//                 [--served-model-name NAME] [--chat-template FILE] ...
// Every option is also a config-file key and a CITADEL_* variable (flag > env > file > default); the effective
// configuration is printed at start. SIGINT/SIGTERM: stop accepting, drain running requests up to drain_timeout_s,
// cancel the rest, exit 0.
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <thread>

#include "api/model_loader.h"
#include "api/service.h"
#include "base/log.h"
#include "command.h"
#include "server/config.h"
#include "server/http_server.h"

extern char** environ;

namespace {

using namespace citadel;

struct ServeFlags {
  std::string config_file;
  std::map<std::string, std::string> values;  // key (underscores) -> text, for flags given
};

LogLevel parse_level(const std::string& s) {
  if (s == "debug") return LogLevel::kDebug;
  if (s == "warn") return LogLevel::kWarn;
  if (s == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

int run_serve(const ServeFlags& flags) {
  server::ServeConfig cfg;
  Status st = server::build_config(flags.config_file, environ, flags.values, &cfg);
  if (!st.ok()) {
    std::fprintf(stderr, "citadel serve: %s\n", st.message().c_str());
    return 2;
  }
  if (cfg.sampling != "device" && cfg.sampling != "host") {
    std::fprintf(stderr, "citadel serve: sampling must be device or host, got '%s'\n", cfg.sampling.c_str());
    return 2;
  }
  set_log_level(parse_level(cfg.log_level));
  std::fprintf(stderr, "citadel serve: effective configuration\n%s", server::config_to_yaml(cfg).c_str());

  // Signals are handled synchronously by this thread (sigwait); block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto service = std::make_shared<api::Service>();
  server::HttpServerOptions hopts;
  hopts.host = cfg.host;
  hopts.port = cfg.port;
  hopts.threads = cfg.io_threads;
  hopts.max_body_bytes = static_cast<size_t>(cfg.max_body_mb) << 20;
  hopts.idle_timeout_s = cfg.idle_timeout_s;
  hopts.max_connections = cfg.max_connections;
  server::HttpServer http(hopts, [service](server::HttpRequest req, std::shared_ptr<server::Responder> r) {
    service->handle(std::move(req), std::move(r));
  });
  service->set_extra_stats([&http] {
    const auto s = http.stats();
    return nlohmann::json{{"connections_open", s.connections_open}, {"connections_total", s.connections_total},
                          {"requests_total", s.requests_total}};
  });
  st = http.start();
  if (!st.ok()) {
    std::fprintf(stderr, "citadel serve: %s\n", st.message().c_str());
    return 1;
  }
  // Machine-readable line (tests read the port from it when --port 0).
  std::printf("citadel serve: listening on http://%s:%d\n", cfg.host.c_str(), http.port());
  std::fflush(stdout);

  api::ModelLoadOptions lo;
  lo.model = cfg.model;
  lo.models_dir = cfg.models_dir;
  lo.served_model_name = cfg.served_model_name;
  lo.chat_template_file = cfg.chat_template;
  lo.max_context = cfg.max_context;
  lo.compute_threads = cfg.threads;
  lo.device = cfg.device;
  lo.cuda_weights = cfg.cuda_weights;
  lo.cpu_precision = cfg.cpu_precision;
  lo.engine.max_waiting = cfg.max_queue;
  lo.engine.max_seqs = cfg.max_seqs;
  lo.engine.device_sampling = cfg.sampling == "device";
  lo.engine.kv_memory_bytes = static_cast<size_t>(cfg.kv_memory_mb) << 20;
  const double t0 = now_seconds();
  auto host = api::load_model_host(lo);
  if (!host.ok()) {
    std::fprintf(stderr, "citadel serve: %s\n", host.status().message().c_str());
    http.stop();
    return 1;
  }
  log_info("model '" + (*host)->served_name + "' loaded in " + std::to_string(now_seconds() - t0) +
           " s; context " + std::to_string((*host)->max_context) + " tokens; ready");
  service->set_host(*host);
  std::printf("citadel serve: ready\n");
  std::fflush(stdout);

  int sig = 0;
  sigwait(&sigs, &sig);
  log_info(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + "; draining for up to " +
           std::to_string(cfg.drain_timeout_s) + " s");
  service->set_draining(true);
  http.stop_accepting();
  http.close_idle();
  (*host)->engine->stop(std::chrono::steady_clock::now() + std::chrono::seconds(cfg.drain_timeout_s));
  // Let the last responses reach their sockets.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (http.stats().connections_open > 0 && std::chrono::steady_clock::now() < until) {
    http.close_idle();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  http.stop();
  service->set_host(nullptr);
  log_info("stopped");
  return 0;
}

citadel::cli::Registrar reg("serve", "Serve a model over the OpenAI-compatible HTTP API", [](CLI::App& sub) {
  auto flags = std::make_shared<ServeFlags>();
  sub.add_option("--config", flags->config_file, "YAML config file (flat key: value)");
  for (const auto& k : server::config_keys()) {
    std::string dashed = k.name;
    for (char& c : dashed)
      if (c == '_') c = '-';
    auto* opt = sub.add_option("--" + dashed, k.help);
    opt->each([flags, name = k.name](const std::string& v) { flags->values[name] = v; });
  }
  return [flags] { return run_serve(*flags); };
});

}  // namespace
