#include "model/roles.h"

namespace citadel {
namespace {

using R = TensorRole;
using S = SplitAxis;

// synth_id: the tensor ordinal the GPU synthetic weights have always used (runtime/cuda_model_shape.cu;
// bench/gpu/hf_check.py mirrors it), then the deepseek2 roles (15..30: below 32, the seed's per-layer stride). The
// Gemma-3 norms reuse 15..18 (ids need only be distinct within one architecture, and no gemma3 model has MLA);
// kRopeFreqs has none.
constexpr RoleInfo kRoles[kNumTensorRoles] = {
    {R::kTokEmbd, "token_embd.weight", "model.embed_tokens.weight", false, true, S::kRows, 0, R::kTokEmbd},
    {R::kOutputNorm, "output_norm.weight", "model.norm.weight", false, false, S::kReplicated, 1, R::kOutputNorm},
    {R::kOutput, "output.weight", "lm_head.weight", false, true, S::kRows, 2, R::kOutput},
    {R::kRopeFreqs, "rope_freqs.weight", "model.rope_freqs.weight", false, false, S::kReplicated, -1, R::kRopeFreqs},
    {R::kAttnNorm, "attn_norm.weight", "input_layernorm.weight", true, false, S::kReplicated, 3, R::kAttnNorm},
    {R::kWq, "attn_q.weight", "self_attn.q_proj.weight", true, true, S::kRows, 4, R::kBq},
    {R::kWk, "attn_k.weight", "self_attn.k_proj.weight", true, true, S::kRows, 5, R::kBk},
    {R::kWv, "attn_v.weight", "self_attn.v_proj.weight", true, true, S::kRows, 6, R::kBv},
    {R::kBq, "attn_q.bias", "self_attn.q_proj.bias", true, false, S::kRows, 7, R::kBq},
    {R::kBk, "attn_k.bias", "self_attn.k_proj.bias", true, false, S::kRows, 8, R::kBk},
    {R::kBv, "attn_v.bias", "self_attn.v_proj.bias", true, false, S::kRows, 9, R::kBv},
    {R::kWo, "attn_output.weight", "self_attn.o_proj.weight", true, true, S::kCols, 10, R::kWo},
    {R::kFfnNorm, "ffn_norm.weight", "post_attention_layernorm.weight", true, false, S::kReplicated, 11, R::kFfnNorm},
    {R::kGate, "ffn_gate.weight", "mlp.gate_proj.weight", true, true, S::kRows, 12, R::kGate},
    {R::kUp, "ffn_up.weight", "mlp.up_proj.weight", true, true, S::kRows, 13, R::kUp},
    {R::kDown, "ffn_down.weight", "mlp.down_proj.weight", true, true, S::kCols, 14, R::kDown},
    {R::kWqA, "attn_q_a.weight", "self_attn.q_a_proj.weight", true, true, S::kReplicated, 15, R::kWqA},
    {R::kQANorm, "attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight", true, false, S::kReplicated, 16, R::kQANorm},
    {R::kWqB, "attn_q_b.weight", "self_attn.q_b_proj.weight", true, true, S::kRows, 17, R::kWqB},
    {R::kWkvA, "attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight", true, true, S::kReplicated, 18, R::kWkvA},
    {R::kKvANorm, "attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight", true, false, S::kReplicated, 19,
     R::kKvANorm},
    {R::kWkB, "attn_k_b.weight", "self_attn.k_b_proj.weight", true, true, S::kExperts, 20, R::kWkB},
    {R::kWvB, "attn_v_b.weight", "self_attn.v_b_proj.weight", true, true, S::kExperts, 21, R::kWvB},
    {R::kWkvB, "attn_kv_b.weight", "self_attn.kv_b_proj.weight", true, true, S::kRows, 22, R::kWkvB},
    {R::kFfnGateInp, "ffn_gate_inp.weight", "mlp.gate.weight", true, true, S::kReplicated, 23, R::kFfnGateInp},
    {R::kExpProbsB, "exp_probs_b.bias", "mlp.gate.e_score_correction_bias", true, false, S::kReplicated, 24,
     R::kExpProbsB},
    {R::kGateExps, "ffn_gate_exps.weight", "mlp.experts.gate_up_proj", true, true, S::kExperts, 25, R::kGateExps},
    {R::kUpExps, "ffn_up_exps.weight", "mlp.experts.gate_up_proj", true, true, S::kExperts, 26, R::kUpExps},
    {R::kDownExps, "ffn_down_exps.weight", "mlp.experts.down_proj", true, true, S::kExperts, 27, R::kDownExps},
    {R::kGateShexp, "ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight", true, true, S::kRows, 28,
     R::kGateShexp},
    {R::kUpShexp, "ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight", true, true, S::kRows, 29, R::kUpShexp},
    {R::kDownShexp, "ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight", true, true, S::kCols, 30,
     R::kDownShexp},
    {R::kAttnQNorm, "attn_q_norm.weight", "self_attn.q_norm.weight", true, false, S::kReplicated, 15, R::kAttnQNorm},
    {R::kAttnKNorm, "attn_k_norm.weight", "self_attn.k_norm.weight", true, false, S::kReplicated, 16, R::kAttnKNorm},
    {R::kPostAttnNorm, "post_attention_norm.weight", "post_attention_layernorm.weight", true, false, S::kReplicated,
     17, R::kPostAttnNorm},
    {R::kPostFfwNorm, "post_ffw_norm.weight", "post_feedforward_layernorm.weight", true, false, S::kReplicated, 18,
     R::kPostFfwNorm},
};

}  // namespace

const RoleInfo& role_info(TensorRole role) { return kRoles[static_cast<int>(role)]; }

const char* role_name(TensorRole role) { return role_info(role).gguf; }

std::string tensor_name(TensorRole role, int layer, const std::string& format) {
  const RoleInfo& r = role_info(role);
  const bool hf = format == "safetensors";
  if (!r.per_layer) return hf ? r.hf : r.gguf;
  const std::string l = std::to_string(layer);
  return (hf ? "model.layers." + l + "." : "blk." + l + ".") + (hf ? r.hf : r.gguf);
}

const HfExpertParts* hf_expert_parts(TensorRole role) {
  static constexpr HfExpertParts kGate{0, 2, "gate_proj.weight"}, kUp{1, 2, "up_proj.weight"},
      kDown{0, 1, "down_proj.weight"};
  switch (role) {
    case R::kGateExps: return &kGate;
    case R::kUpExps: return &kUp;
    case R::kDownExps: return &kDown;
    default: return nullptr;
  }
}

std::string hf_expert_name(TensorRole role, int layer, int64_t expert) {
  const HfExpertParts* p = hf_expert_parts(role);
  if (!p) return "";
  return "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(expert) + "." + p->per_expert;
}

std::vector<int64_t> role_shape(const ModelConfig& c, TensorRole role) {
  const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  const MlaConfig& m = c.mla;
  const MoeConfig& e = c.moe;
  const int64_t attn_out = c.has_mla ? c.n_heads * m.v_head_dim : q, shared = e.n_shared * e.expert_ffn_dim;
  switch (role) {
    case R::kTokEmbd: case R::kOutput: return {c.n_vocab, c.dim};
    case R::kOutputNorm: case R::kAttnNorm: case R::kFfnNorm: return {c.dim};
    case R::kRopeFreqs: return {c.rope_dim / 2};
    case R::kWq: return {q, c.dim};
    case R::kWk: case R::kWv: return {kv, c.dim};
    case R::kBq: return {q};
    case R::kBk: case R::kBv: return {kv};
    case R::kWo: return {c.dim, attn_out};
    case R::kGate: case R::kUp: return {c.ffn_dim, c.dim};
    case R::kDown: return {c.dim, c.ffn_dim};
    case R::kWqA: return {m.q_lora_rank, c.dim};
    case R::kQANorm: return {m.q_lora_rank};
    case R::kWqB: return {q, m.q_lora_rank};
    case R::kWkvA: return {m.kv_lora_rank + m.qk_rope_dim, c.dim};
    case R::kKvANorm: return {m.kv_lora_rank};
    case R::kWkB: return {c.n_heads, m.kv_lora_rank, m.qk_nope_dim};
    case R::kWvB: return {c.n_heads, m.v_head_dim, m.kv_lora_rank};
    case R::kWkvB: return {c.n_heads * (m.qk_nope_dim + m.v_head_dim), m.kv_lora_rank};
    case R::kFfnGateInp: return {e.n_experts, c.dim};
    case R::kExpProbsB: return {e.n_experts};
    case R::kGateExps: case R::kUpExps: return {e.n_experts, e.expert_ffn_dim, c.dim};
    case R::kDownExps: return {e.n_experts, c.dim, e.expert_ffn_dim};
    case R::kGateShexp: case R::kUpShexp: return {shared, c.dim};
    case R::kDownShexp: return {c.dim, shared};
    case R::kAttnQNorm: case R::kAttnKNorm: return {c.head_dim};
    case R::kPostAttnNorm: case R::kPostFfwNorm: return {c.dim};
  }
  return {};
}

}  // namespace citadel
