#include "server/config.h"

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <yaml.h>

namespace citadel::server {

namespace {

enum class Kind { kString, kInt };
struct Field {
  const char* name;
  Kind kind;
  std::string ServeConfig::*s;
  int ServeConfig::*i;
  int lo, hi;
  const char* help;
};

const std::vector<Field>& fields() {
  static const std::vector<Field> f = {
      {"model", Kind::kString, &ServeConfig::model, nullptr, 0, 0, "model PATH, catalogue NAME or debug:bytes"},
      {"models_dir", Kind::kString, &ServeConfig::models_dir, nullptr, 0, 0, "directory of pulled models"},
      {"device", Kind::kString, &ServeConfig::device, nullptr, 0, 0, "cpu or cuda"},
      {"cpu_precision", Kind::kString, &ServeConfig::cpu_precision, nullptr, 0, 0,
       "auto (cpu: exact up to 1B parameters, else fast), fast, or exact: f32 math (cpu: f32 weights; cuda: f32 "
       "activations and KV); cpu embedding models: auto and fast run the GEMMs in bf16 where the CPU has "
       "AVX512_BF16, exact in f32"},
      {"cuda_device", Kind::kInt, nullptr, &ServeConfig::cuda_device, 0, 1023,
       "cuda: the CUDA device id the model runs on (0-based; per model: cuda_device in models:, or one --cuda-device "
       "per --model); an id the machine lacks is refused at load"},
      {"cuda_weights", Kind::kString, &ServeConfig::cuda_weights, nullptr, 0, 0, "cuda: bf16, int8, int4, fp8 or f32"},
      {"tensor_parallel", Kind::kInt, nullptr, &ServeConfig::tensor_parallel, 1, 64,
       "ranks each model is split over (heads, FFN and vocabulary; sums exchanged per layer): cpu: threads of this "
       "process; cuda: one GPU per rank from cuda_device on, over NCCL (MoE layers: experts split across ranks)"},
      {"sampling", Kind::kString, &ServeConfig::sampling, nullptr, 0, 0,
       "cuda: device (only token ids leave the GPU) or host (logits to the host sampler)"},
      {"overlap_steps", Kind::kString, &ServeConfig::overlap_steps, nullptr, 0, 0,
       "cuda with device sampling: on (the host schedules and launches step N+1 while the GPU runs step N) or off"},
      {"host", Kind::kString, &ServeConfig::host, nullptr, 0, 0, "listen address"},
      {"port", Kind::kInt, nullptr, &ServeConfig::port, 0, 65535, "listen port (0 = any free port)"},
      {"max_queue", Kind::kInt, nullptr, &ServeConfig::max_queue, 1, 1 << 20, "waiting requests before 429"},
      {"max_seqs", Kind::kInt, nullptr, &ServeConfig::max_seqs, 0, 4096,
       "sequences decoded together (0 = per device: cpu 64, cuda 256)"},
      {"max_batched_tokens", Kind::kInt, nullptr, &ServeConfig::max_batched_tokens, 0, 65536,
       "tokens per engine step, decode tokens and prefill chunks together (0 = per device: cpu 2048, cuda 2048)"},
      {"max_prefill_tokens", Kind::kInt, nullptr, &ServeConfig::max_prefill_tokens, 0, 65536,
       "prompt tokens per engine step, decode rows not counted (0 = per device: cpu only max_batched_tokens, cuda "
       "512: the running sequences' decode rows ride along in more steps)"},
      {"max_step_ms", Kind::kInt, nullptr, &ServeConfig::max_step_ms, 0, 600000,
       "time target of one engine step, so of each output token while prompts stream in: prefill chunks are cut to "
       "what the measured step costs allow (never below 64 tokens a step); 0 = only max_batched_tokens"},
      {"admission_delay_steps", Kind::kInt, nullptr, &ServeConfig::admission_delay_steps, 0, 1000,
       "short prompts arriving while many sequences decode are admitted in groups, each waiting at most this many "
       "engine steps (fewer steps that mix prefill into decode); 0 = admit each at once"},
      {"threads", Kind::kInt, nullptr, &ServeConfig::threads, 0, 1024, "compute threads (0 = all cores)"},
      {"io_threads", Kind::kInt, nullptr, &ServeConfig::io_threads, 1, 64, "HTTP I/O threads"},
      {"served_model_name", Kind::kString, &ServeConfig::served_model_name, nullptr, 0, 0, "model id in the API"},
      {"chat_template", Kind::kString, &ServeConfig::chat_template, nullptr, 0, 0, "builtin name or file"},
      {"temperature", Kind::kString, &ServeConfig::temperature, nullptr, 0, 0,
       "default temperature of requests that omit it (default: the model's metadata, else 0.7)"},
      {"top_p", Kind::kString, &ServeConfig::top_p, nullptr, 0, 0,
       "default top_p of requests that omit it (default: the model's metadata, else 0.9)"},
      {"max_context", Kind::kInt, nullptr, &ServeConfig::max_context, 0, 1 << 24, "context limit (0 = model's)"},
      {"kv_memory_mb", Kind::kInt, nullptr, &ServeConfig::kv_memory_mb, 0, 1 << 24,
       "KV cache budget (MiB); 0 = automatic: CUDA sizes the pool from the card (kv_memory_percent), the CPU takes a "
       "quarter of the available memory, at most 8 GiB"},
      {"kv_memory_percent", Kind::kInt, nullptr, &ServeConfig::kv_memory_percent, 10, 99,
       "CUDA with kv_memory_mb 0: percent of the card's memory for weights, activations and KV together"},
      {"prefix_cache_scope", Kind::kString, &ServeConfig::prefix_cache_scope, nullptr, 0, 0,
       "tenant (each tenant its own prefix cache: no shared KV blocks, no timing side channel) or global (tenants "
       "share cached prompt prefixes)"},
      {"embedding_max_request_tokens", Kind::kInt, nullptr, &ServeConfig::embedding_max_request_tokens, 1,
       1 << 30, "embedding models: most tokens (after truncation, specials included) of one /v1/embeddings request; "
       "400 beyond"},
      {"embedding_truncate", Kind::kString, &ServeConfig::embedding_truncate, nullptr, 0, 0,
       "embedding models: on (an input longer than the model reads is cut, as sentence-transformers does) or off "
       "(such an input is a 400 context_length_exceeded)"},
      {"max_body_mb", Kind::kInt, nullptr, &ServeConfig::max_body_mb, 1, 1024, "request body limit (413 beyond)"},
      {"idle_timeout_s", Kind::kInt, nullptr, &ServeConfig::idle_timeout_s, 1, 86400, "keep-alive idle timeout"},
      {"request_timeout_s", Kind::kInt, nullptr, &ServeConfig::request_timeout_s, 1, 86400, "generation deadline"},
      {"drain_timeout_s", Kind::kInt, nullptr, &ServeConfig::drain_timeout_s, 0, 86400, "shutdown drain deadline"},
      {"max_connections", Kind::kInt, nullptr, &ServeConfig::max_connections, 1, 1 << 20, "open connections"},
      {"log_level", Kind::kString, &ServeConfig::log_level, nullptr, 0, 0, "debug|info|warn|error"},
      {"log_format", Kind::kString, &ServeConfig::log_format, nullptr, 0, 0,
       "text (`[citadel info] message`) or json (one object per line: ts, level, msg, component, request_id)"},
      {"data_dir", Kind::kString, &ServeConfig::data_dir, nullptr, 0, 0,
       "state directory (keys, quotas; default ~/.local/share/citadel)"},
      {"state_db", Kind::kString, &ServeConfig::state_db, nullptr, 0, 0,
       "state database: SQLite path or postgresql:// URL (default DATA_DIR/state.db)"},
      {"instance_name", Kind::kString, &ServeConfig::instance_name, nullptr, 0, 0,
       "this server's name among replicas sharing one state_db (default hostname:data_dir): each start's "
       "config.change compares with this instance's previous start only"},
      {"auth", Kind::kString, &ServeConfig::auth, nullptr, 0, 0, "on (API keys / OIDC, roles, quotas) or off"},
      {"admin_key_file", Kind::kString, &ServeConfig::admin_key_file, nullptr, 0, 0,
       "first start: read the bootstrap admin key from this file (also $CITADEL_BOOTSTRAP_ADMIN_KEY)"},
      {"oidc_issuer", Kind::kString, &ServeConfig::oidc_issuer, nullptr, 0, 0, "accept OIDC bearer JWTs of this issuer"},
      {"oidc_audience", Kind::kString, &ServeConfig::oidc_audience, nullptr, 0, 0, "accepted audiences (comma list)"},
      {"oidc_jwks", Kind::kString, &ServeConfig::oidc_jwks, nullptr, 0, 0, "JWKS file or http(s) URL"},
      {"oidc_role_claim", Kind::kString, &ServeConfig::oidc_role_claim, nullptr, 0, 0,
       "claim holding the role (dotted path; string or array)"},
      {"oidc_tenant_claim", Kind::kString, &ServeConfig::oidc_tenant_claim, nullptr, 0, 0, "claim holding the tenant"},
      {"oidc_default_role", Kind::kString, &ServeConfig::oidc_default_role, nullptr, 0, 0,
       "role of tokens without one (empty: refuse)"},
      {"tls_cert", Kind::kString, &ServeConfig::tls_cert, nullptr, 0, 0, "TLS certificate chain (PEM): HTTPS, TLS 1.3"},
      {"tls_key", Kind::kString, &ServeConfig::tls_key, nullptr, 0, 0, "TLS private key (PEM)"},
      {"tls_client_ca", Kind::kString, &ServeConfig::tls_client_ca, nullptr, 0, 0,
       "require client certificates signed by this CA (PEM)"},
      {"key_file", Kind::kString, &ServeConfig::key_file, nullptr, 0, 0,
       "key of an encrypted model (.enc): PATH | env:NAME | cmd:PROG ARGS"},
      {"audit", Kind::kString, &ServeConfig::audit, nullptr, 0, 0, "on or off: the tamper-evident audit log"},
      {"audit_key", Kind::kString, &ServeConfig::audit_key, nullptr, 0, 0,
       "audit signing key (Ed25519 PEM, created if absent; default DATA_DIR/audit.key; replicas share one)"},
      {"audit_fail_closed", Kind::kString, &ServeConfig::audit_fail_closed, nullptr, 0, 0,
       "on: refuse requests while the audit log cannot be written (off: serve and count the failures)"},
      {"audit_retention_days", Kind::kInt, nullptr, &ServeConfig::audit_retention_days, 1, 36500,
       "audit records are kept this long (6 years = 2190)"},
      {"pii_extra_patterns", Kind::kString, &ServeConfig::pii_extra_patterns, nullptr, 0, 0,
       "extra PII patterns, name=ECMAScript-regex;... (masked as [NAME] in logs, audit and PII-policy prompts)"},
      {"key_max_age_days", Kind::kInt, nullptr, &ServeConfig::key_max_age_days, 1, 36500,
       "warn at start and daily when the audit signing key or the model key is older than this"},
      {"audit_store_content", Kind::kString, &ServeConfig::audit_store_content, nullptr, 0, 0,
       "on: store inference prompts and outputs in the audit log, AES-256-GCM encrypted under audit_content_key"},
      {"audit_content_key", Kind::kString, &ServeConfig::audit_content_key, nullptr, 0, 0,
       "key for stored content (required with audit_store_content on): PATH | env:NAME | cmd:PROG ARGS"},
  };
  return f;
}

std::string normalize_key(std::string k) {
  for (char& c : k) c = c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return k;
}

}  // namespace

const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> k;
    for (const auto& f : fields()) k.push_back({f.name, f.help});
    return k;
  }();
  return keys;
}

