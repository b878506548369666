// The deepseek2 architecture (DeepSeek-V2, V2-Lite, V3, R1): multi-head latent attention (MLA) and mixture of
// experts (MoE), as llama.cpp's GGUF files name them (REFERENCES.md §6):
//
//   residual = embedding(tokens)
//   per layer: normed = rmsnorm(residual)
//              q = normed Wq^T (V2-Lite) or rmsnorm(normed Wq_a^T) Wq_b^T (V3)    per head: q_nope | q_rope
//              kv_a = normed Wkv_a^T = latent | k_rope; latent = rmsnorm(latent); rope(q_rope, k_rope)
//              cache <- latent | k_rope (kv_lora_rank + qk_rope values per token)
//              attn = MLA attention (recipe.h) -> delta = attn Wo^T
//              residual += delta; normed = rmsnorm(residual)
//              first n_dense_layers: delta = dense SwiGLU FFN(normed)
//              then: delta = shared experts' SwiGLU(normed) + sum of the selected experts' SwiGLU(normed) * weight
//   logits = rmsnorm(residual + delta)[wanted rows] Wout^T
//
// HF checkpoints (safetensors + config.json) bind the same roles under their HF names (roles.h): kv_b_proj is split
// like attn_kv_b, routed experts (fused or one tensor per expert) and FP8 block-scaled weights are assembled by
// model/role_source.h.
//
// RoPE rotates adjacent pairs of the rope dims in every file format. YaRN (V2/V3 ship factor 40, original context
// 4096): the frequencies blend as in rope.h, cos/sin are not rescaled (mscale == mscale_all_dim), and the softmax scale
// is mscale^2 / sqrt(qk_nope + qk_rope) (config.h attention_scale).
#include <string>

#include "kernels/quant/quant.h"
#include "model/arch.h"
#include "model/role_source.h"
#include "model/weights.h"

namespace citadel {

namespace {
using R = TensorRole;

bool has(const RoleWeights& L, TensorRole role) {
  const size_t i = static_cast<size_t>(role);
  return role_info(role).matrix ? L.mat[i].data != nullptr : L.vec[i] != nullptr;
}

// attn_k_b [H, r, qk_nope] and attn_v_b [H, v, r] (f32) from attn_kv_b [H (qk_nope + v), r]: per head, the first
// qk_nope rows are W_UK (stored transposed as k_b), the next v rows W_UV.
Status split_kv_b(ModelWeights* w, RoleWeights* L, const std::string& name) {
  const ModelConfig& c = w->config;
  const int64_t H = c.n_heads, r = c.mla.kv_lora_rank, nope = c.mla.qk_nope_dim, v = c.mla.v_head_dim;
  const WeightView& kv = L->mat[static_cast<size_t>(R::kWkvB)];
  std::vector<float> row(static_cast<size_t>(r)), kb(static_cast<size_t>(H * r * nope)), vb(static_cast<size_t>(H * v * r));
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t i = 0; i < nope + v; ++i) {
      const int64_t src = h * (nope + v) + i;
      Status st = dequantize_row(kv.dtype, static_cast<const uint8_t*>(kv.data) + src * kv.row_bytes(), row.data(), r);
      if (!st.ok()) return Unsupported(w->store->path() + ": " + name + ": " + st.message());
      for (int64_t j = 0; j < r; ++j) {
        if (i < nope) kb[static_cast<size_t>((h * r + j) * nope + i)] = row[static_cast<size_t>(j)];
        else vb[static_cast<size_t>((h * v + i - nope) * r + j)] = row[static_cast<size_t>(j)];
      }
    }
  }
  w->owned.push_back(std::move(kb));
  L->mat[static_cast<size_t>(R::kWkB)] = WeightView{DType::kF32, w->owned.back().data(), H * r, nope};
  w->owned.push_back(std::move(vb));
  L->mat[static_cast<size_t>(R::kWvB)] = WeightView{DType::kF32, w->owned.back().data(), H * v, r};
  return OkStatus();
}

// Per layer: the query roles of the file's kind (q_lora or not), k_b/v_b (or kv_b to split), and the FFN roles of a
// dense or an MoE layer.
Status deepseek2_finish(ModelWeights* w) {
  const ModelConfig& c = w->config;
  const std::string& path = w->store->path();
  const std::string& fmt = w->store->format();
  for (int l = 0; l < c.n_layers; ++l) {
    RoleWeights& L = w->layers[static_cast<size_t>(l)];
    auto need = [&](std::initializer_list<TensorRole> roles) -> Status {
      for (TensorRole role : roles) {
        if (!has(L, role)) return DataLoss(path + ": tensor " + role_tensor_names(role, l, fmt) + " is missing");
      }
      return OkStatus();
    };
    if (c.mla.q_lora_rank > 0) RETURN_IF_ERROR(need({R::kWqA, R::kQANorm, R::kWqB}));
    else RETURN_IF_ERROR(need({R::kWq}));
    if (!has(L, R::kWkB) || !has(L, R::kWvB)) {
      if (!has(L, R::kWkvB)) {
        return DataLoss(path + ": tensors " + tensor_name(R::kWkB, l, fmt) + " and " + tensor_name(R::kWvB, l, fmt) +
                        " (or " + tensor_name(R::kWkvB, l, fmt) + ") are missing");
      }
      RETURN_IF_ERROR(split_kv_b(w, &L, tensor_name(R::kWkvB, l, fmt)));
    }
    if (!c.has_moe || l < c.moe.n_dense_layers) {
      RETURN_IF_ERROR(need({R::kGate, R::kUp, R::kDown}));
      continue;
    }
    RETURN_IF_ERROR(need({R::kFfnGateInp, R::kGateExps, R::kUpExps, R::kDownExps}));
    if (c.moe.n_shared > 0) RETURN_IF_ERROR(need({R::kGateShexp, R::kUpShexp, R::kDownShexp}));
    if (c.moe.sigmoid_gating) RETURN_IF_ERROR(need({R::kExpProbsB}));
  }
  return OkStatus();
}

