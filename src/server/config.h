// ServeConfig: every option of `citadel serve`, settable (highest first) by command-line flag, CITADEL_* environment
// variable, YAML config file, or default. Keys use underscores in the file (max_queue), dashes on the command line
// (--max-queue) and upper case in the environment (CITADEL_MAX_QUEUE).
// The config file is YAML (read with libyaml): a mapping of these keys to scalars, plus an optional `models:` list of
// mappings, one per served model (model, served_model_name, max_context, chat_template, sha256, threads, memory_mb,
// embedding_max_request_tokens, embedding_truncate, cuda_device), the first being the default model; `model:` and
// `models:` are exclusive. Flags --model (repeatable) replace the file's models.
// Thread-safety: plain data and pure functions.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/status.h"

namespace citadel::server {

// One served model of the `models:` list (or of the repeated --model flags).
struct ModelEntry {
  std::string model;              // PATH | catalogue NAME
  std::string served_model_name;  // "" = the catalogue name or the file stem
  int max_context = 0;            // 0 = the server's max_context
  std::string chat_template;      // "" = the server's chat_template
  std::string sha256;             // "" = not pinned; else the file must hash to this
  int threads = 0;                // this model's own CPU kernel threads; 0 = the server's `threads`
  int memory_mb = 0;              // > 0: weights + KV must fit this budget, else the model is refused at load
  int embedding_max_request_tokens = 0;  // embedding models: tokens per /v1/embeddings request; 0 = the server's
  std::string embedding_truncate;        // embedding models: on | off; "" = the server's
  int cuda_device = -1;                  // device cuda: this model's CUDA device id; -1 = the server's cuda_device
};

struct ServeConfig {
  std::string model;                 // PATH | catalogue NAME | debug:bytes (required)
  std::string models_dir;            // where catalogue names live ("" = $CITADEL_MODELS or ~/.cache/citadel/models)
  std::string device = "cpu";        // cpu | cuda
  std::string cuda_weights = "bf16"; // cuda weight format: bf16 | int8 | int4 | fp8 | f32 (exact)
  int cuda_device = 0;               // cuda: the CUDA device id the models run on (per model: ModelEntry)
  int tensor_parallel = 1;           // ranks each model is split over (model/shard.h); cpu: threads of this process
  std::string cpu_precision = "auto";  // cpu: fast | exact (f32, HF-identical) | auto (exact up to 1B parameters;
                                       // embedding models: bf16 GEMMs on AVX512_BF16 CPUs unless exact)
  std::string sampling = "device";   // cuda: device (only ids leave the GPU) | host (logits to the host Sampler)
  std::string overlap_steps = "on";  // cuda: on (step N+1 prepared while the GPU runs step N) | off
  std::string host = "127.0.0.1";
  int port = 8080;
  int max_queue = 256;               // engine admission bound (waiting requests); beyond: 429
  int max_seqs = 0;                  // sequences decoded together; 0 = per device (api::resolve_step_limits)
  int max_batched_tokens = 0;        // tokens per engine step (decode + prefill chunks); 0 = per device
  int max_prefill_tokens = 0;        // prompt tokens per engine step (decode rows not counted); 0 = per device
  int max_step_ms = 0;               // > 0: prefill chunks cut to keep a step (a token's time) within this
  int admission_delay_steps = 0;     // engine/scheduler.h admission grouping; 0: off
  int threads = 0;                   // compute threads (0 = all cores)
  int io_threads = 2;                // HTTP I/O threads
  std::string served_model_name;     // "" = the model's name
  std::string chat_template;         // "" = the model's; else a builtin name or a file
  std::string temperature, top_p;    // for requests that omit them ("" = the model's metadata, else 0.7 / 0.9)
  int max_context = 0;               // 0 = the model's
  int kv_memory_mb = 0;              // KV cache budget; 0: automatic (CUDA: from the card, CPU: 1/4 of available, <= 8 GiB)
  int kv_memory_percent = 90;        // CUDA, kv_memory_mb 0: share of the card for weights + activations + KV
  std::string prefix_cache_scope = "tenant";  // tenant: tenants never share cached KV blocks | global: they do
  // Embedding models (docs/API.md "Embeddings"): the most tokens one /v1/embeddings request may hold (400 beyond),
  // and whether an input longer than the model reads is truncated (on) or refused with a 400 (off).
  int embedding_max_request_tokens = 300000;
  std::string embedding_truncate = "on";
  int max_body_mb = 8;               // 413 beyond
  int idle_timeout_s = 60;
  int request_timeout_s = 600;       // engine deadline per request
  int drain_timeout_s = 30;          // graceful shutdown: running requests get this long
  int max_connections = 10000;
  std::string log_level = "info";
  std::string log_format = "text";  // text: `[citadel info] message` | json: one JSON object per line (docs/OPERATIONS.md)
  // Identity and access (docs/SECURITY.md).
  std::string data_dir;              // "" = $CITADEL_DATA_DIR, $XDG_DATA_HOME/citadel or ~/.local/share/citadel
  std::string state_db;              // "" = <data_dir>/state.db (SQLite); or postgresql://... (shared by replicas)
  std::string instance_name;         // this server among replicas sharing state_db ("" = hostname:data_dir)
  std::string auth = "on";           // on | off (off: every caller is an anonymous admin; never in production)
  std::string admin_key_file;        // first start: the bootstrap admin key is read from here instead of generated
  std::string oidc_issuer;           // set: bearer JWTs from this issuer are accepted (with oidc_jwks)
  std::string oidc_audience;         // comma-separated accepted audiences
  std::string oidc_jwks;             // JWKS file path or http(s) URL (Keycloak: .../protocol/openid-connect/certs)
  std::string oidc_role_claim = "citadel_role";   // dotted path, string or array (realm_access.roles)
  std::string oidc_tenant_claim = "citadel_tenant";
  std::string oidc_default_role;     // role for tokens without a recognised role claim ("" = refuse them)
  std::string tls_cert;              // PEM certificate chain; with tls_key: HTTPS only, TLS 1.3
  std::string tls_key;               // PEM private key
  std::string tls_client_ca;         // PEM CA bundle: clients must present a certificate it signed
  std::string key_file;              // key of an encrypted model (.enc): PATH | env:NAME | cmd:PROG ARGS
  std::string audit = "on";          // on | off: the tamper-evident audit log
  std::string audit_key;             // its Ed25519 signing key ("" = <data_dir>/audit.key); replicas share one
  std::string audit_fail_closed = "off";  // on: refuse requests (503) while the audit log cannot be written
  int audit_retention_days = 180;    // records older than this are purged (the chain stays verifiable)
  // PII masking (crypto/pii.h): operator patterns "name=regex;name2=regex2" (parse_pii_pattern_list), masked as
  // [NAME] in logs, audit text and the prompts of keys or tenants with a PII policy; checked at start.
  std::string pii_extra_patterns;
  int key_max_age_days = 90;         // warn (log) when the audit signing key or the model key is older
  std::string audit_store_content = "off";  // on: prompts and outputs stored encrypted in the audit log
  std::string audit_content_key;     // its key spec (PATH | env:NAME | cmd:PROG ARGS); required when on
  // The config file's `models:` list (empty: the one model of `model`); the first entry is also model /
  // served_model_name above.
  std::vector<ModelEntry> models;
};

struct ConfigKey {
  std::string name;  // file key (underscores)
  std::string help;
};
// Every key, in print order.
const std::vector<ConfigKey>& config_keys();

// Sets one key from text; error names the key, the source and the value.
Status set_config_value(ServeConfig* c, const std::string& key, const std::string& value, const std::string& source);

// A parsed config file: the top-level scalar keys (dashes normalised to underscores) and the `models:` entries.
struct ConfigFile {
  std::map<std::string, std::string> values;
  std::vector<ModelEntry> models;
};
// Errors name the file and line: not YAML, a top level that is not a mapping, a nested value under a plain key, a
// `models:` entry without `model` or with an unknown key.
Result<ConfigFile> parse_config_yaml(const std::string& text, const std::string& name);
Result<ConfigFile> read_config_file(const std::string& path);

// CITADEL_<KEY> variables present in the environment (env: a NULL-terminated environ-style array).
std::map<std::string, std::string> env_overrides(char** env);

// Layers: defaults < file < env < flags. Unknown keys in the file are errors (typos should not pass silently).
Status build_config(const std::string& config_file, char** env, const std::map<std::string, std::string>& flags,
                    ServeConfig* out);

// A database URL or libpq conninfo with its password replaced by ***.
std::string mask_password(std::string url_or_conninfo);

// Keys whose value is a key spec or key file path (PATH | env:NAME | cmd:PROG ARGS): never key material itself.
bool is_key_spec_key(const std::string& name);
// A key spec as it may be recorded: a path or env:NAME as given; cmd:PROG without its arguments (which may hold a
// token).
std::string describe_key_spec(const std::string& spec);

// The effective configuration as recorded by the audit log's server.start / config.change: every key except the
// per-run port, log_level and log_format, database passwords masked, key specs through describe_key_spec(). No key bytes.
std::map<std::string, std::string> config_fingerprint(const ServeConfig& c);

// The effective configuration as YAML text (no secrets in here today; keys named *key*/*secret*/*token* are masked).
std::string config_to_yaml(const ServeConfig& c);

}  // namespace citadel::server
