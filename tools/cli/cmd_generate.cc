// citadel generate: one prompt through the real Engine + a CPU or CUDA runner, streamed to stdout.
//   citadel generate --model M --prompt P [-n N] [--temperature T] [--top-p P] [--top-k K] [--seed S] [--chat]
//                    [--system S] [--exact] [--threads N]
// Speeds (prompt tokens/s, generated tokens/s) go to stderr. R1-style models: the reasoning (<think> ...) is printed
// between "[reasoning]" and "[answer]" markers in chat mode.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "api/model_loader.h"
#include "chat/builtin_templates.h"
#include "chat/chat_template.h"
#include "chat/reasoning.h"
#include "command.h"
#include "engine/engine.h"
#include "model/catalog.h"
#include "format/tensor_store.h"
#include "runtime/runner_factory.h"
#include "tokenizer/tokenizer.h"

namespace generate_cmd {

using namespace citadel;

struct GenArgs {
  std::string model, prompt, system, models_dir, chat_template;
  std::string key_file;  // encrypted models
  int n = 256;
  float temperature = 0.7f, top_p = 0.95f;
  int top_k = 40;
  int64_t seed = -1;
  bool chat = false, exact = false;
  std::string precision = "auto";
  std::string device = "cpu", cuda_weights = "bf16";
  int threads = 0;
  int ctx = 0;
  int tensor_parallel = 1;
};

int fail(const std::string& what, const Status& st) {
  std::fprintf(stderr, "citadel generate: %s: %s\n", what.c_str(), st.to_string().c_str());
  return 1;
}

// The chat-rendered prompt text (tokenizer.chat_template, else --chat-template NAME/built-in chatml).
Result<std::string> render_chat(const GenArgs& a, const TensorStore& store, const Tokenizer& tok) {
  std::string src;
  if (!a.chat_template.empty()) {
    ASSIGN_OR_RETURN(src, chat::builtin_template_source(a.chat_template));
  } else if (auto t = store.meta_string("tokenizer.chat_template")) {
    src = *t;
  } else {
    ASSIGN_OR_RETURN(src, chat::builtin_template_source("chatml"));
  }
  ASSIGN_OR_RETURN(chat::ChatTemplate tmpl, chat::ChatTemplate::parse(src));
  chat::ChatInputs in;
  if (!a.system.empty()) in.messages.push_back({{"role", "system"}, {"content", a.system}});
  in.messages.push_back({{"role", "user"}, {"content", a.prompt}});
  in.add_generation_prompt = true;
  if (tok.bos_id() >= 0) in.bos_token = tok.token_to_piece(tok.bos_id());
  if (tok.eos_id() >= 0) in.eos_token = tok.token_to_piece(tok.eos_id());
  return chat::render(tmpl, in);
}

// Streams text, splitting reasoning from the answer in chat mode.
class Printer {
 public:
  Printer(bool chat, bool starts_in_think) : chat_(chat), splitter_(starts_in_think) {}
  void text(const std::string& s) {
    if (!chat_) return out(s);
    emit(splitter_.feed(s));
  }
  void finish() {
    if (chat_) emit(splitter_.finish());
    if (in_reasoning_) std::fputs("\n", stdout);
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }

 private:
  void out(const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  }
  void emit(const chat::ReasoningDelta& d) {
    if (!d.reasoning.empty()) {
      if (!in_reasoning_ && !said_reasoning_) out("[reasoning]\n");
      in_reasoning_ = said_reasoning_ = true;
      out(d.reasoning);
    }
    if (!d.content.empty()) {
      if (said_reasoning_ && in_reasoning_) out("\n[answer]\n");
      in_reasoning_ = false;
      out(d.content);
    }
  }
  bool chat_;
  chat::ReasoningSplitter splitter_;
  bool in_reasoning_ = false, said_reasoning_ = false;
};

int run_generate(const GenArgs& a) {
  if (a.threads > 0) setenv("CITADEL_THREADS", std::to_string(a.threads).c_str(), 1);  // before the pool starts
  const std::string dir = a.models_dir.empty() ? default_models_dir() : a.models_dir;
  if (Status g = check_generative(a.model); !g.ok()) return fail("--model " + a.model, g);
  auto path = resolve_model(a.model, dir);
  if (!path.ok()) return fail("--model " + a.model, path.status());
  if (Status g = check_generative(*path); !g.ok()) return fail("--model " + a.model, g);
  std::unique_ptr<api::DecryptedModel> decrypted;  // an encrypted model is read from memory while this lives
  if (api::is_encrypted_model(*path)) {
    auto d = api::DecryptedModel::open(*path, a.key_file);
    if (!d.ok()) return fail("--model " + a.model, d.status());
    decrypted = std::move(*d);
  }
  const auto t_load = std::chrono::steady_clock::now();
  auto store = open_model_file(*path);  // metadata: tokenizer and chat template
  if (!store.ok()) return fail("load", store.status());
  bool exact = a.exact;
  if (!exact && a.device == "cpu") {
    auto p = api::choose_cpu_precision(a.precision, **store);
    if (!p.ok()) return fail("--cpu-precision", p.status());
    exact = p->exact;
    std::fprintf(stderr, "citadel generate: cpu precision: %s\n", p->why.c_str());
  }
  runtime::RunnerOptions ro{.device = a.device, .exact = exact, .cuda_weights = a.cuda_weights, .max_context = a.ctx,
                            .tensor_parallel = a.tensor_parallel};
  auto runner = runtime::make_model_runner(*path, ro);
  if (!runner.ok()) return fail("load", runner.status());
  auto tok = (*store)->format() == "gguf" ? Tokenizer::from_store(**store) : Tokenizer::from_path(*path);
  if (!tok.ok()) return fail("tokenizer", tok.status());
  const Tokenizer& tk = **tok;

  std::string text = a.prompt;
  std::vector<int32_t> ids;
  if (a.chat) {
    auto r = render_chat(a, **store, tk);
    if (!r.ok()) return fail("chat template", r.status());
    text = *r;
    ids = tk.encode(text, /*add_special=*/false, /*parse_special=*/true);
  } else {
    ids = tk.encode(text, /*add_special=*/true, /*parse_special=*/false);
  }
  if (ids.empty()) return fail("prompt", InvalidArgument("the prompt encodes to no tokens"));
  const size_t trimmed = text.find_last_not_of(" \n");
  const bool starts_in_think = a.chat && trimmed != std::string::npos && trimmed >= 6 &&
                               text.compare(trimmed - 6, 7, "<think>") == 0;

  engine::EngineConfig cfg;
  cfg.block_size = 16;
  const int need = static_cast<int>(ids.size()) + a.n;
  cfg.n_blocks = (need + cfg.block_size - 1) / cfg.block_size + 1;
  cfg.max_batched_tokens = 512;
  cfg.watermark = 0;
  engine::Engine eng(runner->get(), cfg);
  if (Status st = eng.init(); !st.ok()) return fail("engine", st);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

  engine::GenerateRequest req;
  req.id = "generate";
  req.prompt = ids;
  req.max_tokens = a.n;
  req.sampling.temperature = a.temperature;
  req.sampling.top_p = a.top_p;
  req.sampling.top_k = a.top_k;
  if (a.seed >= 0) req.sampling.has_seed = true, req.sampling.seed = static_cast<uint64_t>(a.seed);
  for (int32_t id = 0; id < tk.n_vocab(); ++id) {
    if (tk.is_eog(id)) req.stop_token_ids.push_back(id);
  }
  auto h = eng.submit(std::move(req));
  if (!h.ok()) return fail("submit", h.status());

  IncrementalDecoder dec(tk, /*skip_special=*/true);
  Printer printer(a.chat, starts_in_think);
  const auto t0 = std::chrono::steady_clock::now();
  auto t_first = t0;
  int n_gen = 0;
  while (!eng.idle()) {
    eng.step();
    engine::TokenEvent ev;
    while ((*h)->try_pop(&ev)) {
      if (ev.token >= 0) {
        if (n_gen++ == 0) t_first = std::chrono::steady_clock::now();
        if (!tk.is_eog(ev.token)) printer.text(dec.push(ev.token));
      }
    }
  }
  printer.text(dec.flush());
  printer.finish();
  const auto t1 = std::chrono::steady_clock::now();
  if (Status st = (*h)->final_status(); !st.ok()) return fail("generation", st);
  const double pre_s = std::chrono::duration<double>(t_first - t0).count();
  const double gen_s = std::chrono::duration<double>(t1 - t_first).count();
  std::fprintf(stderr, "load %.2f s; prompt: %zu tokens in %.2f s (%.1f tok/s); generation: %d tokens in %.2f s "
               "(%.1f tok/s)\n", load_s, ids.size(), pre_s, ids.size() / std::max(pre_s, 1e-9), n_gen, gen_s,
               n_gen > 1 ? (n_gen - 1) / std::max(gen_s, 1e-9) : 0.0);
  return 0;
}

citadel::cli::Registrar reg("generate", "Generate text from a prompt (CPU or CUDA)", [](CLI::App& sub) {
  auto a = std::make_shared<GenArgs>();
  sub.add_option("--model", a->model, "model file/directory or pulled name")->required();
  sub.add_option("--key-file", a->key_file, "key of an encrypted model (.enc): PATH | env:NAME | cmd:PROG ARGS");
  sub.add_option("--prompt,-p", a->prompt, "prompt text")->required();
  sub.add_option("-n,--max-tokens", a->n, "tokens to generate at most (default 256)")->check(CLI::Range(1, 1 << 20));
  sub.add_option("--temperature", a->temperature, "0 = greedy (default 0.7)");
  sub.add_option("--top-p", a->top_p, "nucleus sampling (default 0.95)");
  sub.add_option("--top-k", a->top_k, "top-k sampling, 0 = off (default 40)");
  sub.add_option("--seed", a->seed, "sampling seed (default: random)");
  sub.add_flag("--chat", a->chat, "render the prompt with the model's chat template");
  sub.add_option("--system", a->system, "system message (with --chat)");
  sub.add_option("--chat-template", a->chat_template, "built-in template name instead of the model's");
  sub.add_flag("--exact", a->exact, "f32 math (slow, matches HF transformers fp32): cpu f32 weights; cuda f32 activations, bf16 or f32 weights");
  sub.add_option("--cpu-precision", a->precision, "cpu: auto (default: exact up to 1B parameters), fast or exact");
  sub.add_option("--device", a->device, "cpu (default) or cuda");
  sub.add_option("--cuda-weights", a->cuda_weights, "cuda: bf16 (default), int8, int4, fp8 or f32 (exact)");
  sub.add_option("--threads", a->threads, "CPU threads (default: all)");
  sub.add_option("--ctx", a->ctx, "context limit (default: the model's)");
  sub.add_option("--tensor-parallel", a->tensor_parallel,
                 "ranks the model is split over (cpu: threads of this process; cuda: one GPU per rank; default 1)")
      ->check(CLI::Range(1, 64));
  sub.add_option("--models-dir", a->models_dir, "pulled models (default $CITADEL_MODELS or ~/.cache/citadel/models)");
  return [a] { return run_generate(*a); };
});

}  // namespace generate_cmd
