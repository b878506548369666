// The gemma3 architecture (Gemma-3 text models, e.g. gemma-3-270m), as llama.cpp's GGUF files hold it (the
// converter already added the 1 of Gemma's (1 + weight) RMSNorm to every norm weight):
//
//   residual = embedding(tokens) * sqrt(dim)
//   per layer: normed = rmsnorm(residual) -> q|k|v = normed [Wq|Wk|Wv]^T -> per head rmsnorm(q), rmsnorm(k)
//              -> rope(q, k) -> K/V to the cache -> attn = paged causal attention (local layers: the last
//              sliding_window keys) -> delta = rmsnorm(attn Wo^T) (post-attention norm)
//              -> residual += delta; normed = rmsnorm(residual) (pre-FFN norm)
//              -> delta = rmsnorm((gelu_tanh(normed Wg^T) * normed Wu^T) Wd^T) (post-FFN norm)
//   logits = rmsnorm(residual + delta)[wanted rows] Wout^T (tied to the embedding)
//
// RoPE is NEOX (rotate_half) style; local layers rotate with theta 10000 unscaled, global ones with the file's theta
// and scaling. The attention scale is 1 / sqrt(head_dim) (query_pre_attn_scalar = head_dim in the released models).
#include <cmath>

#include "model/arch.h"

namespace citadel {

namespace {
using R = TensorRole;
using lin::kQkv;
using lin::kO;
using lin::kGateUp;
using lin::kDown;
}  // namespace

Status gemma3_forward(BackendOps& o, const ModelConfig& c) {
  RETURN_IF_ERROR(o.embed(R::kTokEmbd));
  RETURN_IF_ERROR(o.scale(Act::kResidual, static_cast<float>(std::sqrt(static_cast<double>(c.dim)))));
  for (int l = 0; l < c.n_layers; ++l) {
    RETURN_IF_ERROR(o.add_rmsnorm(/*add=*/l > 0, R::kAttnNorm, l));
    RETURN_IF_ERROR(o.linear(kQkv, l, Act::kNormed, Act::kQkv));
    RETURN_IF_ERROR(o.qk_norm(l));
    RETURN_IF_ERROR(o.rope_kv_write(l));
    RETURN_IF_ERROR(o.attention(l));
    RETURN_IF_ERROR(o.linear(kO, l, Act::kAttn, Act::kDelta));
    RETURN_IF_ERROR(o.rmsnorm(Act::kDelta, R::kPostAttnNorm, l));
    RETURN_IF_ERROR(o.add_rmsnorm(/*add=*/true, R::kFfnNorm, l));
    RETURN_IF_ERROR(o.linear_gelu_mul(kGateUp, l, Act::kNormed, Act::kFfn));
    RETURN_IF_ERROR(o.linear(kDown, l, Act::kFfn, Act::kDelta));
    RETURN_IF_ERROR(o.rmsnorm(Act::kDelta, R::kPostFfwNorm, l));
  }
  return o.logits(R::kOutputNorm, R::kOutput);
}

const ArchSpec& gemma3_arch() {
  using N = RoleNeed;
  static const ArchSpec spec{
      "gemma3",
      {{R::kTokEmbd, N::kRequired},    {R::kOutputNorm, N::kRequired},  {R::kOutput, N::kOptional},
       {R::kAttnNorm, N::kRequired},   {R::kWq, N::kRequired},          {R::kWk, N::kRequired},
       {R::kWv, N::kRequired},         {R::kAttnQNorm, N::kRequired},   {R::kAttnKNorm, N::kRequired},
       {R::kWo, N::kRequired},         {R::kPostAttnNorm, N::kRequired}, {R::kFfnNorm, N::kRequired},
       {R::kGate, N::kRequired},       {R::kUp, N::kRequired},          {R::kDown, N::kRequired},
       {R::kPostFfwNorm, N::kRequired}},
      &gemma3_forward,
      &llama_kv_layout,
      /*qkv_bias_required=*/false};
  return spec;
}

}  // namespace citadel