Status set_config_value(ServeConfig* c, const std::string& key, const std::string& value, const std::string& source) {
  const std::string k = normalize_key(key);
  for (const auto& f : fields()) {
    if (k != f.name) continue;
    if (f.kind == Kind::kString) {
      c->*(f.s) = value;
      return OkStatus();
    }
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || errno != 0 || v < f.lo || v > f.hi)
      return InvalidArgument(source + ": " + f.name + " must be an integer in [" + std::to_string(f.lo) + ", " +
                             std::to_string(f.hi) + "], got '" + value + "'");
    c->*(f.i) = static_cast<int>(v);
    return OkStatus();
  }
  return InvalidArgument(source + ": unknown option '" + key + "'");
}

namespace {

// libyaml's document API: the file is loaded into a node graph (anchors resolved), walked here.
class YamlDoc {
 public:
  YamlDoc() { yaml_parser_initialize(&parser_); }
  ~YamlDoc() {
    if (loaded_) yaml_document_delete(&doc_);
    yaml_parser_delete(&parser_);
  }
  Status load(const std::string& text, const std::string& name) {
    yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text.data()), text.size());
    if (!yaml_parser_load(&parser_, &doc_)) {
      return InvalidArgument(name + ":" + std::to_string(parser_.problem_mark.line + 1) + ": not valid YAML (" +
                             (parser_.problem ? parser_.problem : "parse error") + ")");
    }
    loaded_ = true;
    return OkStatus();
  }
  yaml_node_t* root() { return yaml_document_get_root_node(&doc_); }
  yaml_node_t* node(int i) { return yaml_document_get_node(&doc_, i); }

 private:
  yaml_parser_t parser_;
  yaml_document_t doc_{};
  bool loaded_ = false;
};

