#include "format/hf_config.h"

#include <limits>
#include <nlohmann/json.hpp>

namespace citadel {
namespace {

using json = nlohmann::json;

struct ArchName {
  const char* hf;
  const char* gguf;
};
constexpr ArchName kArchs[] = {
    {"LlamaForCausalLM", "llama"},          {"MistralForCausalLM", "llama"},
    {"Qwen2ForCausalLM", "qwen2"},          {"Qwen3ForCausalLM", "qwen3"},
    {"Gemma3ForCausalLM", "gemma3"},        {"Gemma3ForConditionalGeneration", "gemma3"},
    {"BertModel", "bert"},                  {"BertForMaskedLM", "bert"},
    {"DeepseekV2ForCausalLM", "deepseek2"}, {"DeepseekV3ForCausalLM", "deepseek2"},
};

MetaValue u32_or_u64(uint64_t v) {
  MetaValue m;
  m.type = v <= std::numeric_limits<uint32_t>::max() ? MetaValue::Type::kU32 : MetaValue::Type::kU64;
  m.v = v;
  return m;
}
MetaValue f32(double v) {
  MetaValue m;
  m.type = MetaValue::Type::kF32;  // GGUF stores these as f32; the double keeps the config's exact value
  m.v = v;
  return m;
}
MetaValue str(std::string v) {
  MetaValue m;
  m.type = MetaValue::Type::kString;
  m.v = std::move(v);
  return m;
}
MetaValue boolean(bool v) {
  MetaValue m;
  m.type = MetaValue::Type::kBool;
  m.v = v;
  return m;
}

class Mapper {
 public:
  Mapper(const json& cfg, const std::string& name, std::map<std::string, MetaValue>* meta)
      : cfg_(cfg), name_(name), meta_(meta) {}

  // Copies an unsigned integer config field to `key`; absent is fine, any other type is an error.
  Status uint_field(const json& obj, const char* field, const std::string& key, uint64_t* out = nullptr) {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return OkStatus();
    if (!it->is_number_unsigned()) {
      return DataLoss(name_ + ": " + field + " must be a non-negative integer, got " + it->dump());
    }
    uint64_t v = it->get<uint64_t>();
    (*meta_)[key] = u32_or_u64(v);
    if (out) *out = v;
    return OkStatus();
  }
  Status float_field(const json& obj, const char* field, const std::string& key, double* out = nullptr) {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return OkStatus();
    if (!it->is_number()) return DataLoss(name_ + ": " + field + " must be a number, got " + it->dump());
    double v = it->get<double>();
    (*meta_)[key] = f32(v);
    if (out) *out = v;
    return OkStatus();
  }
  Status token_id(const char* field, const std::string& key) {
    auto it = cfg_.find(field);
    if (it == cfg_.end()) return OkStatus();
    const json* v = &*it;
    if (v->is_array() && !v->empty()) v = &(*v)[0];
    if (v->is_number_unsigned()) (*meta_)[key] = u32_or_u64(v->get<uint64_t>());
    return OkStatus();
  }
  Status rope_scaling(const json& obj, const std::string& arch);
  Status run();

