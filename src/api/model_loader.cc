#include "api/model_loader.h"

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "api/debug_model.h"
#include "api/tokenizer_codec.h"
#include "format/tensor_store.h"
#include "tokenizer/tokenizer.h"
#include "base/cpu_features.h"
#include "base/log.h"
#include "base/strings.h"
#include "chat/builtin_templates.h"
#include "crypto/envelope.h"
#include "crypto/key_source.h"
#include "model/arch/bert.h"
#include "model/catalog.h"
#include "runtime/embedding_runner.h"
#include "runtime/runner_factory.h"

namespace citadel::api {

namespace {

// The cpu_precision values every model kind takes (chat models: choose_cpu_precision; embedding models: bf16 GEMMs
// unless exact).
Status check_cpu_precision_name(const std::string& p) {
  if (p == "auto" || p == "fast" || p == "exact") return OkStatus();
  return InvalidArgument("cpu_precision '" + p + "': expected fast, exact or auto");
}

// --chat-template: a builtin name or a file.
Result<chat::ChatTemplate> load_template(const std::string& spec) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(spec, ec)) {
    std::ifstream f(spec, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    if (!f) return IoError(spec + ": cannot read the chat template file");
    auto t = chat::ChatTemplate::parse(ss.str());
    if (!t.ok()) return t.status().with_context(spec);
    return t;
  }
  return chat::builtin_template(spec);
}

Status start_engine(ModelHost* host, const ModelLoadOptions& opts) {
  engine::EngineConfig ec = opts.engine;
  if (opts.max_context > 0) ec.max_context = opts.max_context;
  ec.metrics_model_name = host->served_name;  // the model_name label of the engine's metrics
  if (opts.prefix_cache_scope != "tenant" && opts.prefix_cache_scope != "global")
    return InvalidArgument("prefix_cache_scope must be tenant or global, got '" + opts.prefix_cache_scope + "'");
  host->prefix_cache_per_tenant = opts.prefix_cache_scope == "tenant";
  log_info("engine steps: up to " + std::to_string(ec.max_seqs) + " sequences and " +
           std::to_string(ec.max_batched_tokens) + " tokens (decode + prefill chunks)" +
           (ec.max_prefill_tokens > 0 && ec.max_prefill_tokens < ec.max_batched_tokens
                ? ", prompt chunks up to " + std::to_string(ec.max_prefill_tokens) + " tokens a step"
                : ""));
  host->engine = std::make_unique<engine::Engine>(host->runner.get(), ec);
  if (opts.heartbeat && opts.heartbeat_every.count() > 0) host->engine->set_heartbeat(opts.heartbeat, opts.heartbeat_every);
  RETURN_IF_ERROR(host->engine->start());
  host->max_context = ec.max_context > 0 ? std::min(ec.max_context, host->runner->max_context())
                                         : host->runner->max_context();
  return OkStatus();
}

Result<std::shared_ptr<ModelHost>> load_debug(const ModelLoadOptions& opts) {
  auto host = std::make_shared<ModelHost>();
  host->served_name = opts.served_model_name.empty() ? opts.model : opts.served_model_name;
  host->aliases.push_back(opts.model);
  host->path = opts.model;
  host->created = static_cast<int64_t>(std::time(nullptr));
  host->codec = make_debug_codec();
  host->runner = make_debug_runner(opts.max_context > 0 ? opts.max_context : 4096, opts.model == "debug:slow" ? 5 : 0,
                                   opts.model == "debug:hang");
  ModelLoadOptions o = opts;
  o.engine.n_blocks = 16384;  // 256k tokens of fake KV whatever the memory budget
  auto tmpl = load_template(opts.chat_template_file.empty() ? "chatml" : opts.chat_template_file);
  if (!tmpl.ok()) return tmpl.status();
  host->chat_template = std::move(*tmpl);
  RETURN_IF_ERROR(start_engine(host.get(), o));
  return host;
}

// Real GGUF models: tokenizer and chat template from the file's metadata; the runner (CPU or CUDA) from the factory.
Result<std::unique_ptr<engine::ModelRunner>> make_runner(const std::shared_ptr<TensorStore>& store,
                                                         const ModelLoadOptions& opts) {
  runtime::RunnerOptions ro;
  ro.cpu_threads = opts.compute_threads;  // the model's own pool (no process-wide setting)
  ro.tensor_parallel = opts.tensor_parallel;
  ro.device = opts.device;
  ro.cuda_weights = opts.cuda_weights;
  ro.cuda_device = opts.cuda_device;
  if (opts.device == "cpu") {
    auto p = choose_cpu_precision(opts.cpu_precision, *store);
    if (!p.ok()) return p.status();
    ro.exact = p->exact;
    log_info("cpu precision: " + p->why);
  } else {
    ro.exact = opts.cpu_precision == "exact";  // cuda: f32 activations and KV; auto keeps its bf16 default
  }
  ro.max_context = opts.max_context;
  ro.max_batched_tokens = opts.engine.max_batched_tokens;  // resolved by load_model_host
  ro.max_batch = opts.engine.max_seqs;
  return runtime::make_model_runner(store->path(), ro);
}

// Sampling defaults of a real model, lowest to highest precedence: temperature 0.7 / top_p 0.9; the file's
// general.sampling.* metadata; the configuration (opts.temperature / opts.top_p). Errors name the bad setting.
Status set_sampling_defaults(const TensorStore& store, const ModelLoadOptions& opts, ModelHost* host) {
  engine::SamplingParams& d = host->default_sampling;
  d.temperature = 0.7f, d.top_p = 0.9f;
  std::vector<std::string> from_model, from_config;
  // Metadata outside the API's ranges is ignored (a warning), so that a bad file cannot fail every request.
  auto meta = [&](const char* key, double lo, double hi, const char* name, auto set) {
    const auto v = store.meta_float(key);
    if (!v) return;
    if (!(*v >= lo && *v <= hi)) return log_warn(std::string(key) + " = " + std::to_string(*v) + " ignored");
    set(*v);
    from_model.push_back(name);
  };
  meta("general.sampling.temp", 0.0, 2.0, "temperature", [&](double v) { d.temperature = static_cast<float>(v); });
  meta("general.sampling.top_p", 1e-6, 1.0, "top_p", [&](double v) { d.top_p = static_cast<float>(v); });
  meta("general.sampling.top_k", 0.0, 1 << 20, "top_k", [&](double v) { d.top_k = static_cast<int>(v); });
  meta("general.sampling.min_p", 0.0, 1.0, "min_p", [&](double v) { d.min_p = static_cast<float>(v); });
  auto conf = [&](const std::string& text, float lo, float hi, float* out, const char* name) -> Status {
    if (text.empty()) return OkStatus();
    char* end = nullptr;
    const float v = std::strtof(text.c_str(), &end);
    if (end == text.c_str() || *end != '\0' || !(v >= lo && v <= hi) || (hi == 1.0f && v <= 0.0f))
      return InvalidArgument(std::string(name) + " '" + text + "': expected a number in " +
                             (hi == 1.0f ? "(0, 1]" : "[0, 2]"));
    *out = v;
    from_config.push_back(name);
    return OkStatus();
  };
  RETURN_IF_ERROR(conf(opts.temperature, 0.0f, 2.0f, &d.temperature, "temperature"));
  RETURN_IF_ERROR(conf(opts.top_p, 0.0f, 1.0f, &d.top_p, "top_p"));
  std::string& src = host->default_sampling_source;
  if (!from_config.empty()) src += "configuration: " + join(from_config, ", ");
  if (!from_model.empty()) src += std::string(src.empty() ? "" : "; ") + "model metadata: " + join(from_model, ", ");
  if (src.empty()) src = "built-in defaults";
  char line[160];
  std::snprintf(line, sizeof(line), "sampling defaults for requests that omit them: temperature %.2f, top_p %.2f, "
                "top_k %d, min_p %.2f (", d.temperature, d.top_p, d.top_k, d.min_p);
  log_info(line + src + ")");
  return OkStatus();
}

// The model's placement budget: its weights as the runner will hold them (f32 in the CPU exact mode, else as stored)
// plus its KV budget. Refused before anything is allocated, naming both numbers.
Status check_memory_budget(const TensorStore& store, const ModelLoadOptions& opts) {
  if (opts.memory_budget_mb <= 0) return OkStatus();
  uint64_t weights = 0;
  int64_t params = 0;
  for (const auto& t : store.tensors()) weights += t.nbytes, params += t.numel();
  auto precision = choose_cpu_precision(opts.cpu_precision, store);
  const bool f32 = opts.device == "cpu" && precision.ok() && precision->exact;
  if (f32) weights = static_cast<uint64_t>(params) * 4;
  const uint64_t kv = opts.engine.kv_memory_bytes, budget = static_cast<uint64_t>(opts.memory_budget_mb) << 20;
  if (weights + kv <= budget) return OkStatus();
  return ResourceExhausted(store.path() + ": weights " + std::to_string(weights >> 20) + " MiB" +
                           (f32 ? " (f32, exact)" : "") + " + KV " + std::to_string(kv >> 20) + " MiB exceed the " +
                           "model's memory budget of " + std::to_string(opts.memory_budget_mb) + " MiB");
}

// A JSON file of a sentence-embedding model directory; null when absent.
Result<nlohmann::json> read_json_file(const std::filesystem::path& p) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(p, ec)) return nlohmann::json();
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || (!j.is_object() && !j.is_array())) return DataLoss(p.string() + ": not valid JSON");
  return j;
}