std::string at(const std::string& name, const yaml_node_t* n) {
  return name + ":" + std::to_string(n->start_mark.line + 1);
}

// A scalar's text; plain ~, null and the empty value are "" (quoted ones are taken as written).
Result<std::string> scalar(const yaml_node_t* n, const std::string& where, const std::string& key) {
  if (n->type != YAML_SCALAR_NODE) return InvalidArgument(where + ": '" + key + "' must be a single value");
  std::string v(reinterpret_cast<const char*>(n->data.scalar.value), n->data.scalar.length);
  if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && (v == "~" || v == "null")) v.clear();
  return v;
}

// The integer keys of a models: entry and their upper bounds (lower: 0); null for another key.
int* int_field(ModelEntry* e, const std::string& key, long* hi) {
  *hi = 1 << 30;
  if (key == "max_context") return *hi = 1 << 24, &e->max_context;
  if (key == "threads") return *hi = 1024, &e->threads;
  if (key == "cuda_device") return *hi = 1023, &e->cuda_device;
  if (key == "memory_mb") return &e->memory_mb;
  if (key == "embedding_max_request_tokens") return &e->embedding_max_request_tokens;
  return nullptr;
}

Result<ModelEntry> model_entry(YamlDoc& d, yaml_node_t* m, const std::string& name) {
  const std::string where = at(name, m);
  if (m->type != YAML_MAPPING_NODE) return InvalidArgument(where + ": each models: entry is a mapping (model: ...)");
  ModelEntry e;
  for (yaml_node_pair_t* p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; ++p) {
    ASSIGN_OR_RETURN(std::string key, scalar(d.node(p->key), where, "key"));
    key = normalize_key(key);
    ASSIGN_OR_RETURN(std::string v, scalar(d.node(p->value), at(name, d.node(p->value)), key));
    if (key == "model") e.model = v;
    else if (key == "served_model_name") e.served_model_name = v;
    else if (key == "chat_template") e.chat_template = v;
    else if (key == "sha256") e.sha256 = v;
    else if (key == "embedding_truncate") {
      if (v != "on" && v != "off")
        return InvalidArgument(where + ": embedding_truncate must be on or off, got '" + v + "'");
      e.embedding_truncate = v;
    } else if (long hi = 0; int* field = int_field(&e, key, &hi)) {
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || n < 0 || n > hi)
        return InvalidArgument(where + ": " + key + " must be an integer in [0, " + std::to_string(hi) + "], got '" +
                               v + "'");
      *field = static_cast<int>(n);
    } else {
      return InvalidArgument(where + ": unknown key '" + key + "' in a models: entry (model, served_model_name, " +
                             "max_context, chat_template, sha256, threads, memory_mb, embedding_max_request_tokens, "
                             "embedding_truncate, cuda_device)");
    }
  }
  if (e.model.empty()) return InvalidArgument(where + ": a models: entry needs model: PATH|NAME");
  return e;
}

}  // namespace

