// The exact path's MLA and MoE ops of CudaOps (cuda_ops.cuh), the GPU twin of model/cpu_ops.cc's: fp32 activations
// (the Impl::mm buffers hold fp32 values), the fp32 latent cache (kv_lora_rank + qk_rope values per token and layer,
// as the bf16 path's), fp32 weights (kF32) or bf16 ones (f32 activations), fp32 accumulation everywhere. Kernels of
// kernels/cuda/mla_moe_exact.h; the routing and the weighted combine are moe.h's, fp32 in both paths (moe_route is
// the bit-for-bit twin of model/moe.h). Every launch is graph-safe: decode steps replay as CUDA graphs.
//
// MLA, absorbed as the CPU does it: q_lat[t][h] = [W_UK_h q_nope | rope(q_rope)], attention over the cached
// [latent | rope key] rows (the first r values are the value), then W_UV per head into attn [T][H v].
// MoE: router logits -> moe_route (the k routed choices, then the S shared experts as slots E.. of weight 1) -> per
// (token, choice) pair silu(gate) * up and down of its expert slot -> the weighted sum into delta.
#include "kernels/cuda/mla_moe_exact.h"
#include "kernels/cuda/moe.h"
#include "runtime/cuda_ops.cuh"

namespace citadel::runtime {

namespace ck = citadel::cuda;
using Impl = CudaDecoder::Impl;

Status CudaOps::mla_rope_kv_write_exact(int layer) {
  if (!m_.rope_inv_freq) return Internal("cuda ops: MLA RoPE without its frequency table");
  const MlaW& w = m_.layers[layer].mla;
  ck::mla_rope_kv_write_f32(Impl::f32(m_.mm.q), Impl::f32(m_.mm.kv_a), Impl::f32(m_.mm.q_lat), mla_shape(m_.c), s_.T,
                            m_.d_ints + L_.positions, static_cast<const double*>(m_.rope_inv_freq), m_.rope_mscale,
                            Impl::f32(w.kv_a_norm), static_cast<float>(m_.c.norm_eps), m_.d_ints + L_.slots,
                            Impl::f32(m_.k_pool) + layer * m_.layer_pool(), m_.stream);
  return OkStatus();
}

Status CudaOps::mla_attention_exact(int layer) {
  const MlaConfig& c = m_.c.mla;
  const MlaW& w = m_.layers[layer].mla;
  const int T = s_.T, H = static_cast<int>(m_.c.n_heads);
  const int nope = static_cast<int>(c.qk_nope_dim), r = static_cast<int>(c.kv_lora_rank);
  const int v = static_cast<int>(c.v_head_dim), qk = nope + static_cast<int>(c.qk_rope_dim);
  const int lat = r + static_cast<int>(c.qk_rope_dim);
  const float* q = Impl::f32(m_.mm.q);
  float* q_lat = Impl::f32(m_.mm.q_lat);
  float* lat_out = Impl::f32(m_.mm.lat_out);
  const auto run = [&](const auto* k_b, const auto* v_b) {  // fp32 or bf16 absorption matrices
    // q_lat[t][h][0:r] = W_UK_h [r][nope] q_nope[t][h]
    ck::heads_gemv_f32(q, int64_t{H} * qk, qk, k_b, q_lat, int64_t{H} * lat, lat, T, H, r, nope, m_.stream);
    ck::mla_attention_f32(mla_params(layer), Impl::f32(m_.k_pool) + layer * m_.layer_pool(), mla_shape(m_.c), q_lat,
                          T, lat_out, m_.stream);
    // attn[t][h v] = W_UV_h [v][r] lat_out[t][h]
    ck::heads_gemv_f32(lat_out, int64_t{H} * r, r, v_b, Impl::f32(m_.attn), int64_t{H} * v, v, T, H, v, r,
                       m_.stream);
  };
  if (w32())
    run(Impl::f32(w.k_b), Impl::f32(w.v_b));
  else
    run(w.k_b, w.v_b);
  return OkStatus();
}

Status CudaOps::moe_exact(int layer) {
  const MoeConfig& e = m_.c.moe;
  const MoeW& w = m_.layers[layer].moe;
  const ck::MoeRouting rt = moe_rank_routing();
  const int T = s_.T, S = rt.n_shared;  // E, k: expert slots and choices, shared included (expert parallel: apart)
  const int E = static_cast<int>(m_.experts_held()) + S, k = static_cast<int>(e.n_experts_used) + S;
  const int D = m_.dim(), Fe = static_cast<int>(e.expert_ffn_dim);
  const float* x = Impl::f32(m_.h);
  RETURN_IF_ERROR(moe_shared_slice(layer));
  linear32(w.router, x, T, m_.mm.router);
  ck::moe_route(m_.mm.router, w.bias, rt, T, m_.mm.ids, m_.mm.weights, m_.stream);
  float* act = Impl::f32(m_.mm.act);
  const auto run = [&](const auto* gate, const auto* up, const auto* down) {  // fp32 or bf16 expert stacks
    ck::moe_gate_up_silu_f32(x, m_.mm.ids, T, k, gate, up, E, Fe, D, act, m_.stream);
    ck::moe_down_f32(act, m_.mm.ids, T, k, down, E, D, Fe, m_.mm.y, m_.stream);
  };
  if (w32())
    run(Impl::f32(w.gate.bf16), Impl::f32(w.up.bf16), Impl::f32(w.down.bf16));
  else
    run(w.gate.bf16, w.up.bf16, w.down.bf16);
  return moe_finish(T, k);
}

}  // namespace citadel::runtime
