// The llama architecture (SmolLM2, Llama-2/3, DeepSeek-LLM/Coder, DeepSeek-R1-Distill-Llama) and the recipe the
// whole llama family shares (qwen2 too):
//
//   residual = embedding(tokens)
//   per layer: normed = rmsnorm(residual) -> q|k|v = normed [Wq|Wk|Wv]^T (+ biases) -> rope(q, k) -> K/V to the cache
//              -> attn = paged causal attention(q) -> delta = attn Wo^T
//              -> residual += delta; normed = rmsnorm(residual) -> delta = (silu(normed Wg^T) * normed Wu^T) Wd^T
//   logits = rmsnorm(residual + delta)[wanted rows] Wout^T
//
// Q/K/V biases are optional (a few llama-arch conversions carry them). RoPE: GGUF files hold Q/K permuted for
// adjacent-pair (NORM) rotation; HF safetensors keep rotate_half (NEOX) order; ModelConfig picks the type from the
// source. Llama-3.1 frequency factors come from rope_freqs.weight (GGUF) or from rope_scaling "llama3" (HF config).
#include "model/arch.h"

namespace citadel {

namespace {
using R = TensorRole;
using lin::kQkv;
using lin::kO;
using lin::kGateUp;
using lin::kDown;
}  // namespace

Status llama_forward(BackendOps& o, const ModelConfig& c) {
  RETURN_IF_ERROR(o.embed(R::kTokEmbd));
  for (int l = 0; l < c.n_layers; ++l) {
    RETURN_IF_ERROR(o.add_rmsnorm(/*add=*/l > 0, R::kAttnNorm, l));
    RETURN_IF_ERROR(o.linear(kQkv, l, Act::kNormed, Act::kQkv));
    RETURN_IF_ERROR(o.rope_kv_write(l));
    RETURN_IF_ERROR(o.attention(l));
    RETURN_IF_ERROR(o.linear(kO, l, Act::kAttn, Act::kDelta));
    RETURN_IF_ERROR(o.add_rmsnorm(/*add=*/true, R::kFfnNorm, l));
    RETURN_IF_ERROR(o.linear_silu_mul(kGateUp, l, Act::kNormed, Act::kFfn));
    RETURN_IF_ERROR(o.linear(kDown, l, Act::kFfn, Act::kDelta));
  }
  return o.logits(R::kOutputNorm, R::kOutput);
}

int64_t KvLayout::values_per_token() const {
  int64_t n = 0;
  for (const KvPart& p : parts) n += p.values();
  return n;
}

KvLayout llama_kv_layout(const ModelConfig& c) {
  return KvLayout{{KvPart{"k", c.n_kv_heads, c.head_dim}, KvPart{"v", c.n_kv_heads, c.head_dim}}};
}

std::vector<RoleUse> llama_family_roles() {
  using N = RoleNeed;
  return {{R::kTokEmbd, N::kRequired}, {R::kOutputNorm, N::kRequired}, {R::kOutput, N::kOptional},
          {R::kRopeFreqs, N::kOptional}, {R::kAttnNorm, N::kRequired},  {R::kWq, N::kRequired},
          {R::kWk, N::kRequired},        {R::kWv, N::kRequired},        {R::kBq, N::kBiasGroup},
          {R::kBk, N::kBiasGroup},       {R::kBv, N::kBiasGroup},       {R::kWo, N::kRequired},
          {R::kFfnNorm, N::kRequired},   {R::kGate, N::kRequired},      {R::kUp, N::kRequired},
          {R::kDown, N::kRequired}};
}

const ArchSpec& llama_arch() {
  static const ArchSpec spec{"llama", llama_family_roles(), &llama_forward, &llama_kv_layout,
                             /*qkv_bias_required=*/false};
  return spec;
}

const ArchSpec* find_arch(const std::string& arch) {
  for (const ArchSpec* a : {&llama_arch(), &qwen2_arch(), &deepseek2_arch(), &gemma3_arch()}) {
    if (arch == a->name) return a;
  }
  return nullptr;
}

}  // namespace citadel