constexpr Linear kWq{{R::kWq}, 1};
constexpr Linear kWqA{{R::kWqA}, 1};
constexpr Linear kWqB{{R::kWqB}, 1};
constexpr Linear kWkvA{{R::kWkvA}, 1};
using lin::kO;
using lin::kGateUp;
using lin::kDown;

}  // namespace

Status deepseek2_forward(BackendOps& o, const ModelConfig& c) {
  RETURN_IF_ERROR(o.embed(R::kTokEmbd));
  for (int l = 0; l < c.n_layers; ++l) {
    RETURN_IF_ERROR(o.add_rmsnorm(/*add=*/l > 0, R::kAttnNorm, l));
    if (c.mla.q_lora_rank > 0) {
      RETURN_IF_ERROR(o.linear(kWqA, l, Act::kNormed, Act::kQA));
      RETURN_IF_ERROR(o.rmsnorm(Act::kQA, R::kQANorm, l));
      RETURN_IF_ERROR(o.linear(kWqB, l, Act::kQA, Act::kQ));
    } else {
      RETURN_IF_ERROR(o.linear(kWq, l, Act::kNormed, Act::kQ));
    }
    RETURN_IF_ERROR(o.linear(kWkvA, l, Act::kNormed, Act::kKvA));
    RETURN_IF_ERROR(o.mla_rope_kv_write(l));
    RETURN_IF_ERROR(o.mla_attention(l));
    RETURN_IF_ERROR(o.linear(kO, l, Act::kAttn, Act::kDelta));
    RETURN_IF_ERROR(o.add_rmsnorm(/*add=*/true, R::kFfnNorm, l));
    if (!c.has_moe || l < c.moe.n_dense_layers) {
      RETURN_IF_ERROR(o.linear_silu_mul(kGateUp, l, Act::kNormed, Act::kFfn));
      RETURN_IF_ERROR(o.linear(kDown, l, Act::kFfn, Act::kDelta));
    } else {
      RETURN_IF_ERROR(o.moe(l, Act::kNormed, Act::kDelta));  // shared experts + routed experts
    }
  }
  return o.logits(R::kOutputNorm, R::kOutput);
}

// One row per token: the normalised latent, then the roped shared key.
KvLayout deepseek2_kv_layout(const ModelConfig& c) {
  KvLayout k{{KvPart{"latent_rope", 1, c.mla.kv_lora_rank + c.mla.qk_rope_dim}}};
  k.shared_value = c.mla.kv_lora_rank;
  return k;
}

const ArchSpec& deepseek2_arch() {
  using N = RoleNeed;
  // Layer roles that depend on the layer's kind are optional here and checked by deepseek2_finish.
  static const ArchSpec spec{
      "deepseek2",
      {{R::kTokEmbd, N::kRequired},   {R::kOutputNorm, N::kRequired}, {R::kOutput, N::kOptional},
       {R::kAttnNorm, N::kRequired},  {R::kWq, N::kOptional},         {R::kWqA, N::kOptional},
       {R::kQANorm, N::kOptional},    {R::kWqB, N::kOptional},        {R::kWkvA, N::kRequired},
       {R::kKvANorm, N::kRequired},   {R::kWkB, N::kOptional},        {R::kWvB, N::kOptional},
       {R::kWkvB, N::kOptional},      {R::kWo, N::kRequired},         {R::kFfnNorm, N::kRequired},
       {R::kGate, N::kOptional},      {R::kUp, N::kOptional},         {R::kDown, N::kOptional},
       {R::kFfnGateInp, N::kOptional}, {R::kExpProbsB, N::kOptional}, {R::kGateExps, N::kOptional},
       {R::kUpExps, N::kOptional},    {R::kDownExps, N::kOptional},   {R::kGateShexp, N::kOptional},
       {R::kUpShexp, N::kOptional},   {R::kDownShexp, N::kOptional}},
      &deepseek2_forward,
      &deepseek2_kv_layout,
      /*qkv_bias_required=*/false,
      &deepseek2_finish};
  return spec;
}

}  // namespace citadel
