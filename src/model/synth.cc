// Determinism notes: every value comes from xoshiro256** (base/rng.h) seeded per tensor by derive_seed(seed,
// tensor index); weights are normalish_f32 (integer Irwin-Hall sum, one int->float conversion, one multiply),
// norms are (1024 + k) / 1024 with a small integer k, all exactly specified IEEE operations. The scale constants
// use sqrt and division, which IEEE 754 requires to be correctly rounded (unlike exp/log/sin).
#include "model/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>

#include "base/rng.h"
#include "format/gguf_writer.h"
#include "format/tensor_store.h"
#include "kernels/quant/quant.h"

namespace citadel {

const std::vector<SynthPreset>& synth_presets() {
  static const std::vector<SynthPreset> kPresets = {
      // name, arch, layers, dim, heads, kv heads, ffn, vocab, tied, theta, eps, ctx
      {"tiny", "", 2, 64, 4, 2, 128, 0, true, 10000.0f, 1e-5f, 2048},
      {"smollm2-135m", "llama", 30, 576, 9, 3, 1536, 49152, true, 100000.0f, 1e-5f, 8192},
      {"qwen2-0.5b", "qwen2", 24, 896, 14, 2, 4864, 151936, true, 1000000.0f, 1e-6f, 32768},
      // From the real GGUF header (PyPI part 0000): rope 10000, eps 1e-6, ctx 131072, untied.
      {"deepseek-r1-distill-qwen-7b", "qwen2", 28, 3584, 28, 4, 18944, 152064, false, 10000.0f, 1e-6f, 131072},
      {"llama-3-8b", "llama", 32, 4096, 32, 8, 14336, 128256, false, 500000.0f, 1e-5f, 8192},
      // DeepSeek-R1-Distill-Llama-70B's shape (llama-3 70B): the tensor-parallel serving case.
      {"llama-3-70b", "llama", 80, 8192, 64, 8, 28672, 128256, false, 500000.0f, 1e-5f, 131072},
      // deepseek2: {q_lora, kv_lora, qk_nope, qk_rope, v} {experts, used, shared, expert ffn, dense layers, sigmoid,
      // norm_topk, routed scale, groups, groups used}, yarn factor, log multiplier, original context.
      // Tiny V2 (V2-Lite's kind: plain q, softmax top-k) and V3 (q_lora, sigmoid + bias, groups, renormalised).
      {"deepseek2-tiny", "deepseek2", 3, 64, 4, 1, 160, 0, false, 10000.0f, 1e-6f, 512, {0, 32, 16, 8, 16},
       {8, 2, 2, 32, 1, false, false, 1.0, 0, 0}, 4.0, 0.0707, 128},
      {"deepseek3-tiny", "deepseek2", 3, 64, 4, 1, 160, 0, false, 10000.0f, 1e-6f, 512, {24, 32, 16, 8, 16},
       {16, 4, 1, 32, 1, true, true, 2.5, 4, 2}, 4.0, 0.1, 128},
      // DeepSeek-V2-Lite's shape (config.json of deepseek-ai/DeepSeek-V2-Lite).
      {"deepseek-v2-lite", "deepseek2", 27, 2048, 16, 1, 10944, 102400, false, 10000.0f, 1e-6f, 163840,
       {0, 512, 128, 64, 128}, {64, 6, 2, 1408, 1, false, false, 1.0, 1, 1}, 40.0, 0.0707, 4096},
      // DeepSeek-V3's shape (671B; for plans and inspect: too large to write on most machines).
      {"deepseek-v3", "deepseek2", 61, 7168, 128, 1, 18432, 129280, false, 10000.0f, 1e-6f, 163840,
       {1536, 512, 128, 64, 128}, {256, 8, 1, 2048, 3, true, true, 2.5, 8, 4}, 40.0, 0.1, 4096},
      // gemma3: head_dim, window, pattern after the (unused) MLA / MoE / YaRN fields. Tiny: head_dim 64 != dim /
      // heads, layers 0-1 local (16-token window), layer 2 global. gemma-3-270m's shape (its GGUF header).
      {"gemma3-tiny", "gemma3", 3, 64, 4, 1, 128, 0, true, 1000000.0f, 1e-6f, 2048, {}, {}, 0, 0, 0, 64, 16, 3},
      {"gemma3-270m", "gemma3", 18, 640, 4, 1, 2048, 262144, true, 1000000.0f, 1e-6f, 32768, {}, {}, 0, 0, 0, 256, 512,
       6},
  };
  return kPresets;
}

namespace {

Result<DType> parse_dtype(const std::string& s) {
  if (s == "f32") return DType::kF32;
  if (s == "f16") return DType::kF16;
  if (s == "bf16") return DType::kBF16;
  if (s == "q8_0") return DType::kQ8_0;
  if (s == "q4_0") return DType::kQ4_0;
  if (s == "q4_K") return DType::kQ4_K;
  return InvalidArgument("--dtype '" + s + "': expected f32, f16, bf16, q8_0, q4_0 or q4_K");
}

uint32_t file_type(DType t) {
  switch (t) {
    case DType::kF16: return 1;
    case DType::kBF16: return 32;
    case DType::kQ8_0: return 7;
    case DType::kQ4_0: return 2;
    case DType::kQ4_K: return 15;  // Q4_K_M
    default: return 0;
  }
}

}  // namespace

Result<SynthPlan> plan_synth(const SynthOptions& o) {
  SynthPlan plan;
  const SynthPreset* p = nullptr;
  for (const auto& x : synth_presets()) {
    if (x.name == o.preset) p = &x;
  }
  if (!p) {
    std::string names;
    for (const auto& x : synth_presets()) names += (names.empty() ? "" : ", ") + x.name;
    return InvalidArgument("--preset '" + o.preset + "': expected one of " + names);
  }
  plan.preset = *p;
  SynthPreset& h = plan.preset;
  if (!o.arch.empty() && o.arch != "llama" && o.arch != "qwen2" && o.arch != "deepseek2" && o.arch != "gemma3") {
    return InvalidArgument("--arch '" + o.arch + "': expected llama, qwen2, deepseek2 or gemma3");
  }
  if (o.arch == "deepseek2" && h.arch.empty()) {
    return InvalidArgument("--arch deepseek2 needs a deepseek preset (deepseek2-tiny, deepseek3-tiny, deepseek-v2-lite)");
  }
  if (o.arch == "gemma3" && h.arch.empty()) {
    return InvalidArgument("--arch gemma3 needs a gemma3 preset (gemma3-tiny, gemma3-270m)");
  }
  if (h.arch.empty()) h.arch = o.arch.empty() ? "llama" : o.arch;
  else if (!o.arch.empty() && o.arch != h.arch) {
    return InvalidArgument("--arch " + o.arch + " conflicts with preset " + h.name + " (" + h.arch + ")");
  }
  if (o.n_vocab > 0) h.n_vocab = o.n_vocab;
  if (h.n_vocab == 0) h.n_vocab = static_cast<int64_t>(builtin_vocab().tokens.size());
  ASSIGN_OR_RETURN(DType wt, parse_dtype(o.dtype));
  const int64_t hd = h.head_dim > 0 ? h.head_dim : h.dim / h.n_heads;
  const bool gemma = h.arch == "gemma3";
  const int64_t q_dim = hd * h.n_heads, kv_dim = hd * h.n_kv_heads;
  const bool bias = h.arch == "qwen2";
  auto scale_for = [](int64_t fan_in) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(fan_in))); };
  auto add = [&](std::string name, DType t, std::vector<int64_t> shape, SynthInit init, float scale) {
    // Like llama.cpp's quantizer: a row that is not a whole number of blocks falls back to q8_0, then f16.
    if (dtype_row_bytes(t, shape.back()) == 0) t = dtype_row_bytes(DType::kQ8_0, shape.back()) ? DType::kQ8_0 : DType::kF16;
    plan.tensors.push_back({std::move(name), t, std::move(shape), init, scale});
  };
  add("token_embd.weight", wt, {h.n_vocab, h.dim}, SynthInit::kNormal, 0.02f);
  for (int l = 0; l < h.n_layers && h.arch == "deepseek2"; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const MlaConfig& m = h.mla;
    const MoeConfig& e = h.moe;
    const int64_t qk = m.qk_nope_dim + m.qk_rope_dim, r = m.kv_lora_rank, H = h.n_heads;
    add(b + "attn_norm.weight", DType::kF32, {h.dim}, SynthInit::kNorm, 0);
    if (m.q_lora_rank > 0) {
      add(b + "attn_q_a.weight", wt, {m.q_lora_rank, h.dim}, SynthInit::kNormal, scale_for(h.dim));
      add(b + "attn_q_a_norm.weight", DType::kF32, {m.q_lora_rank}, SynthInit::kNorm, 0);
      add(b + "attn_q_b.weight", wt, {H * qk, m.q_lora_rank}, SynthInit::kNormal, scale_for(m.q_lora_rank));
    } else {
      add(b + "attn_q.weight", wt, {H * qk, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    }
    add(b + "attn_kv_a_mqa.weight", wt, {r + m.qk_rope_dim, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    add(b + "attn_kv_a_norm.weight", DType::kF32, {r}, SynthInit::kNorm, 0);
    add(b + "attn_k_b.weight", wt, {H, r, m.qk_nope_dim}, SynthInit::kNormal, scale_for(r));
    add(b + "attn_v_b.weight", wt, {H, m.v_head_dim, r}, SynthInit::kNormal, scale_for(r));
    add(b + "attn_output.weight", wt, {h.dim, H * m.v_head_dim}, SynthInit::kNormal, scale_for(H * m.v_head_dim));
    add(b + "ffn_norm.weight", DType::kF32, {h.dim}, SynthInit::kNorm, 0);
    if (l < e.n_dense_layers) {
      add(b + "ffn_gate.weight", wt, {h.ffn_dim, h.dim}, SynthInit::kNormal, scale_for(h.dim));
      add(b + "ffn_up.weight", wt, {h.ffn_dim, h.dim}, SynthInit::kNormal, scale_for(h.dim));
      add(b + "ffn_down.weight", wt, {h.dim, h.ffn_dim}, SynthInit::kNormal, scale_for(h.ffn_dim));
      continue;
    }
    const int64_t E = e.n_experts, Fe = e.expert_ffn_dim, S = e.n_shared * Fe;
    add(b + "ffn_gate_inp.weight", DType::kF32, {E, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    if (e.sigmoid_gating) add(b + "exp_probs_b.bias", DType::kF32, {E}, SynthInit::kBias, 0.1f);
    add(b + "ffn_gate_exps.weight", wt, {E, Fe, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    add(b + "ffn_up_exps.weight", wt, {E, Fe, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    add(b + "ffn_down_exps.weight", wt, {E, h.dim, Fe}, SynthInit::kNormal, scale_for(Fe));
    if (S > 0) {
      add(b + "ffn_gate_shexp.weight", wt, {S, h.dim}, SynthInit::kNormal, scale_for(h.dim));
      add(b + "ffn_up_shexp.weight", wt, {S, h.dim}, SynthInit::kNormal, scale_for(h.dim));
      add(b + "ffn_down_shexp.weight", wt, {h.dim, S}, SynthInit::kNormal, scale_for(S));
    }
  }
  for (int l = 0; l < h.n_layers && h.arch != "deepseek2"; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", DType::kF32, {h.dim}, SynthInit::kNorm, 0);
    add(b + "attn_q.weight", wt, {q_dim, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    if (bias) add(b + "attn_q.bias", DType::kF32, {q_dim}, SynthInit::kBias, 0.02f);
    add(b + "attn_k.weight", wt, {kv_dim, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    if (bias) add(b + "attn_k.bias", DType::kF32, {kv_dim}, SynthInit::kBias, 0.02f);
    add(b + "attn_v.weight", wt, {kv_dim, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    if (bias) add(b + "attn_v.bias", DType::kF32, {kv_dim}, SynthInit::kBias, 0.02f);
    if (gemma) {
      add(b + "attn_q_norm.weight", DType::kF32, {hd}, SynthInit::kNorm, 0);
      add(b + "attn_k_norm.weight", DType::kF32, {hd}, SynthInit::kNorm, 0);
    }
    add(b + "attn_output.weight", wt, {h.dim, q_dim}, SynthInit::kNormal, scale_for(q_dim));
    if (gemma) add(b + "post_attention_norm.weight", DType::kF32, {h.dim}, SynthInit::kNorm, 0);
    add(b + "ffn_norm.weight", DType::kF32, {h.dim}, SynthInit::kNorm, 0);
    add(b + "ffn_gate.weight", wt, {h.ffn_dim, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    add(b + "ffn_up.weight", wt, {h.ffn_dim, h.dim}, SynthInit::kNormal, scale_for(h.dim));
    add(b + "ffn_down.weight", wt, {h.dim, h.ffn_dim}, SynthInit::kNormal, scale_for(h.ffn_dim));
    if (gemma) add(b + "post_ffw_norm.weight", DType::kF32, {h.dim}, SynthInit::kNorm, 0);
  }
  add("output_norm.weight", DType::kF32, {h.dim}, SynthInit::kNorm, 0);
  if (!h.tied) add("output.weight", wt, {h.n_vocab, h.dim}, SynthInit::kNormal, scale_for(h.dim));
  for (const auto& t : plan.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    plan.n_params += n;
    plan.data_bytes += dtype_row_bytes(t.dtype, n);
  }
  return plan;
}

ModelConfig synth_config(const SynthPlan& plan) {
  const SynthPreset& h = plan.preset;
  ModelConfig c;
  c.arch = h.arch;
  c.name = "citadel-synth " + h.name;
  c.source = "gguf";
  c.n_layers = h.n_layers;
  c.dim = h.dim;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.head_dim = h.head_dim > 0 ? h.head_dim : h.dim / h.n_heads;
  c.ffn_dim = h.ffn_dim;
  c.n_vocab = h.n_vocab;
  c.context_len = h.context_length;
  c.rope_theta = h.rope_theta;
  c.rope_dim = c.head_dim;
  c.rope_type = h.arch == "qwen2" || h.arch == "gemma3" ? RopeStyle::kNeox : RopeStyle::kNorm;
  c.norm_eps = h.rms_eps;
  c.tied_embeddings = h.tied;
  c.attn_bias = h.arch == "qwen2";
  c.n_params = plan.n_params;
  if (h.arch == "gemma3") {
    c.sliding_window = h.sliding_window;
    c.swa_pattern = h.swa_pattern;
    c.rope_theta_swa = h.rope_theta_swa;
  }
  if (h.arch == "deepseek2") {
    c.n_kv_heads = 1;
    c.head_dim = h.mla.qk_nope_dim + h.mla.qk_rope_dim;
    c.rope_dim = h.mla.qk_rope_dim;
    c.has_mla = true;
    c.mla = h.mla;
    c.has_moe = h.moe.n_experts > 0;
    c.moe = h.moe;
  }
  if (h.yarn_factor > 0) {
    c.rope_scaling.type = "yarn";
    c.rope_scaling.factor = h.yarn_factor;
    c.rope_scaling.original_context = h.yarn_orig_ctx;
    c.rope_scaling.yarn_log_mul = h.yarn_log_mul;
  }
  return c;
}

namespace {

// llama.cpp's MLA layout: head_count_kv 1 and key/value_length of the shared latent head; the per-head widths in
// key_length_mla / value_length_mla.
void add_deepseek2_metadata(GgufWriter& w, const SynthPreset& h) {
  const std::string a = "deepseek2.";
  const MlaConfig& m = h.mla;
  const MoeConfig& e = h.moe;
  auto u32 = [&](const std::string& key, int64_t v) { w.add_u32(a + key, static_cast<uint32_t>(v)); };
  u32("attention.head_count_kv", 1);
  u32("attention.key_length", m.kv_lora_rank + m.qk_rope_dim);
  u32("attention.value_length", m.kv_lora_rank);
  u32("attention.key_length_mla", m.qk_nope_dim + m.qk_rope_dim);
  u32("attention.value_length_mla", m.v_head_dim);
  if (m.q_lora_rank > 0) u32("attention.q_lora_rank", m.q_lora_rank);
  u32("attention.kv_lora_rank", m.kv_lora_rank);
  u32("rope.dimension_count", m.qk_rope_dim);
  u32("vocab_size", h.n_vocab);
  u32("leading_dense_block_count", e.n_dense_layers);
  u32("expert_feed_forward_length", e.expert_ffn_dim);
  u32("expert_count", e.n_experts);
  u32("expert_shared_count", e.n_shared);
  u32("expert_used_count", e.n_experts_used);
  w.add_f32(a + "expert_weights_scale", static_cast<float>(e.routed_scale));
  w.add_bool(a + "expert_weights_norm", e.norm_topk);
  u32("expert_gating_func", e.sigmoid_gating ? 2 : 1);
  if (e.n_group > 0) {
    u32("expert_group_count", e.n_group);
    u32("expert_group_used_count", e.topk_group);
  }
  if (h.yarn_factor > 0) {
    w.add_string(a + "rope.scaling.type", "yarn");
    w.add_f32(a + "rope.scaling.factor", static_cast<float>(h.yarn_factor));
    u32("rope.scaling.original_context_length", h.yarn_orig_ctx);
    w.add_f32(a + "rope.scaling.yarn_log_multiplier", static_cast<float>(h.yarn_log_mul));
  }
}

void add_metadata(GgufWriter& w, const SynthPlan& plan, const SynthOptions& o) {
  const SynthPreset& h = plan.preset;
  const std::string a = h.arch;
  w.add_string("general.architecture", a);
  w.add_string("general.name", "citadel-synth " + h.name);
  w.add_u32("general.alignment", 32);
  w.add_u32("general.file_type", file_type(plan.tensors[0].dtype));
  w.add_u64("citadel.synth.seed", o.seed);
  w.add_string("citadel.synth.preset", h.name);
  w.add_u32(a + ".block_count", static_cast<uint32_t>(h.n_layers));
  w.add_u32(a + ".context_length", static_cast<uint32_t>(h.context_length));
  w.add_u32(a + ".embedding_length", static_cast<uint32_t>(h.dim));
  w.add_u32(a + ".feed_forward_length", static_cast<uint32_t>(h.ffn_dim));
  w.add_u32(a + ".attention.head_count", static_cast<uint32_t>(h.n_heads));
  if (a != "deepseek2") w.add_u32(a + ".attention.head_count_kv", static_cast<uint32_t>(h.n_kv_heads));
  w.add_f32(a + ".attention.layer_norm_rms_epsilon", h.rms_eps);
  w.add_f32(a + ".rope.freq_base", h.rope_theta);
  if (a == "deepseek2") {
    add_deepseek2_metadata(w, h);
    return;
  }
  const int hd = h.head_dim > 0 ? h.head_dim : h.dim / h.n_heads;
  w.add_u32(a + ".rope.dimension_count", static_cast<uint32_t>(hd));
  if (a == "llama") w.add_u32(a + ".vocab_size", static_cast<uint32_t>(h.n_vocab));
  if (a == "gemma3") {
    w.add_u32(a + ".attention.key_length", static_cast<uint32_t>(hd));
    w.add_u32(a + ".attention.value_length", static_cast<uint32_t>(hd));
    w.add_u32(a + ".attention.sliding_window", static_cast<uint32_t>(h.sliding_window));
    w.add_u32(a + ".attention.sliding_window_pattern", static_cast<uint32_t>(h.swa_pattern));
    w.add_f32(a + ".rope.freq_base_swa", h.rope_theta_swa);
  }
}

// Built-in vocab padded with unused tokens up to n_vocab (token_embd rows must match the token count).
void add_builtin_tokenizer(GgufWriter& w, int64_t n_vocab) {
  const BuiltinVocab& v = builtin_vocab();
  std::vector<std::string> tokens = v.tokens;
  std::vector<int32_t> types = v.token_types;
  for (int64_t i = static_cast<int64_t>(tokens.size()); i < n_vocab; ++i) {
    tokens.push_back("[PAD" + std::to_string(i) + "]");
    types.push_back(5);  // unused
  }
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "default");
  w.add_string_array("tokenizer.ggml.tokens", tokens);
  w.add_i32_array("tokenizer.ggml.token_type", types);
  w.add_string_array("tokenizer.ggml.merges", v.merges);
  w.add_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v.bos_id));
  w.add_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v.eos_id));
  w.add_u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(v.pad_id));
  w.add_bool("tokenizer.ggml.add_bos_token", false);
  w.add_string("tokenizer.chat_template",
               "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
               "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
               "{% endif %}");
}

// Streams one tensor's values, whole rows at a time in chunks of about 1 MiB of f32: values are generated in f32 and
// encoded with the quant reference (f16/bf16 round to nearest even; quantized types as ggml's reference quantizers).
Status write_tensor(GgufWriter& w, const SynthTensor& t, uint64_t seed, const SynthOptions& o, size_t index) {
  Xoshiro256 rng(seed);
  const int64_t row = t.shape.back();
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  const float step = Xoshiro256::normal_step(t.scale);
  const size_t row_bytes = dtype_row_bytes(t.dtype, row);
  const int64_t rows_per_chunk = std::max<int64_t>(1, (1 << 18) / row);
  std::vector<float> vals;   // [rows_per_chunk, row]
  std::vector<uint8_t> buf;  // [rows_per_chunk, row_bytes] encoded
  for (int64_t r0 = 0; r0 * row < n; r0 += rows_per_chunk) {
    const int64_t rows = std::min<int64_t>(rows_per_chunk, n / row - r0);
    vals.resize(static_cast<size_t>(rows * row));
    if (o.values) {
      o.values(index, r0 * row, rows * row, vals.data());
    } else {
      for (float& v : vals) {
        if (t.init == SynthInit::kNorm) {
          const int32_t k = static_cast<int32_t>(rng.next() >> 58) - 32;  // [-32, 31]
          v = static_cast<float>(1024 + k) / 1024.0f;
        } else {
          v = rng.normalish_f32(step);
        }
      }
    }
    buf.resize(static_cast<size_t>(rows) * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      RETURN_IF_ERROR(quantize_row(t.dtype, &vals[static_cast<size_t>(r * row)], &buf[static_cast<size_t>(r) * row_bytes], row));
    }
    RETURN_IF_ERROR(w.write_tensor_data(buf.data(), buf.size()));
  }
  return OkStatus();
}

}  // namespace

Status write_synth(const SynthOptions& o) {
  if (o.out.empty()) return InvalidArgument("synth: --out FILE.gguf is required");
  SynthOptions opts = o;
  std::unique_ptr<TensorStore> vocab;
  if (!o.vocab_from.empty()) {
    ASSIGN_OR_RETURN(vocab, open_gguf(o.vocab_from));
    const MetaValue* tokens = vocab->meta("tokenizer.ggml.tokens");
    if (!tokens || !tokens->as_array() || tokens->as_array()->empty()) {
      return InvalidArgument("--vocab-from " + o.vocab_from + ": no tokenizer.ggml.tokens array");
    }
    opts.n_vocab = static_cast<int64_t>(tokens->as_array()->size());
  }
  ASSIGN_OR_RETURN(SynthPlan plan, plan_synth(opts));
  GgufWriter w(32);
  add_metadata(w, plan, opts);
  if (vocab) {
    for (const auto& [key, value] : vocab->metadata()) {
      if (key.rfind("tokenizer.", 0) == 0) RETURN_IF_ERROR(w.add_meta(key, value).with_context(o.vocab_from));
    }
  } else {
    add_builtin_tokenizer(w, plan.preset.n_vocab);
  }
  for (const auto& t : plan.tensors) RETURN_IF_ERROR(w.declare_tensor(t.name, t.dtype, t.shape));
  RETURN_IF_ERROR(w.begin(o.out));
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    RETURN_IF_ERROR(
        write_tensor(w, plan.tensors[i], derive_seed(o.seed, i), o, i).with_context(plan.tensors[i].name));
  }
  return w.finish();
}

}  // namespace citadel