// The sentence-transformers pipeline of a model directory (modules.json, sentence_bert_config.json,
// 1_Pooling/config.json): max tokens per input, mean pooling (the only pooling served), normalisation.
Result<runtime::EmbeddingRunnerOptions> embedding_pipeline(const std::filesystem::path& dir) {
  runtime::EmbeddingRunnerOptions o;
  ASSIGN_OR_RETURN(nlohmann::json st, read_json_file(dir / "sentence_bert_config.json"));
  if (auto m = st.find("max_seq_length"); st.is_object() && m != st.end() && m->is_number_integer())
    o.max_tokens = std::max(1, m->get<int>());
  ASSIGN_OR_RETURN(nlohmann::json pool, read_json_file(dir / "1_Pooling" / "config.json"));
  if (pool.is_object()) {
    for (const char* mode : {"pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                             "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"}) {
      if (pool.value(mode, false))
        return Unsupported((dir / "1_Pooling" / "config.json").string() + ": " + mode + " is not served (mean only)");
    }
  }
  ASSIGN_OR_RETURN(nlohmann::json modules, read_json_file(dir / "modules.json"));
  if (modules.is_array()) {
    o.normalize = false;
    for (const auto& m : modules)
      if (m.is_object() && m.value("type", "").find("Normalize") != std::string::npos) o.normalize = true;
  }
  return o;
}

// A BERT encoder: the WordPiece tokenizer of its directory, the CPU embedding runner and its engine. decrypted: the
// encrypted weights file already decrypted into memory (open_model_file(path) reads them there), else null.
Result<std::shared_ptr<ModelHost>> load_embedding(const std::string& path, const ModelLoadOptions& opts,
                                                  const DecryptedModel* decrypted) {
  namespace fs = std::filesystem;
  if (opts.embedding_truncate != "on" && opts.embedding_truncate != "off")
    return InvalidArgument("embedding_truncate must be on or off, got '" + opts.embedding_truncate + "'");
  if (opts.embedding_max_request_tokens < 0)
    return InvalidArgument("embedding_max_request_tokens must be positive, got " +
                           std::to_string(opts.embedding_max_request_tokens));
  std::error_code ec;
  const fs::path dir = fs::is_directory(path, ec) ? fs::path(path) : fs::path(path).parent_path();
  ASSIGN_OR_RETURN(runtime::EmbeddingRunnerOptions ro, embedding_pipeline(dir));
  if (opts.max_context > 0)
    ro.max_tokens = ro.max_tokens > 0 ? std::min(ro.max_tokens, opts.max_context) : opts.max_context;
  ro.threads = opts.compute_threads;  // cpu: the model's own pool (no process-wide setting)
  // cpu: auto and fast run the GEMMs in bf16 where the CPU has AVX512_BF16 (all-MiniLM-L6-v2 stays within cosine
  // 0.99996 of sentence-transformers' f32: bert_test, test_embeddings.py), exact keeps f32 throughout.
  RETURN_IF_ERROR(check_cpu_precision_name(opts.cpu_precision));
  ro.bf16 = opts.cpu_precision != "exact";
  ro.device = opts.device;
  ro.cuda_device = opts.cuda_device;
  auto opened = open_model_file(path);
  if (!opened.ok()) return opened.status();
  auto weights = load_bert_weights(std::move(*opened));
  if (!weights.ok()) return weights.status();
  const int64_t n_vocab = (*weights)->config.n_vocab;
  auto tok = Tokenizer::from_path(dir.string());
  if (!tok.ok()) return tok.status().with_context(dir.string());
  VocabSpec spec = (*tok)->spec();
  // No truncation in the tokenizer (tokenizer.json's own limit is not the pipeline's): the API cuts or refuses an
  // input longer than the runner's max_tokens (the pipeline's max_seq_length, within the position table).
  spec.max_length = 0;
  auto tok_max = Tokenizer::from_spec(std::move(spec));
  if (!tok_max.ok()) return tok_max.status().with_context(dir.string());
  if ((*tok_max)->n_vocab() != n_vocab)
    return DataLoss(dir.string() + ": the tokenizer has " + std::to_string((*tok_max)->n_vocab()) +
                    " tokens, the model's embedding table " + std::to_string(n_vocab));
  auto runner = runtime::make_embedding_runner(std::move(*weights), ro);
  if (!runner.ok()) return runner.status().with_context(path);
  auto host = std::make_shared<ModelHost>();
  host->path = path;
  if (decrypted) {
    host->key_id = decrypted->key_id();
    host->key_created_unix = decrypted->key_created_unix();
  }
  const std::string stem = fs::path(path).stem().string();
  const CatalogEntry* entry = find_model(opts.model);
  const std::string dir_name = dir.filename().string();
  host->served_name = !opts.served_model_name.empty() ? opts.served_model_name : entry ? entry->name : dir_name;
  host->aliases = {opts.model, dir_name, stem};
  if (entry) host->aliases.push_back(entry->hf.repo);  // sentence-transformers/all-MiniLM-L6-v2
  host->created = static_cast<int64_t>(std::time(nullptr));
  host->cls_id = (*tok_max)->spec().cls;
  host->sep_id = (*tok_max)->spec().sep;
  host->codec = make_tokenizer_codec(std::shared_ptr<const Tokenizer>(std::move(*tok_max)));
  host->max_context = (*runner)->max_tokens();
  host->embedding_truncate = opts.embedding_truncate == "on";
  if (opts.embedding_max_request_tokens > 0) host->embedding_max_request_tokens = opts.embedding_max_request_tokens;
  log_info(path + ": embedding model (bert) on " +
           (opts.device == "cuda" ? "cuda device " + std::to_string(opts.cuda_device) + " (fp32)"
                                  : std::string("the cpu (") +
                                        (ro.bf16 && cpu_features().has_avx512_bf16() ? "bf16 GEMMs" : "f32") + ")") +
           ", " +
           std::to_string((*runner)->dim()) + " dimensions, up to " +
           std::to_string(host->max_context) + " tokens per input (" +
           (host->embedding_truncate ? "longer ones truncated" : "longer ones refused") + "), " +
           std::to_string(host->embedding_max_request_tokens) + " per request" + (ro.normalize ? ", normalised" : ""));
  host->embed_runner = std::move(*runner);
  engine::EmbedEngineConfig econf;
  econf.max_waiting = opts.engine.max_waiting;
  econf.metrics = opts.engine.metrics;
  econf.metrics_model_name = host->served_name;  // the model_name label of its metrics
  host->embedder = std::make_unique<engine::EmbedEngine>(host->embed_runner.get(), econf);
  RETURN_IF_ERROR(host->embedder->start());
  return host;
}

Result<std::shared_ptr<ModelHost>> load_gguf(const std::string& path, const ModelLoadOptions& opts) {
  std::unique_ptr<DecryptedModel> decrypted;
  if (is_encrypted_model(path)) {
    auto d = DecryptedModel::open(path, opts.key_file, opts.key_max_age_days);
    if (!d.ok()) return d.status();
    decrypted = std::move(*d);
  }
  auto opened = open_model_file(path);
  if (!opened.ok()) return opened.status();
  std::shared_ptr<TensorStore> store(std::move(*opened));
  if (is_bert_model(*store)) {
    RETURN_IF_ERROR(check_memory_budget(*store, opts));
    store.reset();
    return load_embedding(path, opts, decrypted.get());
  }
  auto tok = Tokenizer::from_store(*store);
  if (!tok.ok()) return tok.status().with_context(path);
  auto host = std::make_shared<ModelHost>();
  host->path = path;
  if (decrypted) {
    host->key_id = decrypted->key_id();
    host->key_created_unix = decrypted->key_created_unix();
  }
  // model.gguf.enc is served as "model", like model.gguf.
  const std::filesystem::path plain_path = decrypted ? std::filesystem::path(path).replace_extension()
                                                     : std::filesystem::path(path);
  const std::string stem = plain_path.stem().string();
  const CatalogEntry* entry = find_model(opts.model);
  host->served_name = !opts.served_model_name.empty() ? opts.served_model_name : entry ? entry->name : stem;
  host->aliases = {opts.model, stem, std::filesystem::path(path).filename().string()};
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(path, ec);
  host->created = ec ? static_cast<int64_t>(std::time(nullptr))
                     : std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::file_clock::to_sys(mtime).time_since_epoch()).count();
  host->codec = make_tokenizer_codec(std::shared_ptr<const Tokenizer>(std::move(*tok)));
  if (!opts.chat_template_file.empty()) {
    auto t = load_template(opts.chat_template_file);
    if (!t.ok()) return t.status();
    host->chat_template = std::move(*t);
  } else if (auto src = store->meta_string("tokenizer.chat_template")) {
    auto t = chat::ChatTemplate::parse(*src);
    if (!t.ok()) return t.status().with_context(path + ": tokenizer.chat_template");
    host->chat_template = std::move(*t);
  } else {
    log_warn(path + ": no chat template in the file; /v1/chat/completions answers 400 (use --chat-template)");
  }
  RETURN_IF_ERROR(set_sampling_defaults(*store, opts, host.get()));
  RETURN_IF_ERROR(check_memory_budget(*store, opts));
  auto runner = make_runner(store, opts);
  if (!runner.ok()) return runner.status();
  host->runner = std::move(*runner);
  host->keepalive = store;
  RETURN_IF_ERROR(start_engine(host.get(), opts));
  return host;
}

}  // namespace

