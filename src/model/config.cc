#include "model/config.h"

#include <cmath>

namespace citadel {
namespace {

int64_t int_or(const TensorStore& s, const std::string& key, int64_t dflt) {
  auto v = s.meta_int(key);
  return v ? *v : dflt;
}
double float_or(const TensorStore& s, const std::string& key, double dflt) {
  auto v = s.meta_float(key);
  return v ? *v : dflt;
}

RopeStyle rope_type_for(const std::string& arch, const std::string& source) {
  if (arch == "bert") return RopeStyle::kNone;
  // DeepSeek-V2/V3 rotate adjacent pairs of the raw weights in every format (their reference code de-interleaves).
  if (arch == "deepseek2") return RopeStyle::kNorm;
  if (arch == "llama" || arch == "deepseek" || arch == "command-r" || arch == "granite") {
    // The GGUF converter permutes llama Q/K into adjacent pairs; raw HF weights keep rotate_half (NeoX) order.
    return source == "safetensors" ? RopeStyle::kNeox : RopeStyle::kNorm;
  }
  return RopeStyle::kNeox;  // qwen*, gemma*, phi3, falcon, gptneox
}

int64_t vocab_size(const TensorStore& s, const std::string& arch) {
  if (auto v = s.meta_int(arch + ".vocab_size")) return *v;
  if (const MetaValue* t = s.meta("tokenizer.ggml.tokens"); t && t->as_array()) {
    return static_cast<int64_t>(t->as_array()->size());
  }
  for (const char* name : {"token_embd.weight", "model.embed_tokens.weight"}) {
    if (const TensorInfo* t = s.find(name); t && t->shape.size() == 2) return t->shape[0];
  }
  return 0;
}

// deepseek2: MLA and MoE hyper-parameters (llama.cpp's keys). MLA files written since llama.cpp's MLA support store
// the absorbed shapes (head_count_kv 1, key_length kv_lora + rope, key_length_mla the per-head q/k width); older
// ones the per-head shapes in key_length / value_length.
void read_deepseek2(const TensorStore& s, ModelConfig* c) {
  const std::string p = c->arch + ".";
  MlaConfig& m = c->mla;
  m.q_lora_rank = int_or(s, p + "attention.q_lora_rank", 0);
  m.kv_lora_rank = int_or(s, p + "attention.kv_lora_rank", 0);
  m.qk_rope_dim = int_or(s, p + "rope.dimension_count", 0);
  const bool mla_keys = s.meta_int(p + "attention.key_length_mla").has_value();
  const int64_t qk = int_or(s, p + (mla_keys ? "attention.key_length_mla" : "attention.key_length"), 0);
  m.v_head_dim = int_or(s, p + (mla_keys ? "attention.value_length_mla" : "attention.value_length"), 0);
  m.qk_nope_dim = qk - m.qk_rope_dim;
  c->has_mla = m.kv_lora_rank > 0;
  c->head_dim = qk;
  c->n_kv_heads = 1;
  MoeConfig& e = c->moe;
  e.n_experts = int_or(s, p + "expert_count", 0);
  e.n_experts_used = int_or(s, p + "expert_used_count", 0);
  e.n_shared = int_or(s, p + "expert_shared_count", 0);
  e.expert_ffn_dim = int_or(s, p + "expert_feed_forward_length", 0);
  e.n_dense_layers = int_or(s, p + "leading_dense_block_count", 0);
  e.sigmoid_gating = int_or(s, p + "expert_gating_func", 1) == 2;  // 1 softmax (V2, the default), 2 sigmoid (V3)
  e.norm_topk = s.meta_bool(p + "expert_weights_norm").value_or(false);
  e.routed_scale = float_or(s, p + "expert_weights_scale", 1.0);
  e.n_group = int_or(s, p + "expert_group_count", 0);
  e.topk_group = int_or(s, p + "expert_group_used_count", 0);
  c->has_moe = e.n_experts > 0;
  c->rope_scaling.yarn_log_mul = float_or(s, p + "rope.scaling.yarn_log_multiplier", 0);
}

// kDataLoss naming the first inconsistent MLA / MoE hyper-parameter of a deepseek2 config.
Status check_deepseek2(const ModelConfig& c, const std::string& path) {
  const std::string p = path + ": " + c.arch + ".";
  const MlaConfig& m = c.mla;
  if (!c.has_mla) return DataLoss(p + "attention.kv_lora_rank is missing (MLA)");
  if (m.qk_rope_dim <= 0 || m.qk_rope_dim % 2 != 0 || m.qk_nope_dim <= 0 || m.v_head_dim <= 0 ||
      m.q_lora_rank < 0) {
    return DataLoss(p + "attention.key_length_mla / value_length_mla / rope.dimension_count are inconsistent (q/k " +
                    std::to_string(c.head_dim) + ", rope " + std::to_string(m.qk_rope_dim) + ", v " +
                    std::to_string(m.v_head_dim) + ")");
  }
  if (!c.has_moe) return OkStatus();
  const MoeConfig& e = c.moe;
  if (e.n_experts_used <= 0 || e.n_experts_used > e.n_experts || e.expert_ffn_dim <= 0 || e.n_shared < 0 ||
      e.n_dense_layers < 0 || e.n_dense_layers > c.n_layers) {
    return DataLoss(p + "expert_count / expert_used_count / expert_feed_forward_length / leading_dense_block_count "
                        "are inconsistent");
  }
  if (e.n_group > 1 && (e.n_experts % e.n_group != 0 || e.topk_group <= 0 || e.topk_group > e.n_group ||
                        e.n_experts_used > e.topk_group * (e.n_experts / e.n_group))) {
    return DataLoss(p + "expert_group_count " + std::to_string(e.n_group) + " / expert_group_used_count " +
                    std::to_string(e.topk_group) + " do not fit " + std::to_string(e.n_experts) + " experts");
  }
  if (!(e.routed_scale > 0)) return DataLoss(p + "expert_weights_scale must be positive");
  return OkStatus();
}

}  // namespace

double attention_scale(const ModelConfig& c) {
  double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const RopeScaling& r = c.rope_scaling;
  if (r.type == "yarn" && r.yarn_log_mul > 0 && r.factor > 1) {
    const double mscale = 1.0 + r.yarn_log_mul * std::log(r.factor);
    scale *= mscale * mscale;
  }
  return scale;
}

const char* rope_type_name(RopeStyle t) {
  switch (t) {
    case RopeStyle::kNone: return "none";
    case RopeStyle::kNorm: return "norm";
    case RopeStyle::kNeox: return "neox";
  }
  return "unknown";
}

bool has_output_tensor(const TensorStore& s) { return s.find("output.weight") || s.find("lm_head.weight"); }

bool has_qkv_bias(const TensorStore& s) {
  return s.find("blk.0.attn_q.bias") || s.find("model.layers.0.self_attn.q_proj.bias") ||
         s.find("encoder.layer.0.attention.self.query.bias");  // bert (HF names)
}

ModelConfig read_model_config(const TensorStore& s) {
  ModelConfig c;
  c.source = s.format();
  c.arch = s.meta_string("general.architecture").value_or("");
  c.name = s.meta_string("general.name").value_or("");
  const std::string p = c.arch + ".";
  c.n_layers = int_or(s, p + "block_count", 0);
  c.dim = int_or(s, p + "embedding_length", 0);
  c.n_heads = int_or(s, p + "attention.head_count", 0);
  c.n_kv_heads = int_or(s, p + "attention.head_count_kv", c.n_heads);
  c.head_dim = int_or(s, p + "attention.key_length", c.n_heads > 0 ? c.dim / c.n_heads : 0);
  c.ffn_dim = int_or(s, p + "feed_forward_length", 0);
  c.n_vocab = vocab_size(s, c.arch);
  c.context_len = int_or(s, p + "context_length", 0);
  c.rope_theta = float_or(s, p + "rope.freq_base", 10000.0);
  c.rope_type = rope_type_for(c.arch, c.source);
  c.rope_dim = c.rope_type == RopeStyle::kNone ? 0 : int_or(s, p + "rope.dimension_count", c.head_dim);
  const std::string rs = p + "rope.scaling.";
  c.rope_scaling.type = s.meta_string(rs + "type").value_or("none");
  c.rope_scaling.factor = float_or(s, rs + "factor", 1.0);
  c.rope_scaling.original_context = int_or(s, rs + "original_context_length", 0);
  c.rope_scaling.low_freq_factor = float_or(s, rs + "low_freq_factor", 0);
  c.rope_scaling.high_freq_factor = float_or(s, rs + "high_freq_factor", 0);
  if (auto lin = s.meta_float(p + "rope.scale_linear"); lin && c.rope_scaling.type == "none") {
    c.rope_scaling.type = "linear";  // legacy key
    c.rope_scaling.factor = *lin;
  }
  c.norm_eps = c.arch == "bert" ? float_or(s, p + "attention.layer_norm_epsilon", 1e-12)
                                : float_or(s, p + "attention.layer_norm_rms_epsilon", 1e-5);
  c.tied_embeddings = c.arch != "bert" && !has_output_tensor(s);  // encoders have no output projection
  c.attn_bias = has_qkv_bias(s);
  if (c.arch == "deepseek2") read_deepseek2(s, &c);
  if (c.arch == "gemma3") {
    // Five local layers (512-token window, theta 10000) then one global (the file's theta and scaling), as the
    // Gemma-3 models ship; GGUF names only the window.
    c.sliding_window = int_or(s, p + "attention.sliding_window", 0);
    c.swa_pattern = int_or(s, p + "attention.sliding_window_pattern", 6);
    c.rope_theta_swa = float_or(s, p + "rope.freq_base_swa", 10000.0);
  }
  for (const TensorInfo& t : s.tensors()) {
    const std::string& n = t.name;
    const bool block_scales = n.size() > 10 && n.compare(n.size() - 10, 10, "_scale_inv") == 0;  // FP8 checkpoints
    if (!block_scales) c.n_params += t.numel();
  }
  return c;
}

Result<ModelConfig> model_config_from(const TensorStore& s) {
  ModelConfig c = read_model_config(s);
  const std::string& path = s.path();
  if (c.arch.empty()) return DataLoss(path + ": general.architecture is missing");
  if (c.arch != "llama" && c.arch != "qwen2" && c.arch != "deepseek2" && c.arch != "gemma3") {
    return Unsupported(path + ": architecture '" + c.arch + "' is not supported (llama, qwen2, deepseek2, gemma3)");
  }
  const std::string p = c.arch + ".";
  struct Req { const char* key; int64_t value; };
  for (const Req& r : {Req{"block_count", c.n_layers}, Req{"embedding_length", c.dim},
                       Req{"attention.head_count", c.n_heads}, Req{"attention.head_count_kv", c.n_kv_heads},
                       Req{"feed_forward_length", c.ffn_dim}, Req{"vocab_size", c.n_vocab},
                       Req{"attention.key_length", c.head_dim}, Req{"context_length", c.context_len}}) {
    if (r.value <= 0 || r.value > (int64_t{1} << 31)) {
      return DataLoss(path + ": " + p + r.key + " is missing or out of range (" + std::to_string(r.value) + ")");
    }
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return DataLoss(path + ": head_count " + std::to_string(c.n_heads) + " is not a multiple of head_count_kv " +
                    std::to_string(c.n_kv_heads));
  }
  if (c.arch == "deepseek2") RETURN_IF_ERROR(check_deepseek2(c, path));
  if (c.arch == "gemma3" && c.source != "gguf")
    return Unsupported(path + ": gemma3 is served from GGUF files only (its HF norm names differ)");
  if (c.rope_dim <= 0 || c.rope_dim > c.head_dim || c.rope_dim % 2 != 0) {
    return DataLoss(path + ": " + p + "rope.dimension_count " + std::to_string(c.rope_dim) +
                    " must be even and at most head_dim " + std::to_string(c.head_dim));
  }
  if (!(c.rope_theta > 0)) return DataLoss(path + ": " + p + "rope.freq_base must be positive");
  if (!(c.norm_eps > 0) || c.norm_eps > 1) {
    return DataLoss(path + ": " + p + "attention.layer_norm_rms_epsilon " + std::to_string(c.norm_eps) +
                    " is out of range");
  }
  return c;
}

}  // namespace citadel
