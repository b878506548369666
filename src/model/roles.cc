#include "model/roles.h"

namespace citadel {
namespace {

using R = TensorRole;
using S = SplitAxis;

// synth_id: the tensor ordinal the GPU synthetic weights have always used (runtime/cuda_model_shape.cu;
// bench/gpu/hf_check.py mirrors it); kRopeFreqs has none.
constexpr RoleInfo kRoles[kNumTensorRoles] = {
    {R::kTokEmbd, "token_embd.weight", "model.embed_tokens.weight", false, true, S::kReplicated, 0, R::kTokEmbd},
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

std::vector<int64_t> role_shape(const ModelConfig& c, TensorRole role) {
  const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  switch (role) {
    case R::kTokEmbd: case R::kOutput: return {c.n_vocab, c.dim};
    case R::kOutputNorm: case R::kAttnNorm: case R::kFfnNorm: return {c.dim};
    case R::kRopeFreqs: return {c.rope_dim / 2};
    case R::kWq: return {q, c.dim};
    case R::kWk: case R::kWv: return {kv, c.dim};
    case R::kBq: return {q};
    case R::kBk: case R::kBv: return {kv};
    case R::kWo: return {c.dim, q};
    case R::kGate: case R::kUp: return {c.ffn_dim, c.dim};
    case R::kDown: return {c.dim, c.ffn_dim};
  }
  return {};
}

}  // namespace citadel