Result<CpuPrecision> choose_cpu_precision(const std::string& requested, const TensorStore& store) {
  if (requested == "exact") return CpuPrecision{true, "exact (f32, as configured)"};
  if (requested == "fast") return CpuPrecision{false, "fast (quantised kernels, as configured)"};
  RETURN_IF_ERROR(check_cpu_precision_name(requested));
  int64_t params = 0;
  for (const auto& t : store.tensors()) params += t.numel();
  const std::string n = std::to_string((params + 500'000) / 1'000'000) + "M parameters";
  if (params <= kAutoExactParams)
    return CpuPrecision{true, "exact (auto: " + n + "; f32 answers like the reference at a modest cost)"};
  return CpuPrecision{false, "fast (auto: " + n + " is past the 1000M up to which exact is chosen)"};
}

std::string encrypted_weights_of(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec) || fs::exists(fs::path(path) / "model.safetensors", ec)) return path;
  const fs::path enc = fs::path(path) / "model.safetensors.enc";
  return fs::is_regular_file(enc, ec) ? enc.string() : path;
}

bool is_encrypted_model(const std::string& path) {
  return (path.size() > 4 && path.compare(path.size() - 4, 4, ".enc") == 0) || crypto::is_encrypted_file(path);
}

Result<std::unique_ptr<DecryptedModel>> DecryptedModel::open(const std::string& path, const std::string& key_spec,
                                                             int max_age_days) {
  if (key_spec.empty()) return InvalidArgument("model " + path + " is encrypted: give --key-file");
  ASSIGN_OR_RETURN(crypto::Key key, crypto::load_key(key_spec));
  if (crypto::key_older_than(key, max_age_days, static_cast<int64_t>(std::time(nullptr))))
    log_warn("model key '" + key.id + "' is older than " + std::to_string(max_age_days) +
             " days (key_max_age_days): rotate it (citadel rotate-key)");
  ASSIGN_OR_RETURN(crypto::SecureBuffer plain, crypto::decrypt_to_memory(path, key));
  auto owner = std::make_shared<crypto::SecureBuffer>(std::move(plain));
  RETURN_IF_ERROR(register_memory_model(path, owner, owner->data(), owner->size()));
  log_info(path + ": decrypted " + std::to_string(owner->size()) + " bytes into memory (key '" + key.id + "'" +
           (owner->locked() ? ", locked" : ", not locked") + ")");
  std::unique_ptr<DecryptedModel> model(new DecryptedModel(path));
  model->key_id_ = key.id;
  model->key_created_unix_ = key.created_unix;
  return model;
}

