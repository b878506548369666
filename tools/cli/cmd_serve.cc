// citadel serve: the OpenAI-compatible HTTP server for one or more models (--model repeatable; more through
// POST /admin/v1/models).
//   citadel serve --model PATH|NAME [--model PATH|NAME ...] [--host 127.0.0.1] [--port 8080] [--max-queue N] [--config FILE] [--threads N]
//                 [--served-model-name NAME] [--chat-template FILE] ...
// Every option is also a config-file key and a CITADEL_* variable (flag > env > file > default); the effective
// configuration is printed at start. SIGINT/SIGTERM: stop accepting, drain running requests up to drain_timeout_s,
// cancel the rest, exit 0.
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <unistd.h>

#include "api/access.h"
#include "api/config_audit.h"
#include "api/model_loader.h"
#include "api/service.h"
#include "api/state.h"
#include "audit/audit_log.h"
#include "auth/key_store.h"
#include "auth/oidc.h"
#include "auth/quota.h"
#include "base/log.h"
#include "base/nvml_metrics.h"
#include "base/process_metrics.h"
#include "base/sha256.h"
#include "base/strings.h"
#include "crypto/key_source.h"
#include "crypto/pii.h"
#include "model/catalog.h"
#include "command.h"
#include "server/config.h"
#include "server/http_fetch.h"
#include "server/http_server.h"
#include "server/service_notify.h"

extern char** environ;

#ifndef CITADEL_VERSION
#define CITADEL_VERSION "0.1.0"
#endif
#ifndef CITADEL_GIT_COMMIT
#define CITADEL_GIT_COMMIT "unknown"
#endif

namespace serve_cmd {

using namespace citadel;

struct ServeFlags {
  std::string config_file;
  std::map<std::string, std::string> values;  // key (underscores) -> text, for flags given (the first --model)
  std::vector<std::string> models;             // every --model, in order (repeatable: one server, several models)
  std::vector<std::string> served_names;       // every --served-model-name, paired with --model by position
  std::vector<std::string> cuda_devices;       // every --cuda-device, paired with --model by position
};

// A models: entry's (or --model's) own settings over the server-wide ones in o.
void apply_model_entry(const server::ModelEntry& m, api::ModelLoadOptions* o) {
  if (m.max_context) o->max_context = m.max_context;
  if (!m.chat_template.empty()) o->chat_template_file = m.chat_template;
  if (m.threads) o->compute_threads = m.threads;
  o->memory_budget_mb = m.memory_mb;
  if (m.embedding_max_request_tokens) o->embedding_max_request_tokens = m.embedding_max_request_tokens;
  if (!m.embedding_truncate.empty()) o->embedding_truncate = m.embedding_truncate;
  if (m.cuda_device >= 0) o->cuda_device = m.cuda_device;
}

// Loads one more model like `base` for the registry: from a later --model or an admin API request.
Result<std::shared_ptr<api::ModelHost>> load_more(api::ModelLoadOptions o, const std::string& model,
                                                  const std::string& served_name, const std::string& sha256) {
  o.model = model;
  o.served_model_name = served_name;
  if (!sha256.empty()) {
    // Pinned: the file must hash to what the operator recorded (a replaced or modified file is refused).
    auto path = resolve_model(model, o.models_dir.empty() ? default_models_dir() : o.models_dir);
    if (!path.ok()) return path.status();
    auto got = sha256_file(*path);
    if (!got.ok()) return got.status();
    if (*got != sha256) return DataLoss(*path + ": sha256 " + *got + " is not the pinned " + sha256);
  }
  return api::load_model_host(o);
}

// Identity and access for `serve`: the state store, the bootstrap admin key, the OIDC verifier.
struct AccessSetup {
  std::unique_ptr<api::State> state;
  std::unique_ptr<auth::OidcVerifier> oidc;
  std::shared_ptr<api::Access> access;
};


// The bootstrap admin key on first start: from admin_key_file or $CITADEL_BOOTSTRAP_ADMIN_KEY (automation), else
// generated and printed once on stdout.
Status bootstrap_admin(const server::ServeConfig& cfg, auth::KeyStore& keys) {
  std::string given;
  if (!cfg.admin_key_file.empty()) {
    FILE* f = std::fopen(cfg.admin_key_file.c_str(), "rb");
    if (!f) return IoError(cfg.admin_key_file + ": cannot read the admin key file");
    char buf[512];
    const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    given.assign(buf, n);
    while (!given.empty() && (given.back() == '\n' || given.back() == '\r' || given.back() == ' ')) given.pop_back();
  } else if (const char* e = std::getenv("CITADEL_BOOTSTRAP_ADMIN_KEY"); e && *e) {
    given = e;
  }
  auto raw = keys.ensure_bootstrap_admin(static_cast<int64_t>(std::time(nullptr)), given);
  if (!raw.ok()) return raw.status();
  if (raw->empty()) return OkStatus();  // an admin key exists already
  if (given.empty()) {
    std::printf("citadel serve: first start: admin API key (shown once, store it now): %s\n", raw->c_str());
    std::fflush(stdout);
  } else {
    log_info("first start: the bootstrap admin key was installed from the given file or environment");
  }
  return OkStatus();
}

// Who this server is among replicas sharing one state database: instance_name, else hostname:data_dir.
std::string instance_name(const server::ServeConfig& cfg) {
  if (!cfg.instance_name.empty()) return cfg.instance_name;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "unknown-host");
  return std::string(host) + ":" + (cfg.data_dir.empty() ? api::default_data_dir() : cfg.data_dir);
}

