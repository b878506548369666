// load_model_host(): the one place where a model file becomes a served ModelHost (codec + runner + engine + chat
// template). Everything else in the API works on the ModelHost.
//
// Model specs:
//   PATH or catalogue NAME   a GGUF file (resolved with resolve_model), tokenizer from its metadata, the CPU runner
//                            (or CUDA); or a BERT encoder (safetensors + config.json directory, e.g. minilm-l6): an
//                            embedding model (ModelHost::is_embedding) with its WordPiece tokenizer.json and the
//                            sentence-transformers pipeline files (max_seq_length, mean pooling, Normalize), served
//                            by /v1/embeddings on the CPU, or with device cuda on cuda_device (fp32,
//                            runtime/cuda_embedding_runner.h; a build without CUDA refuses it at load)
//   debug:bytes              a built-in byte-level fake model (no weights; deterministic logits): for tests of the
//                            server itself and for measuring its overhead without model compute
//   debug:slow               the same, 5 ms per engine step
//   debug:hang               the same, but every engine step blocks for ever (a hung engine, for watchdog tests)
// Encrypted models (a path ending in .enc, or any file with the CITADEL-ENC magic; crypto/envelope.h) need
// key_file: the file is decrypted into locked anonymous memory (crypto/secure_buffer.h) and served from there;
// its plaintext never reaches the disk. A key older than key_max_age_days logs a rotation warning. An embedding
// model is encrypted by its weights: model.safetensors.enc (`citadel encrypt --in model.safetensors`, then delete
// the plaintext) beside its config.json, tokenizer and sentence-transformers files, which stay in clear (they hold
// no weights); the directory (or catalogue name) serves it when it has no model.safetensors.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "api/model_host.h"
#include "base/status.h"
#include "engine/engine.h"

namespace citadel {
class TensorStore;
}  // namespace citadel

namespace citadel::api {

struct ModelLoadOptions {
  std::string model;               // PATH | NAME | debug:bytes
  std::string models_dir;          // where catalogue names are looked up ("" = default_models_dir())
  std::string served_model_name;   // "" = the catalogue name or the file stem
  std::string chat_template_file;  // "" = the model's own template, else a builtin name or a file path
  int max_context = 0;             // 0 = the model's
  int compute_threads = 0;         // this model's own CPU kernel threads (0 = the process-wide pool: all cores)
  int tensor_parallel = 1;         // ranks the model is split over (runtime::RunnerOptions::tensor_parallel)
  int64_t memory_budget_mb = 0;    // > 0: weights (as the runner holds them) + KV must fit, else the load is refused
  std::string device = "cpu";      // cpu | cuda
  std::string cuda_weights = "bf16";  // cuda: bf16 | int8 | int4 | fp8 | f32
  int cuda_device = 0;             // cuda: the device id (runtime::check_cuda_device at load); cpu: must stay 0
  std::string cpu_precision = "auto"; // cpu: fast | exact | auto (choose_cpu_precision)
  std::string temperature, top_p;  // defaults for requests that omit them ("" = the model's metadata, else 0.7 / 0.9)
  std::string key_file;            // encrypted models: a key spec (PATH | env:NAME | cmd:PROG ARGS; crypto/key_source.h)
  int key_max_age_days = 90;       // encrypted models: warn when the key is older than this
  engine::EngineConfig engine;     // max_waiting etc.
  // Liveness hook set on the engine before it starts (Engine::set_heartbeat): none when heartbeat_every is 0.
  std::function<void()> heartbeat;
  std::chrono::milliseconds heartbeat_every{0};
  // Who shares cached KV blocks: "tenant" (each tenant its own prefix cache) or "global" (all tenants of the model).
  std::string prefix_cache_scope = "tenant";
  // Embedding models: ModelHost::embedding_max_request_tokens (0 = kDefaultEmbeddingMaxRequestTokens) and
  // ModelHost::embedding_truncate ("on" | "off").
  int64_t embedding_max_request_tokens = 0;
  std::string embedding_truncate = "on";
};

// CPU precision: "exact" (f32 weights and math, answers like HF transformers fp32) or "fast" (quantised kernels),
// as requested; "auto" picks exact for models of at most kAutoExactParams parameters (its cost, ~4 bytes a
// parameter and slower steps, is modest there; the fast path does not yet answer like the reference) and fast above.
// why: one phrase for the start-up log. kInvalidArgument for another value.
inline constexpr int64_t kAutoExactParams = 1'000'000'000;
struct CpuPrecision {
  bool exact = false;
  std::string why;
};
Result<CpuPrecision> choose_cpu_precision(const std::string& requested, const TensorStore& store);

// Per-step limits left at 0 (automatic) get the device's defaults: max_seqs cpu 64 / cuda 256, max_batched_tokens
// 2048 on both, max_prefill_tokens 512 on CUDA (on the CPU only max_batched_tokens limits the prompt chunks). A CUDA
// decoder is sized for max_seqs sequences and max_batched_tokens tokens per step.
// Why 512 on CUDA (H100, 7B shape, bench/gpu/NOTES.md session 26): a step's time grows little up to a few hundred
// tokens (64 decode rows 7.8 ms, 511 mixed tokens 15.3 ms, 1968 tokens 48 ms), so 512-token chunks let the decode
// rows ride along in four times as many steps as 2048-token chunks (64 users of 512 / 128 tokens: 4703 tok/s with
// 2048-token steps, 4896 with max_batched_tokens 512).
void resolve_step_limits(const std::string& device, engine::EngineConfig* ec);
inline constexpr int kCpuMaxSeqs = 64, kCudaMaxSeqs = 256, kCpuStepTokens = 2048, kCudaStepTokens = 2048;
inline constexpr int kCudaPrefillTokens = 512;

// Loads, builds the engine and starts it (after resolve_step_limits). Errors name the file and what failed.
Result<std::shared_ptr<ModelHost>> load_model_host(const ModelLoadOptions& opts);

// A path ending in .enc, or a file that starts with the CITADEL-ENC magic.
bool is_encrypted_model(const std::string& path);

// The file to load for a resolved model path: DIR/model.safetensors.enc for a model directory that holds it and no
// model.safetensors (an encrypted embedding model), else path itself.
std::string encrypted_weights_of(const std::string& path);

// An encrypted model decrypted into locked anonymous memory: while this object lives, open_model_file(path) (and so
// the runner factory, which opens the model by path) reads the plaintext from memory; stores opened meanwhile keep
// the bytes alive after it ends. Never writes plaintext to disk. Errors: no key ("give --key-file"), a wrong key or
// a modified / truncated file (one line naming the file). Warns when the key is older than max_age_days.
class DecryptedModel {
 public:
  static Result<std::unique_ptr<DecryptedModel>> open(const std::string& path, const std::string& key_spec,
                                                      int max_age_days = 90);
  const std::string& key_id() const { return key_id_; }
  int64_t key_created_unix() const { return key_created_unix_; }
  ~DecryptedModel();
  DecryptedModel(const DecryptedModel&) = delete;
  DecryptedModel& operator=(const DecryptedModel&) = delete;

 private:
  explicit DecryptedModel(std::string path) : path_(std::move(path)) {}
  std::string path_;
  std::string key_id_;
  int64_t key_created_unix_ = 0;
};

}  // namespace citadel::api