Result<ConfigFile> parse_config_yaml(const std::string& text, const std::string& name) {
  YamlDoc d;
  RETURN_IF_ERROR(d.load(text, name));
  ConfigFile out;
  yaml_node_t* root = d.root();
  if (!root) return out;  // an empty file
  if (root->type != YAML_MAPPING_NODE) return InvalidArgument(at(name, root) + ": expected `key: value` lines");
  for (yaml_node_pair_t* p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; ++p) {
    yaml_node_t* k = d.node(p->key);
    yaml_node_t* v = d.node(p->value);
    ASSIGN_OR_RETURN(std::string key, scalar(k, at(name, k), "key"));
    key = normalize_key(key);
    if (key == "models") {
      if (v->type != YAML_SEQUENCE_NODE) return InvalidArgument(at(name, v) + ": models: is a list of models");
      for (yaml_node_item_t* i = v->data.sequence.items.start; i < v->data.sequence.items.top; ++i) {
        ASSIGN_OR_RETURN(ModelEntry e, model_entry(d, d.node(*i), name));
        out.models.push_back(std::move(e));
      }
      continue;
    }
    ASSIGN_OR_RETURN(out.values[key], scalar(v, at(name, v), key));
  }
  if (!out.models.empty() && out.values.count("model"))
    return InvalidArgument(name + ": give model: or models:, not both");
  return out;
}

