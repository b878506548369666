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
// config.model_type values whose architecture name differs (used when architectures is absent or null).
constexpr ArchName kModelTypes[] = {{"deepseek_v2", "deepseek2"}, {"deepseek_v3", "deepseek2"}};

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

  // Copies an unsigned integer config field to `key` (empty: only to *out); absent is fine, any other type is an
  // error.
  Status uint_field(const json& obj, const char* field, const std::string& key, uint64_t* out = nullptr) {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) return OkStatus();
    if (!it->is_number_unsigned()) {
      return DataLoss(name_ + ": " + field + " must be a non-negative integer, got " + it->dump());
    }
    uint64_t v = it->get<uint64_t>();
    if (!key.empty()) (*meta_)[key] = u32_or_u64(v);
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
  Status deepseek2(const json& obj, const std::string& arch, bool v3);
  Status quantization(const json& obj);
  Status run();

 private:
  const json& cfg_;
  const std::string& name_;
  std::map<std::string, MetaValue>* meta_;
};

// rope_scaling, else transformers >= 5's rope_parameters when it names a scaling type other than "default".
Status Mapper::rope_scaling(const json& obj, const std::string& arch) {
  auto rs = obj.find("rope_scaling");
  if (rs == obj.end() || rs->is_null()) {
    rs = obj.find("rope_parameters");
    if (rs == obj.end() || !rs->is_object()) return OkStatus();
    auto t = rs->find("rope_type");
    if (t == rs->end() || !t->is_string() || t->get<std::string>() == "default") return OkStatus();
  }
  if (!rs->is_object()) return DataLoss(name_ + ": rope_scaling must be an object or null");
  const std::string p = arch + ".rope.scaling.";
  auto type = rs->find("rope_type");
  if (type == rs->end()) type = rs->find("type");
  if (type != rs->end()) {
    if (!type->is_string()) return DataLoss(name_ + ": rope_scaling.rope_type must be a string");
    (*meta_)[p + "type"] = str(type->get<std::string>());
  }
  if (arch == "deepseek2") {  // YaRN's softmax-scale term: 0.1 * mscale_all_dim
    if (auto m = rs->find("mscale_all_dim"); m != rs->end() && m->is_number()) {
      (*meta_)[p + "yarn_log_multiplier"] = f32(0.1 * m->get<double>());
    }
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

// DeepSeek-V2/V3: MLA and MoE hyper-parameters under the keys of llama.cpp's MLA GGUFs (head_count_kv 1 and
// key/value_length of the one latent head; the per-head widths in key_length_mla / value_length_mla).
Status Mapper::deepseek2(const json& c, const std::string& arch, bool v3) {
  const std::string p = arch + ".";
  uint64_t kv_lora = 0, nope = 0, rope = 0;
  RETURN_IF_ERROR(uint_field(c, "q_lora_rank", p + "attention.q_lora_rank"));  // null: plain q projection
  RETURN_IF_ERROR(uint_field(c, "kv_lora_rank", p + "attention.kv_lora_rank", &kv_lora));
  RETURN_IF_ERROR(uint_field(c, "qk_nope_head_dim", "", &nope));
  RETURN_IF_ERROR(uint_field(c, "qk_rope_head_dim", p + "rope.dimension_count", &rope));
  if (nope + rope > 0) (*meta_)[p + "attention.key_length_mla"] = u32_or_u64(nope + rope);
  RETURN_IF_ERROR(uint_field(c, "v_head_dim", p + "attention.value_length_mla"));
  (*meta_)[p + "attention.head_count_kv"] = u32_or_u64(1);
  if (kv_lora > 0) {
    (*meta_)[p + "attention.key_length"] = u32_or_u64(kv_lora + rope);
    (*meta_)[p + "attention.value_length"] = u32_or_u64(kv_lora);
  }
  RETURN_IF_ERROR(uint_field(c, "n_routed_experts", p + "expert_count"));
  RETURN_IF_ERROR(uint_field(c, "num_experts_per_tok", p + "expert_used_count"));
  RETURN_IF_ERROR(uint_field(c, "n_shared_experts", p + "expert_shared_count"));
  RETURN_IF_ERROR(uint_field(c, "moe_intermediate_size", p + "expert_feed_forward_length"));
  RETURN_IF_ERROR(uint_field(c, "first_k_dense_replace", p + "leading_dense_block_count"));
  RETURN_IF_ERROR(float_field(c, "routed_scaling_factor", p + "expert_weights_scale"));
  if (auto n = c.find("norm_topk_prob"); n != c.end() && n->is_boolean()) {
    (*meta_)[p + "expert_weights_norm"] = boolean(n->get<bool>());
  }
  if (auto f = c.find("moe_layer_freq"); f != c.end() && !f->is_null() && (!f->is_number_unsigned() || *f != 1)) {
    return Unsupported(name_ + ": moe_layer_freq " + f->dump() + " (only every layer after the dense ones is MoE)");
  }
  // The recipe rotates adjacent pairs of the raw weights, as rope_interleave true (V3's default) does.
  if (auto ri = c.find("rope_interleave"); ri != c.end() && ri->is_boolean() && !ri->get<bool>()) {
    return Unsupported(name_ + ": rope_interleave false (deepseek2 rotates adjacent pairs)");
  }
  // Gating: 1 softmax (V2), 2 sigmoid + correction bias (V3, whatever its config says).
  std::string scoring, topk_method;
  if (auto s = c.find("scoring_func"); s != c.end() && s->is_string()) scoring = s->get<std::string>();
  if (auto t = c.find("topk_method"); t != c.end() && t->is_string()) topk_method = t->get<std::string>();
  (*meta_)[p + "expert_gating_func"] = u32_or_u64(v3 || scoring == "sigmoid" ? 2 : 1);
  if (v3 || topk_method == "group_limited_greedy" || topk_method == "noaux_tc") {
    RETURN_IF_ERROR(uint_field(c, "n_group", p + "expert_group_count"));
    RETURN_IF_ERROR(uint_field(c, "topk_group", p + "expert_group_used_count"));
  }
  return OkStatus();
}

// quantization_config of block-scaled FP8 checkpoints (the block scales' tensors are read by the model loader).
Status Mapper::quantization(const json& obj) {
  auto q = obj.find("quantization_config");
  if (q == obj.end() || !q->is_object()) return OkStatus();
  if (auto m = q->find("quant_method"); m != q->end() && m->is_string()) {
    (*meta_)["hf.quantization.method"] = str(m->get<std::string>());
  }
  auto b = q->find("weight_block_size");
  if (b == q->end() || b->is_null()) return OkStatus();
  if (!b->is_array() || b->size() != 2 || !(*b)[0].is_number_unsigned() || !(*b)[1].is_number_unsigned() ||
      (*b)[0] == 0 || (*b)[1] == 0) {
    return DataLoss(name_ + ": quantization_config.weight_block_size must be two positive integers, got " +
                    b->dump());
  }
  (*meta_)["hf.quantization.weight_block_rows"] = u32_or_u64((*b)[0].get<uint64_t>());
  (*meta_)["hf.quantization.weight_block_cols"] = u32_or_u64((*b)[1].get<uint64_t>());
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
  std::string model_type = mt != cfg_.end() && mt->is_string() ? mt->get<std::string>() : "";
  if (arch.empty()) {
    arch = model_type;
    for (const auto& a : kModelTypes) {
      if (model_type == a.hf) arch = a.gguf;
    }
  }
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
  if (arch == "deepseek2") {
    RETURN_IF_ERROR(deepseek2(c, arch, hf_arch == "DeepseekV3ForCausalLM" || model_type == "deepseek_v3"));
  }
  RETURN_IF_ERROR(quantization(cfg_));
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
