// ModelHost: everything the API needs about one served model: its engine, the text codec (tokenizer), the chat
// template and the names it answers to. Built by load_model_host() (model_loader.h); the API never loads files.
// Thread-safety: immutable after construction except through Engine's own thread-safe methods; TextCodec methods
// are const and safe from any thread; decoders are per stream.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "chat/chat_template.h"
#include "backend/embedding_runner.h"
#include "engine/embed_engine.h"
#include "engine/engine.h"

namespace citadel::api {

// 300k tokens: about 146 full 2048-token-context inputs or 1170 of MiniLM's 256; a few seconds to minutes of CPU.
inline constexpr int64_t kDefaultEmbeddingMaxRequestTokens = 300000;

// Per-stream detokenizer: text that never ends in half a UTF-8 character.
class StreamDecoder {
 public:
  virtual ~StreamDecoder() = default;
  virtual std::string push(int32_t id) = 0;
  virtual std::string flush() = 0;
};

// Text <-> tokens for the API: a thin interface over the model's tokenizer (so the API and its tests do not depend
// on one tokenizer implementation).
class TextCodec {
 public:
  virtual ~TextCodec() = default;
  // add_special: BOS etc. per the model; parse_special: control tokens in the text are matched (chat templates).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const = 0;
  virtual std::unique_ptr<StreamDecoder> decoder() const = 0;  // skips special tokens
  virtual std::string piece(int32_t id) const = 0;              // the bytes of one token (logprobs)
  virtual std::vector<int32_t> eog_ids() const = 0;              // end-of-generation tokens (stop ids)
  virtual int32_t n_vocab() const = 0;
  virtual std::string bos_text() const = 0;
  virtual std::string eos_text() const = 0;
};

struct ModelHost {
  std::string served_name;  // the id in /v1/models and the accepted "model" value
  std::vector<std::string> aliases;  // also accepted as "model" (e.g. the catalogue name, the file name)
  std::string path;
  int64_t created = 0;      // unix seconds (file mtime or load time)
  std::string key_id;       // encrypted models: the id of the key that decrypted it ("" otherwise); never bytes
  int64_t key_created_unix = 0;  // and its creation time (0 = unknown)
  int max_context = 0;
  std::optional<chat::ChatTemplate> chat_template;  // none: chat completions answer 400
  std::unique_ptr<TextCodec> codec;
  std::unique_ptr<engine::ModelRunner> runner;  // owned here; the engine points to it
  std::unique_ptr<engine::Engine> engine;       // started
  // Embedding models (an encoder: kind "embedding") have no runner, engine or chat template but these: the runner
  // and the engine that batches its requests (started); cls_id / sep_id are put around token-id input.
  std::unique_ptr<engine::EmbeddingRunner> embed_runner;
  std::unique_ptr<engine::EmbedEngine> embedder;
  int32_t cls_id = -1, sep_id = -1;
  // The most tokens one /v1/embeddings request may hold (after truncation, specials included): 400 beyond, nothing
  // embedded. Bounds the work (and the engine thread's time) one request can ask for.
  int64_t embedding_max_request_tokens = kDefaultEmbeddingMaxRequestTokens;
  // An input longer than embed_runner->max_tokens(): true: cut to it (sentence-transformers' behaviour), false: 400.
  bool embedding_truncate = true;
  std::shared_ptr<void> keepalive;              // whatever the runner borrows (mapped weights, ...)
  // What a request that omits temperature / top_p / top_k / min_p gets (see model_sampling_defaults), and whence.
  engine::SamplingParams default_sampling;
  std::string default_sampling_source;
  // true (prefix_cache_scope tenant): the prefix-cache namespace of a request includes its tenant, so tenants never
  // share cached KV blocks; false (global): all tenants of this model share them.
  bool prefix_cache_per_tenant = true;

  // The engine's cache namespace for a request of `tenant` (GenerateRequest::cache_namespace): served model, adapter
  // ("" until adapters exist) and, per prefix_cache_per_tenant, the tenant.
  uint64_t cache_namespace(const std::string& tenant) const {
    return engine::prefix_namespace({served_name, /*adapter=*/"", prefix_cache_per_tenant ? tenant : std::string()});
  }

  bool is_embedding() const { return embedder != nullptr; }
  const char* kind() const { return is_embedding() ? "embedding" : "chat"; }

  // The engines end before the runners they drive. When the last reference goes away inside one of this host's own
  // engine callbacks (a stream's final event), that thread cannot join itself: a helper thread ends the engines and
  // runners instead (they use nothing else of the host; the keepalive stays with them).
  ~ModelHost() {
    const bool inside = (engine && engine->on_engine_thread()) || (embedder && embedder->on_worker_thread());
    auto end = [e = std::move(engine), r = std::move(runner), m = std::move(embedder), mr = std::move(embed_runner),
                k = keepalive]() mutable {
      e.reset();
      r.reset();
      m.reset();
      mr.reset();
      k.reset();
    };
    if (inside) std::thread(std::move(end)).detach();
    else end();
  }
  bool accepts(const std::string& model) const {
    if (model == served_name) return true;
    for (const auto& a : aliases)
      if (model == a) return true;
    return false;
  }
};

}  // namespace citadel::api