Result<ConfigFile> read_config_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return IoError(path + ": cannot open the config file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_config_yaml(ss.str(), path);
}

std::map<std::string, std::string> env_overrides(char** env) {
  std::map<std::string, std::string> out;
  if (!env) return out;
  for (char** e = env; *e; ++e) {
    const std::string kv = *e;
    if (kv.rfind("CITADEL_", 0) != 0) continue;
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = normalize_key(kv.substr(8, eq - 8));
    for (const auto& f : fields())
      if (key == f.name) out[key] = kv.substr(eq + 1);
  }
  return out;
}

Status build_config(const std::string& config_file, char** env, const std::map<std::string, std::string>& flags,
                    ServeConfig* out) {
  ServeConfig c;
  std::string file = config_file;
  if (file.empty() && env)
    for (char** e = env; *e; ++e)
      if (std::string(*e).rfind("CITADEL_CONFIG=", 0) == 0) file = std::string(*e).substr(15);
  if (!file.empty()) {
    auto cf = read_config_file(file);
    if (!cf.ok()) return cf.status();
    for (const auto& [k, v] : cf->values) RETURN_IF_ERROR(set_config_value(&c, k, v, file));
    c.models = std::move(cf->models);
    if (!c.models.empty()) {
      c.model = c.models[0].model;
      c.served_model_name = c.models[0].served_model_name;
    }
  }
  for (const auto& [k, v] : env_overrides(env))
    RETURN_IF_ERROR(set_config_value(&c, k, v, "environment CITADEL_" + k));
  for (const auto& [k, v] : flags) RETURN_IF_ERROR(set_config_value(&c, k, v, "flag --" + k));
  if (c.model.empty()) return InvalidArgument("no model: give --model PATH|NAME (or model: in the config file)");
  *out = std::move(c);
  return OkStatus();
}