Result<AccessSetup> setup_access(const server::ServeConfig& cfg, std::shared_ptr<const crypto::Key> content_key) {
  AccessSetup a;
  api::AccessOptions ao;
  if (cfg.auth == "off") {
    log_warn("access control is OFF (--auth off): every caller is an anonymous admin; never expose this server");
    ao.enabled = false;
    a.access = std::make_shared<api::Access>(ao);
    return a;
  }
  api::StateOptions so;
  so.data_dir = cfg.data_dir, so.state_db = cfg.state_db;
  so.audit = cfg.audit == "on";
  so.audit_retention_days = cfg.audit_retention_days;
  so.audit_key_file = cfg.audit_key;
  so.key_max_age_days = cfg.key_max_age_days;
  so.audit_fail_closed = cfg.audit_fail_closed == "on";
  so.audit_content_key = std::move(content_key);
  auto st = api::open_state(so);
  if (!st.ok()) return st.status();
  a.state = std::move(*st);
  log_info("state: " + a.state->db->describe());
  a.state->start_maintenance();
  RETURN_IF_ERROR(bootstrap_admin(cfg, *a.state->keys));
  if (!cfg.oidc_issuer.empty() || !cfg.oidc_jwks.empty()) {
    if (cfg.oidc_issuer.empty() || cfg.oidc_jwks.empty() || cfg.oidc_audience.empty())
      return InvalidArgument("OIDC needs oidc_issuer, oidc_audience and oidc_jwks together");
    auth::OidcConfig oc;
    oc.issuer = cfg.oidc_issuer;
    oc.audiences = split_list(cfg.oidc_audience, ',', /*trim_spaces=*/true);
    const bool url = cfg.oidc_jwks.rfind("http://", 0) == 0 || cfg.oidc_jwks.rfind("https://", 0) == 0;
    (url ? oc.jwks_url : oc.jwks_file) = cfg.oidc_jwks;
    oc.role_claim = cfg.oidc_role_claim;
    oc.tenant_claim = cfg.oidc_tenant_claim;
    oc.default_role = cfg.oidc_default_role;
    auto v = auth::OidcVerifier::create(oc, [](const std::string& u) { return server::http_get(u); });
    if (!v.ok()) return v.status().with_context("OIDC");
    a.oidc = std::move(*v);
    log_info("OIDC: accepting bearer tokens of " + cfg.oidc_issuer);
  }
  ao.keys = a.state->keys.get();
  ao.quotas = a.state->quotas.get();
  ao.oidc = a.oidc.get();
  ao.lease_ttl_s = cfg.request_timeout_s + 60;
  a.access = std::make_shared<api::Access>(ao);
  return a;
}

