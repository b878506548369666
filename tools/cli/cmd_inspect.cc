// citadel inspect --model PATH: prints what a model file holds as pretty JSON (format, architecture,
// hyper-parameters, tensor dtypes, memory needs and what fits where, tokenizer). Errors: one line on stderr, exit code 1.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "command.h"
#include "format/tensor_store.h"
#include "model/catalog.h"
#include "model/config.h"
#include "model/memory_plan.h"

namespace citadel::cli {
namespace inspect_cmd {

using json = nlohmann::ordered_json;

struct InspectOpts {
  std::string model;
};

// Turns the --model argument into a path: an existing file or directory, or a name pulled with `citadel pull`.
Result<std::string> resolve_model_path(const std::string& arg) { return resolve_model(arg, default_models_dir()); }

json rope_json(const ModelConfig& c) {
  json r = {{"type", rope_type_name(c.rope_type)}, {"theta", c.rope_theta}, {"dims", c.rope_dim}};
  r["scaling"] = {{"type", c.rope_scaling.type}};
  if (c.rope_scaling.type != "none") {
    r["scaling"]["factor"] = c.rope_scaling.factor;
    r["scaling"]["original_context"] = c.rope_scaling.original_context;
  }
  return r;
}

json tokenizer_json(const TensorStore& s) {
  json t;
  t["model"] = s.meta_string("tokenizer.ggml.model").value_or("");
  t["pre"] = s.meta_string("tokenizer.ggml.pre").value_or("");
  const MetaValue* tokens = s.meta("tokenizer.ggml.tokens");
  t["vocab_size"] = tokens && tokens->as_array() ? tokens->as_array()->size() : 0;
  const MetaValue* merges = s.meta("tokenizer.ggml.merges");
  if (merges && merges->as_array()) t["merges"] = merges->as_array()->size();
  for (const char* k : {"bos_token_id", "eos_token_id"}) {
    if (auto v = s.meta_int(std::string("tokenizer.ggml.") + k)) t[k] = *v;
  }
  t["chat_template"] = s.meta("tokenizer.chat_template") != nullptr;
  return t;
}

json describe(const TensorStore& s) {
  ModelConfig c = read_model_config(s);
  json j;
  j["path"] = s.path();
  j["format"] = s.format();
  if (s.format() == "gguf") j["version"] = s.version();
  j["file_size"] = s.file_size();
  j["architecture"] = c.arch;
  j["name"] = c.name;
  j["parameters"] = c.n_params;
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_dtype;  // name -> (count, bytes)
  for (const TensorInfo& t : s.tensors()) {
    auto& e = by_dtype[dtype_name(t.dtype)];
    e.first += 1;
    e.second += t.nbytes;
  }
  json dt = json::object();
  for (const auto& [name, e] : by_dtype) dt[name] = {{"count", e.first}, {"bytes", e.second}};
  j["tensors"] = {{"count", s.tensors().size()}, {"by_dtype", dt}};
  j["hyperparameters"] = {{"n_layers", c.n_layers},     {"dim", c.dim},
                          {"n_heads", c.n_heads},       {"n_kv_heads", c.n_kv_heads},
                          {"head_dim", c.head_dim},     {"ffn_dim", c.ffn_dim},
                          {"n_vocab", c.n_vocab},       {"context_length", c.context_len},
                          {"norm_eps", c.norm_eps},     {"rope", rope_json(c)},
                          {"tied_embeddings", c.tied_embeddings}, {"attention_bias", c.attn_bias}};
  json& hp = j["hyperparameters"];
  if (c.has_mla) {
    const MlaConfig& m = c.mla;
    hp["kv_lora_rank"] = m.kv_lora_rank;
    hp["q_lora_rank"] = m.q_lora_rank;
    hp["qk_nope_dim"] = m.qk_nope_dim;
    hp["qk_rope_dim"] = m.qk_rope_dim;
    hp["v_head_dim"] = m.v_head_dim;
    hp["kv_values_per_token_layer"] = m.kv_lora_rank + m.qk_rope_dim;
  }
  if (c.has_moe) {
    const MoeConfig& e = c.moe;
    hp["expert_count"] = e.n_experts;
    hp["expert_used_count"] = e.n_experts_used;
    hp["expert_shared_count"] = e.n_shared;
    hp["expert_ffn_dim"] = e.expert_ffn_dim;
    hp["leading_dense_layers"] = e.n_dense_layers;
    hp["expert_gating"] = e.sigmoid_gating ? "sigmoid" : "softmax";
    hp["expert_weights_norm"] = e.norm_topk;
    hp["expert_weights_scale"] = e.routed_scale;
    hp["expert_group_count"] = e.n_group;
    hp["expert_group_used_count"] = e.topk_group;
  }
  uint64_t weight_bytes = 0;
  for (const TensorInfo& t : s.tensors()) weight_bytes += t.nbytes;
  const MemoryNeed need = memory_need(c, weight_bytes);
  json mem = {{"weights_bytes", weight_bytes}, {"kv_values_per_token", need.n_layers * need.kv_values_per_layer},
              {"kv_layout", std::to_string(need.n_layers) + " x " + std::to_string(need.kv_values_per_layer) +
                                " values per token"}};
  for (const DeviceFit& f : standard_fits(need, host_ram_bytes(), c.context_len)) {
    mem["fits"].push_back({{"device", f.device}, {"fits", f.fits}, {"kv_tokens", f.kv_tokens}, {"verdict", f.verdict}});
  }
  j["memory"] = mem;
  j["tokenizer"] = tokenizer_json(s);
  auto full = model_config_from(s);
  j["supported"] = full.ok();
  if (!full.ok()) j["unsupported_reason"] = full.status().message();
  return j;
}

int run_inspect(const InspectOpts& o) {
  auto path = resolve_model_path(o.model);
  if (!path.ok()) {
    std::fprintf(stderr, "citadel inspect: %s\n", path.status().message().c_str());
    return 1;
  }
  auto store = open_model_file(*path);
  if (!store.ok()) {
    std::fprintf(stderr, "citadel inspect: %s\n", store.status().message().c_str());
    return 1;
  }
  try {
    // Metadata strings come from the file: replace invalid UTF-8 rather than fail.
    std::string out = describe(**store).dump(2, ' ', false, json::error_handler_t::replace);
    std::printf("%s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "citadel inspect: %s: %s\n", path->c_str(), e.what());
    return 1;
  }
  return 0;
}

Registrar reg("inspect", "Print a model file's metadata as JSON", [](CLI::App& sub) {
  auto opts = std::make_shared<InspectOpts>();
  sub.add_option("--model", opts->model, "Model file (.gguf, .safetensors, *.index.json), directory, or pulled name")->required();
  return [opts] { return run_inspect(*opts); };
});

}  // namespace inspect_cmd
}  // namespace citadel::cli