 private:
  const json& cfg_;
  const std::string& name_;
  std::map<std::string, MetaValue>* meta_;
};

Status Mapper::rope_scaling(const json& obj, const std::string& arch) {
  auto rs = obj.find("rope_scaling");
  if (rs == obj.end() || rs->is_null()) return OkStatus();
  if (!rs->is_object()) return DataLoss(name_ + ": rope_scaling must be an object or null");
  const std::string p = arch + ".rope.scaling.";
  auto type = rs->find("rope_type");
  if (type == rs->end()) type = rs->find("type");
  if (type != rs->end()) {
    if (!type->is_string()) return DataLoss(name_ + ": rope_scaling.rope_type must be a string");
    (*meta_)[p + "type"] = str(type->get<std::string>());
  }
  RETURN_IF_ERROR(float_field(*rs, "factor", p + "factor"));
  RETURN_IF_ERROR(uint_field(*rs, "original_max_position_embeddings", p + "original_context_length"));
  RETURN_IF_ERROR(float_field(*rs, "low_freq_factor", p + "low_freq_factor"));
  RETURN_IF_ERROR(float_field(*rs, "high_freq_factor", p + "high_freq_factor"));
  RETURN_IF_ERROR(float_field(*rs, "beta_fast", p + "yarn_beta_fast"));
  RETURN_IF_ERROR(float_field(*rs, "beta_slow", p + "yarn_beta_slow"));
  RETURN_IF_ERROR(float_field(*rs, "attention_factor", p + "attn_factor"));
  return OkStatus();
}

Status Mapper::run() {
  std::string hf_arch, arch;
  auto archs = cfg_.find("architectures");
  if (archs != cfg_.end() && archs->is_array() && !archs->empty() && (*archs)[0].is_string()) {
    hf_arch = (*archs)[0].get<std::string>();
    (*meta_)["hf.architecture"] = str(hf_arch);
    for (const auto& a : kArchs) {
      if (hf_arch == a.hf) arch = a.gguf;
    }
  }
  auto mt = cfg_.find("model_type");
  if (arch.empty() && mt != cfg_.end() && mt->is_string()) arch = mt->get<std::string>();
  if (arch.empty()) return DataLoss(name_ + ": neither architectures nor model_type names the architecture");
  (*meta_)["general.architecture"] = str(arch);
  if (auto n = cfg_.find("_name_or_path"); n != cfg_.end() && n->is_string()) {
    (*meta_)["general.name"] = str(n->get<std::string>());
  }
  if (auto d = cfg_.find("torch_dtype"); d != cfg_.end() && d->is_string()) {
    (*meta_)["hf.torch_dtype"] = str(d->get<std::string>());
  }
  // Multimodal configs (Gemma 3) keep the language model's hyper-parameters under text_config.
  const json& c = cfg_.contains("text_config") && cfg_["text_config"].is_object() ? cfg_["text_config"] : cfg_;
  const std::string p = arch + ".";
  uint64_t layers = 0, dim = 0, heads = 0, head_dim = 0;
  RETURN_IF_ERROR(uint_field(c, "num_hidden_layers", p + "block_count", &layers));
  RETURN_IF_ERROR(uint_field(c, "hidden_size", p + "embedding_length", &dim));
  RETURN_IF_ERROR(uint_field(c, "intermediate_size", p + "feed_forward_length"));
  RETURN_IF_ERROR(uint_field(c, "max_position_embeddings", p + "context_length"));
  RETURN_IF_ERROR(uint_field(c, "vocab_size", p + "vocab_size"));
  RETURN_IF_ERROR(uint_field(c, "num_attention_heads", p + "attention.head_count", &heads));
  if (c.contains("num_key_value_heads")) {
    RETURN_IF_ERROR(uint_field(c, "num_key_value_heads", p + "attention.head_count_kv"));
  } else if (heads) {
    (*meta_)[p + "attention.head_count_kv"] = u32_or_u64(heads);
  }
  RETURN_IF_ERROR(uint_field(c, "head_dim", p + "attention.key_length", &head_dim));
  RETURN_IF_ERROR(uint_field(c, "head_dim", p + "attention.value_length"));
  RETURN_IF_ERROR(float_field(c, "rms_norm_eps", p + "attention.layer_norm_rms_epsilon"));
  RETURN_IF_ERROR(float_field(c, "layer_norm_eps", p + "attention.layer_norm_epsilon"));
  RETURN_IF_ERROR(float_field(c, "rope_theta", p + "rope.freq_base"));
  // transformers >= 5 writes rope_theta inside a rope_parameters object instead.
  if (auto rp = c.find("rope_parameters"); !c.contains("rope_theta") && rp != c.end() && rp->is_object()) {
    RETURN_IF_ERROR(float_field(*rp, "rope_theta", p + "rope.freq_base"));
  }
  if (auto sw = c.find("sliding_window"); sw != c.end() && sw->is_number_unsigned()) {
    (*meta_)[p + "attention.sliding_window"] = u32_or_u64(sw->get<uint64_t>());
  }
  if (head_dim == 0 && heads != 0) head_dim = dim / heads;
  double partial = 1.0;
  if (auto pr = c.find("partial_rotary_factor"); pr != c.end() && pr->is_number()) partial = pr->get<double>();
  if (head_dim && arch != "bert" && partial > 0 && partial <= 1) {
    (*meta_)[p + "rope.dimension_count"] = u32_or_u64(static_cast<uint64_t>(head_dim * partial));
  }
  RETURN_IF_ERROR(rope_scaling(c, arch));
  if (auto t = cfg_.find("tie_word_embeddings"); t != cfg_.end() && t->is_boolean()) {
    (*meta_)["hf.tie_word_embeddings"] = boolean(t->get<bool>());
  }
  RETURN_IF_ERROR(token_id("bos_token_id", "tokenizer.ggml.bos_token_id"));
  RETURN_IF_ERROR(token_id("eos_token_id", "tokenizer.ggml.eos_token_id"));
  (void)layers;
  return OkStatus();
}

}  // namespace

Status map_hf_config(const std::string& text, const std::string& name, std::map<std::string, MetaValue>* meta) {
  json cfg = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (cfg.is_discarded()) return DataLoss(name + ": not valid JSON");
  if (!cfg.is_object()) return DataLoss(name + ": not a JSON object");
  try {  // get<>() on checked types does not throw, but keep nlohmann exceptions inside this module regardless
    Mapper m(cfg, name, meta);
    RETURN_IF_ERROR(m.run());
  } catch (const std::exception& e) {
    return DataLoss(name + ": " + e.what());
  }
  (*meta)["hf.config"] = str(text);
  return OkStatus();
}

}  // namespace citadel