LogLevel parse_level(const std::string& s) {
  if (s == "debug") return LogLevel::kDebug;
  if (s == "warn") return LogLevel::kWarn;
  if (s == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

// A start-up failure, once the log format is known: one line, JSON when log_format is json (printf-style).
void serve_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void serve_error(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::string msg(buf);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  if (log_format() == LogFormat::kJson) log_event(LogLevel::kError, "serve", msg);
  else std::fprintf(stderr, "citadel serve: %s\n", msg.c_str());
}

int run_serve(const ServeFlags& flags) {
  server::ServeConfig cfg;
  Status st = server::build_config(flags.config_file, environ, flags.values, &cfg);
  if (!st.ok()) {
    std::fprintf(stderr, "citadel serve: %s\n", st.message().c_str());
    return 2;
  }
  if (cfg.log_format != "text" && cfg.log_format != "json") {
    std::fprintf(stderr, "citadel serve: log_format must be text or json, got '%s'\n", cfg.log_format.c_str());
    return 2;
  }
  set_log_format(cfg.log_format == "json" ? LogFormat::kJson : LogFormat::kText);
  set_log_level(parse_level(cfg.log_level));
  if (cfg.sampling != "device" && cfg.sampling != "host") {
    serve_error("sampling must be device or host, got '%s'", cfg.sampling.c_str());
    return 2;
  }
  for (const auto& [name, value] : {std::pair<const char*, const std::string&>{"audit", cfg.audit},
                                    {"audit_fail_closed", cfg.audit_fail_closed},
                                    {"audit_store_content", cfg.audit_store_content},
                                    {"embedding_truncate", cfg.embedding_truncate},
                                    {"overlap_steps", cfg.overlap_steps}}) {
    if (value != "on" && value != "off") {
      serve_error("%s must be on or off, got '%s'", name, value.c_str());
      return 2;
    }
  }
  std::vector<int> flag_devices;  // every --cuda-device, checked as the config's own value is
  for (const std::string& d : flags.cuda_devices) {
    server::ServeConfig one;
    if (Status ds = server::set_config_value(&one, "cuda_device", d, "flag --cuda-device"); !ds.ok()) {
      serve_error("%s", ds.message().c_str());
      return 2;
    }
    flag_devices.push_back(one.cuda_device);
  }
  if (cfg.prefix_cache_scope != "tenant" && cfg.prefix_cache_scope != "global") {
    serve_error("prefix_cache_scope must be tenant or global, got '%s'",
                 cfg.prefix_cache_scope.c_str());
    return 2;
  }
  if (cfg.auth != "on" && cfg.auth != "off") {
    serve_error("auth must be on or off, got '%s'", cfg.auth.c_str());
    return 2;
  }
  if (cfg.tls_cert.empty() != cfg.tls_key.empty()) {
    serve_error("--tls-cert and --tls-key go together");
    return 2;
  }
  // Stored content: its key is loaded (and checked) before anything starts; one line when it cannot be.
  std::shared_ptr<const crypto::Key> content_key;
  if (cfg.audit_store_content == "on") {
    if (cfg.audit_content_key.empty()) {
      serve_error("audit_store_content on needs audit_content_key (PATH | env:NAME | cmd:PROG)");
      return 2;
    }
    if (cfg.audit != "on" || cfg.auth != "on") {
      serve_error("audit_store_content on needs the audit log (auth on, audit on)");
      return 2;
    }
    auto k = crypto::load_key(cfg.audit_content_key);
    if (!k.ok()) {
      serve_error("audit_content_key: %s", k.status().message().c_str());
      return 1;
    }
    content_key = std::make_shared<const crypto::Key>(std::move(*k));
  }
  // One masker (built-in detectors + the operator's patterns) for the log, audit text and the prompt PII policy.
  crypto::PiiOptions pii_options;
  auto pii_patterns = crypto::parse_pii_pattern_list(cfg.pii_extra_patterns);
  if (!pii_patterns.ok()) {
    serve_error("pii_extra_patterns: %s", pii_patterns.status().message().c_str());
    return 2;
  }
  pii_options.extra_patterns = std::move(*pii_patterns);
  auto pii_masker = crypto::PiiMasker::create(std::move(pii_options));
  if (!pii_masker.ok()) {
    serve_error("pii_extra_patterns: %s", pii_masker.status().message().c_str());
    return 2;
  }
  auto masker = std::make_shared<const crypto::PiiMasker>(std::move(*pii_masker));
  // Whatever reaches the log (an error quoting a request, a path, a claim) has its PII masked first.
  set_log_filter([masker](const std::string& line) { return masker->mask(line); });
  if (log_format() == LogFormat::kJson) {
    // Operator-given values, already free of passwords: not through the PII filter (it would mask the host address).
    log_event(LogLevel::kInfo, "config", "effective configuration",
              {LogField::unfiltered("config", server::config_to_yaml(cfg))});
  } else {
    std::fprintf(stderr, "citadel serve: effective configuration\n%s", server::config_to_yaml(cfg).c_str());
  }
  // Signals are handled synchronously by this thread (sigwait); block them before any thread starts
  // (the state store's checkpoint and maintenance threads included).
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  auto access = setup_access(cfg, content_key);
  if (!access.ok()) {
    serve_error("%s", access.status().message().c_str());
    return 1;
  }
  if (access->state && content_key && !content_key->id.empty())
    access->state->watch_key("content key", content_key->id, content_key->created_unix);

  audit::AuditLog* audit_log = access->state ? access->state->audit.get() : nullptr;
  auto service = std::make_shared<api::Service>(access->access, audit_log, cfg.audit_fail_closed == "on");
  service->set_pii_masker(masker);
  auto audit_server_event = [&](const char* kind, nlohmann::json detail) {
    if (!audit_log) return;
    audit::AuditEvent e;
    e.kind = kind;
    e.principal = "server";
    e.model = cfg.served_model_name.empty() ? cfg.model : cfg.served_model_name;
    e.detail = std::move(detail);
    audit_log->append(std::move(e));
  };
  server::HttpServerOptions hopts;
  hopts.host = cfg.host;
  hopts.port = cfg.port;
  hopts.threads = cfg.io_threads;
  hopts.max_body_bytes = static_cast<size_t>(cfg.max_body_mb) << 20;
  hopts.idle_timeout_s = cfg.idle_timeout_s;
  hopts.max_connections = cfg.max_connections;
  hopts.tls_cert_file = cfg.tls_cert;
  hopts.tls_key_file = cfg.tls_key;
  hopts.tls_client_ca_file = cfg.tls_client_ca;
  server::HttpServer http(hopts, [service](server::HttpRequest req, std::shared_ptr<server::Responder> r) {
    service->handle(std::move(req), std::move(r));
  });
  // One registry: the service renders it at /metrics; the engine, the transport, the process and the state write it.
  auto registry = service->metrics();
  metrics::register_process_metrics(*registry, CITADEL_VERSION, CITADEL_GIT_COMMIT);
  // Whenever NVML loads, whatever the model's device: a CPU-serving process on a GPU host still reports the cards.
  metrics::register_gpu_metrics(*registry);
  api::add_state_collectors(*registry, audit_log, access->state ? access->state->keys.get() : nullptr);
  api::add_key_age_collector(*registry, access->state.get());
  {
    auto* open = registry->gauge("citadel:http_connections_open", "Open client connections.")->get();
    auto* conns = registry->counter("citadel:http_connections_total", "Client connections accepted.")->get();
    auto* reqs = registry->counter("citadel:http_transport_requests_total", "HTTP requests parsed by the transport.")
                     ->get();
    auto* tls_fail = registry->counter("citadel:tls_handshake_failures_total",
                                       "TLS handshakes that failed (timeouts and refused client certificates).")->get();
    registry->add_collector([&http, open, conns, reqs, tls_fail] {
      const auto s = http.stats();
      tls_fail->set_total(static_cast<double>(s.tls_handshake_failures));
      open->set(static_cast<double>(s.connections_open));
      conns->set_total(static_cast<double>(s.connections_total));
      reqs->set_total(static_cast<double>(s.requests_total));
    });
    // The "transport" object of /api/v1/stats: the same series (the service collects before it reads).
    service->set_extra_stats([open, conns, reqs] {
      return nlohmann::json{{"connections_open", static_cast<int64_t>(open->value())},
                            {"connections_total", static_cast<int64_t>(conns->value())},
                            {"requests_total", static_cast<int64_t>(reqs->value())}};
    });
  }
  st = http.start();
  if (!st.ok()) {
    serve_error("%s", st.message().c_str());
    return 1;
  }

  // systemd (Type=notify): READY=1 once serving, WATCHDOG=1 from the engine loop, STOPPING=1 at shutdown.
  auto notifier = std::make_shared<server::ServiceNotifier>();
  if (auto n = server::ServiceNotifier::from_environment(); n.ok()) {
    *notifier = std::move(*n);
  } else {
    log_warn("service manager notifications off: " + n.status().message());
  }
  if (notifier->enabled()) {
    log_info("service manager: notifying " + notifier->address() +
             (notifier->watchdog_ping_every().count() > 0
                  ? "; watchdog pings every " + std::to_string(notifier->watchdog_ping_every().count()) +
                        " ms from the engine loop"
                  : "; no watchdog"));
    (void)notifier->notify("STATUS=loading the model");
  }

  // The models to serve: the --model flags (names paired by position), else the config file's models: list, else
  // the one model. The first is loaded below as before and is the default.
  std::vector<server::ModelEntry> models = cfg.models;
  if (!flags.models.empty()) {
    models.clear();
    for (size_t i = 0; i < flags.models.size(); ++i) {
      server::ModelEntry e;
      e.model = flags.models[i];
      if (i < flags.served_names.size()) e.served_model_name = flags.served_names[i];
      if (i < flag_devices.size()) e.cuda_device = flag_devices[i];
      models.push_back(std::move(e));
    }
  }
  if (models.empty()) {
    server::ModelEntry e;
    e.model = cfg.model, e.served_model_name = cfg.served_model_name;
    models.push_back(std::move(e));
  }
  api::ModelLoadOptions lo;
  lo.model = cfg.model;
  if (notifier->watchdog_ping_every().count() > 0) {
    // From the engine thread: a hung or failed engine stops pinging and the manager restarts the process.
    lo.heartbeat_every = notifier->watchdog_ping_every();
    lo.heartbeat = [notifier] {
      if (Status ns = notifier->notify("WATCHDOG=1"); !ns.ok()) log_warn("watchdog ping: " + ns.message());
    };
  }
  lo.models_dir = cfg.models_dir;
  lo.served_model_name = cfg.served_model_name;
  lo.chat_template_file = cfg.chat_template;
  lo.temperature = cfg.temperature, lo.top_p = cfg.top_p;
  lo.max_context = cfg.max_context;
  lo.compute_threads = cfg.threads;
  lo.device = cfg.device;
  lo.cuda_weights = cfg.cuda_weights;
  lo.cuda_device = cfg.cuda_device;
  lo.tensor_parallel = cfg.tensor_parallel;
  lo.cpu_precision = cfg.cpu_precision;
  lo.key_file = cfg.key_file;
  lo.key_max_age_days = cfg.key_max_age_days;
  lo.engine.max_waiting = cfg.max_queue;
  lo.engine.max_seqs = cfg.max_seqs;  // 0: per device (api::resolve_step_limits)
  lo.engine.max_batched_tokens = cfg.max_batched_tokens;
  lo.engine.max_prefill_tokens = cfg.max_prefill_tokens;  // 0: per device (api::resolve_step_limits)
  lo.engine.max_step_ms = cfg.max_step_ms;
  lo.engine.admission_delay_steps = cfg.admission_delay_steps;
  lo.engine.request_timeout_s = cfg.request_timeout_s;
  lo.engine.device_sampling = cfg.sampling == "device";
  lo.engine.overlap_steps = cfg.overlap_steps == "on";
  // kv_memory_mb 0: the runner sizes its pool: CUDA from the card's free memory, the CPU from the host's available
  // memory (runtime::cpu_kv_budget_bytes).
  const int kv_mb = cfg.kv_memory_mb;
  lo.engine.kv_memory_bytes = static_cast<size_t>(kv_mb) << 20;
  lo.engine.kv_memory_fraction = kv_mb == 0 ? cfg.kv_memory_percent / 100.0 : 0.0;
  lo.prefix_cache_scope = cfg.prefix_cache_scope;
  lo.embedding_max_request_tokens = cfg.embedding_max_request_tokens;
  lo.embedding_truncate = cfg.embedding_truncate;
  lo.engine.metrics = registry;
  const double t0 = now_seconds();
  api::ModelLoadOptions first = lo;
  apply_model_entry(models[0], &first);
  auto host = load_more(first, models[0].model, models[0].served_model_name, models[0].sha256);
  if (!host.ok()) {
    serve_error("%s", host.status().message().c_str());
    http.stop();
    return 1;
  }
  log_info("model '" + (*host)->served_name + "' loaded in " + std::to_string(now_seconds() - t0) +
           " s; context " + std::to_string((*host)->max_context) + " tokens; ready");
  service->set_host(*host);
  for (size_t i = 1; i < models.size(); ++i) {
    api::ModelLoadOptions o = lo;
    apply_model_entry(models[i], &o);
    auto more = load_more(o, models[i].model, models[i].served_model_name, models[i].sha256);
    Status added = more.ok() ? service->models().add(*more) : more.status();
    if (!added.ok()) {
      serve_error("model %s: %s", models[i].model.c_str(), added.message().c_str());
      http.stop();
      return 1;
    }
    log_info("model '" + (*more)->served_name + "' loaded; context " + std::to_string((*more)->max_context) +
             " tokens");
    audit_server_event("model.load", {{"model", (*more)->served_name}, {"path", (*more)->path}});
  }
  // POST /admin/v1/models: like a later --model, with the request's model, name, context and sha256 pin.
  service->set_model_loader([lo](const nlohmann::json& spec) -> Result<std::shared_ptr<api::ModelHost>> {
    api::ModelLoadOptions o = lo;
    if (spec.contains("max_context") && spec["max_context"].is_number_integer())
      o.max_context = spec["max_context"].get<int>();
    if (spec.contains("chat_template") && spec["chat_template"].is_string())
      o.chat_template_file = spec["chat_template"].get<std::string>();
    if (spec.contains("threads") && spec["threads"].is_number_integer()) {
      const int t = spec["threads"].get<int>();
      if (t < 0 || t > 1024) return InvalidArgument("threads must be in [0, 1024]");
      o.compute_threads = t;
    }
    if (spec.contains("memory_mb") && spec["memory_mb"].is_number_integer())
      o.memory_budget_mb = spec["memory_mb"].get<int64_t>();
    if (spec.contains("embedding_max_request_tokens") && spec["embedding_max_request_tokens"].is_number_integer())
      o.embedding_max_request_tokens = spec["embedding_max_request_tokens"].get<int64_t>();
    if (spec.contains("cuda_device") && spec["cuda_device"].is_number_integer())
      o.cuda_device = spec["cuda_device"].get<int>();
    if (spec.contains("embedding_truncate") && spec["embedding_truncate"].is_string())
      o.embedding_truncate = spec["embedding_truncate"].get<std::string>();
    const std::string sha = spec.contains("sha256") && spec["sha256"].is_string() ? spec["sha256"].get<std::string>()
                                                                                  : "";
    return load_more(o, spec.at("model").get<std::string>(), spec.at("served_model_name").get<std::string>(), sha);
  });
  if (access->state) {
    // The model key was checked as it was loaded; from now on the daily check covers it too.
    access->state->check_key_ages(static_cast<int64_t>(std::time(nullptr)));
    if (!(*host)->key_id.empty()) access->state->watch_key("model key", (*host)->key_id, (*host)->key_created_unix);
  }
  // server.start records the effective configuration (digest + non-secret values); a difference from the previous
  // start's is recorded as config.change.
  const auto fingerprint = server::config_fingerprint(cfg);
  const std::string instance = instance_name(cfg);
  std::optional<nlohmann::json> config_change;
  if (audit_log) {
    auto prev = api::previous_server_start(*access->state->db, instance);
    if (prev.ok()) config_change = api::config_change_detail(*prev, fingerprint);
    else log_warn("audit: cannot read the previous server.start: " + prev.status().message());
  }
  nlohmann::json start = {{"device", cfg.device}, {"auth", cfg.auth}, {"tls", !cfg.tls_cert.empty()},
                          {"audit_fail_closed", cfg.audit_fail_closed == "on"},
                          {"audit_store_content", cfg.audit_store_content == "on"},
                          {"state", access->state ? access->state->db->describe() : "none"}};
  start.update(api::config_start_detail(instance, fingerprint));
  audit_server_event("server.start", std::move(start));
  if (config_change) audit_server_event("config.change", std::move(*config_change));
  audit_server_event("model.load", {{"model", (*host)->served_name}, {"path", (*host)->path}});
  // Machine-readable lines (tests read the port from the first when --port 0), printed only once requests can be
  // served: the port is bound before the model loads (so a taken port fails fast) but not announced until now.
  std::printf("citadel serve: listening on %s://%s:%d\n", cfg.tls_cert.empty() ? "http" : "https", cfg.host.c_str(),
              http.port());
  std::printf("citadel serve: ready\n");
  std::fflush(stdout);
  if (Status ns = notifier->notify("READY=1\nSTATUS=serving " + (*host)->served_name + " on port " +
                                   std::to_string(http.port()));
      !ns.ok())
    log_warn("service manager: " + ns.message());

  int sig = 0;
  for (;;) {
    sigwait(&sigs, &sig);
    if (sig != SIGHUP) break;
    if (cfg.tls_cert.empty()) {
      log_info("SIGHUP: nothing to reload (no TLS)");
      continue;
    }
    const Status rs = http.reload_tls();
    if (rs.ok()) log_info("SIGHUP: TLS certificate reloaded; new connections use it");
    else log_warn("SIGHUP: TLS reload failed, keeping the old certificate: " + rs.message());
  }
  log_info(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + "; draining for up to " +
           std::to_string(cfg.drain_timeout_s) + " s");
  (void)notifier->notify("STOPPING=1\nSTATUS=draining");
  service->set_draining(true);
  http.stop_accepting();
  http.close_idle();
  const auto drain_until = std::chrono::steady_clock::now() + std::chrono::seconds(cfg.drain_timeout_s);
  for (const auto& h : service->models().hosts()) {
    if (h->engine) h->engine->stop(drain_until);
    if (h->embedder) h->embedder->stop(drain_until);
  }
  // Let the last responses reach their sockets.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (http.stats().connections_open > 0 && std::chrono::steady_clock::now() < until) {
    http.close_idle();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  http.stop();
  const auto served = service->models().hosts();
  service->set_host(nullptr);
  for (const auto& h : served) audit_server_event("model.unload", {{"model", h->served_name}, {"path", h->path}});
  audit_server_event("server.stop", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
  if (audit_log && !audit_log->flush().ok()) log_error("audit log: the last records could not be written");
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
    if (k.name == std::string("model") || k.name == std::string("served_model_name") ||
        k.name == std::string("cuda_device")) {
      // Repeatable: one server, several models (the first is the default); names and device ids pair with models by
      // position (the first is also the server-wide value, which models without a pair keep).
      opt->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
      opt->each([flags, name = std::string(k.name)](const std::string& v) {
        auto& list = name == "model" ? flags->models : name == "served_model_name" ? flags->served_names
                                                                                   : flags->cuda_devices;
        if (list.empty()) flags->values[name] = v;
        list.push_back(v);
      });
      continue;
    }
    opt->each([flags, name = k.name](const std::string& v) { flags->values[name] = v; });
  }
  return [flags] { return run_serve(*flags); };
});

}  // namespace serve_cmd
