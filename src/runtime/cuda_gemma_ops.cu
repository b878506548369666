// CudaOps (see cuda_ops.cuh): the ops Gemma-3 adds (model/arch/gemma3.cc), in the bf16 and the fp32 (exact) path:
// the embedding scale, the q/k norms and the post-attention / post-FFN norms of the delta. GeGLU is gated_ffn in
// cuda_ops.cu; sliding-window attention and the local layers' RoPE theta are in its attention / rope_kv_write.
#include "runtime/cuda_ops.cuh"

#include <string>

namespace citadel::runtime {

namespace ck = citadel::cuda;
using Impl = CudaDecoder::Impl;

// kResidual and kDelta are fp32 in both paths; kNormed is bf16 in the bf16 path. All three are [T][D].
Status CudaOps::scale(Act a, float s) {
  if (a != Act::kResidual && a != Act::kDelta && a != Act::kNormed)
    return Internal("cuda ops: scale runs on the residual, the delta or the normed rows only");
  const int64_t n = int64_t{s_.T} * m_.dim();
  if (a != Act::kNormed || exact())
    ck::scale_f32(Impl::f32(buffer(a)), n, s, m_.stream);
  else
    ck::scale_bf16(m_.h, n, s, m_.stream);
  return OkStatus();
}

Status CudaOps::qk_norm(int layer) {
  if (layer < 0 || layer >= static_cast<int>(m_.layers.size())) return Internal("cuda ops: qk_norm layer");
  const LayerW& l = m_.layers[layer];
  if (!l.q_norm || !l.k_norm) return Internal("cuda ops: qk_norm of a model without q/k norms");
  const ModelConfig& c = m_.c;
  const int H = static_cast<int>(c.n_heads), KVH = static_cast<int>(c.n_kv_heads), hd = static_cast<int>(c.head_dim);
  const float eps = static_cast<float>(c.norm_eps);
  if (exact())
    ck::head_rmsnorm_f32(Impl::f32(m_.qkv), s_.T, m_.qkv_rows(), H, KVH, hd, Impl::f32(l.q_norm), Impl::f32(l.k_norm),
                         eps, m_.stream);
  else if (!(skip_ & kSkipNorm))
    ck::head_rmsnorm(m_.qkv, s_.T, m_.qkv_rows(), H, KVH, hd, l.q_norm, l.k_norm, eps, m_.stream);
  return OkStatus();
}

Status CudaOps::delta_rmsnorm(TensorRole norm, int layer) {
  if (norm != TensorRole::kPostAttnNorm && norm != TensorRole::kPostFfwNorm)
    return Internal(std::string("cuda ops: rmsnorm of the delta with ") + role_name(norm));
  const bf16_t* w = norm_weight(norm, layer);
  if (!w) return Internal(std::string("cuda ops: rmsnorm: ") + role_name(norm) + " is not held by the decoder");
  const float eps = static_cast<float>(m_.c.norm_eps);
  if (exact())
    ck::rmsnorm_f32(m_.delta, s_.T, m_.dim(), Impl::f32(w), eps, m_.stream);
  else if (!(skip_ & kSkipNorm))
    ck::rmsnorm_f32(m_.delta, s_.T, m_.dim(), w, eps, m_.stream);
  return OkStatus();
}

}  // namespace citadel::runtime