// A database URL or conninfo without its password ("postgresql://u:***@h/db", "password=***").
std::string mask_password(std::string v) {
  const size_t scheme = v.find("://");
  if (scheme != std::string::npos) {
    const size_t at = v.find('@', scheme);
    const size_t colon = v.find(':', scheme + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at) v.replace(colon + 1, at - colon - 1, "***");
  }
  const size_t pw = v.find("password=");
  if (pw != std::string::npos) {
    const size_t end = v.find(' ', pw);
    v.replace(pw + 9, (end == std::string::npos ? v.size() : end) - pw - 9, "***");
  }
  return v;
}

bool is_key_spec_key(const std::string& name) {
  return name == "tls_key" || name == "admin_key_file" || name == "key_file" || name == "audit_key" ||
         name == "audit_content_key";
}

std::string describe_key_spec(const std::string& spec) {
  if (spec.rfind("cmd:", 0) == 0) {
    const size_t space = spec.find(' ');
    return space == std::string::npos ? spec : spec.substr(0, space) + " ...";
  }
  return spec;  // a path, file:PATH or env:NAME: names the key, holds none of it
}

std::map<std::string, std::string> config_fingerprint(const ServeConfig& c) {
  std::map<std::string, std::string> out;
  for (const auto& f : fields()) {
    const std::string name = f.name;
    if (name == "port" || name == "log_level" || name == "log_format") continue;  // per-run (tests use --port 0) or cosmetic
    std::string v = f.kind == Kind::kString ? mask_password(c.*(f.s)) : std::to_string(c.*(f.i));
    if (is_key_spec_key(name)) v = describe_key_spec(v);
    out[name] = std::move(v);
  }
  return out;
}

std::string config_to_yaml(const ServeConfig& c) {
  std::string s;
  for (const auto& f : fields()) {
    const std::string name = f.name;
    std::string v = f.kind == Kind::kString ? mask_password(c.*(f.s)) : std::to_string(c.*(f.i));
    if (f.kind == Kind::kString) v.insert(0, "\"").append("\"");
    // Paths to key files are not secrets; anything else named like one is masked.
    const bool path = is_key_spec_key(name);
    if (path) v = "\"" + describe_key_spec(mask_password(c.*(f.s))) + "\"";
    if (!path && f.kind == Kind::kString &&
        (name.find("key") != std::string::npos || name.find("secret") != std::string::npos ||
         name.find("token") != std::string::npos))
      v = "\"***\"";
    s += name + ": " + v + "\n";
  }
  if (c.models.size() > 1) {
    s += "models:\n";
    for (const ModelEntry& m : c.models) {
      s += "  - model: \"" + m.model + "\"\n    served_model_name: \"" + m.served_model_name + "\"\n";
      if (m.max_context) s += "    max_context: " + std::to_string(m.max_context) + "\n";
      if (!m.chat_template.empty()) s += "    chat_template: \"" + m.chat_template + "\"\n";
      if (!m.sha256.empty()) s += "    sha256: \"" + m.sha256 + "\"\n";
      if (m.threads) s += "    threads: " + std::to_string(m.threads) + "\n";
      if (m.memory_mb) s += "    memory_mb: " + std::to_string(m.memory_mb) + "\n";
      if (m.embedding_max_request_tokens)
        s += "    embedding_max_request_tokens: " + std::to_string(m.embedding_max_request_tokens) + "\n";
      if (!m.embedding_truncate.empty()) s += "    embedding_truncate: \"" + m.embedding_truncate + "\"\n";
      if (m.cuda_device >= 0) s += "    cuda_device: " + std::to_string(m.cuda_device) + "\n";
    }
  }
  return s;
}

}  // namespace citadel::server