DecryptedModel::~DecryptedModel() { unregister_memory_model(path_); }

void resolve_step_limits(const std::string& device, engine::EngineConfig* ec) {
  const bool cuda = device == "cuda";
  if (ec->max_seqs <= 0) ec->max_seqs = cuda ? kCudaMaxSeqs : kCpuMaxSeqs;
  if (ec->max_batched_tokens <= 0) ec->max_batched_tokens = cuda ? kCudaStepTokens : kCpuStepTokens;
  if (ec->max_prefill_tokens <= 0 && cuda) ec->max_prefill_tokens = kCudaPrefillTokens;
}

Result<std::shared_ptr<ModelHost>> load_model_host(const ModelLoadOptions& requested) {
  ModelLoadOptions opts = requested;
  resolve_step_limits(opts.device, &opts.engine);
  if (opts.cuda_device < 0)
    return InvalidArgument("cuda_device must be 0 or more, got " + std::to_string(opts.cuda_device));
  if (opts.cuda_device != 0 && opts.device != "cuda")
    return InvalidArgument("model " + opts.model + ": cuda_device " + std::to_string(opts.cuda_device) +
                           " is set but the model runs on the " + opts.device + " (device cuda uses it)");
  if (opts.model.rfind("debug:", 0) == 0) {
    if (opts.model != "debug:bytes" && opts.model != "debug:slow" && opts.model != "debug:hang")
      return InvalidArgument("unknown debug model '" + opts.model + "' (debug:bytes, debug:slow, debug:hang)");
    return load_debug(opts);
  }
  // Embedding models (the catalogue's minilm-l6, or any BERT encoder) are served too: load_gguf hands them to
  // load_embedding once the file says what it is.
  auto path = resolve_model(opts.model, opts.models_dir.empty() ? default_models_dir() : opts.models_dir);
  if (!path.ok()) return path.status();
  return load_gguf(encrypted_weights_of(*path), opts);
}

}  // namespace citadel::api
