// The deepseek2 parts of the CUDA decoder: MLA and MoE weights and buffers (CudaDecoder::Impl) and the recipe's
// MLA / MoE ops (CudaOps) of the bf16 path, over kernels/cuda/mla.h and moe.h. The exact path's ops (fp32
// activations and latent cache) are in cuda_mla_moe_exact.cu; each op here hands over to them first.
//
// MLA, absorbed: q_lat[t][h] = [W_UK_h q_nope | rope(q_rope)] (a GEMV per head for few tokens, else a batched GEMM;
// then the rope kernel writes the rope part), attention over the cached [latent | rope key] rows of the layer (one
// shared latent head, the first r values are the value), then W_UV per head (the same way) into attn [T][H v].
// MoE: router logits (fp32) -> selection on the device (moe_route, the twin of model/moe.h) -> gate|up SiLU and down
// per (token, choice) pair for steps of a few tokens (moe_pair_*), else pairs sorted by expert and grouped (GEMV
// kernels that read each used expert's weights once a step, or tensor-core tiles of each expert's pairs for steps
// with several pairs per expert) -> weighted sum added to delta. Every launch is graph-safe: decode steps replay as
// CUDA graphs.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "base/env.h"
#include "kernels/cuda/mla.h"
#include "kernels/cuda/moe.h"
#include "runtime/cuda_ops.cuh"
#include "runtime/cuda_status.cuh"
#include "runtime/device_comm.h"

namespace citadel::runtime {

namespace ck = citadel::cuda;
using R = TensorRole;
using Impl = CudaDecoder::Impl;

Status CudaDecoder::Impl::alloc_mla_moe_layer(LayerW& l, int layer) {
  const int64_t D = c.dim, H = c.n_heads;
  const MlaConfig& m = c.mla;
  if (c.has_mla) {
    const int64_t qk = m.qk_nope_dim + m.qk_rope_dim, r = m.kv_lora_rank;
    if (m.q_lora_rank > 0) {
      RETURN_IF_ERROR(alloc_linear(&l.mla.q_a, m.q_lora_rank, D, false));
      RETURN_IF_ERROR(alloc_e(&l.mla.q_a_norm, m.q_lora_rank, "q_a norm"));
      RETURN_IF_ERROR(alloc_linear(&l.mla.q_b, H * qk, m.q_lora_rank, false));
    } else {
      RETURN_IF_ERROR(alloc_linear(&l.mla.q, H * qk, D, false));
    }
    RETURN_IF_ERROR(alloc_linear(&l.mla.kv_a, r + m.qk_rope_dim, D, false));
    RETURN_IF_ERROR(alloc_e(&l.mla.kv_a_norm, r, "kv_a norm"));
    // The absorptions: fp32 with kF32, else bf16 (the norms: esz()).
    const int64_t we = tensor_esz(R::kWkB);
    RETURN_IF_ERROR(alloc_e(&l.mla.k_b, H * r * m.qk_nope_dim, "attn_k_b", we));
    RETURN_IF_ERROR(alloc_e(&l.mla.v_b, H * m.v_head_dim * r, "attn_v_b", we));
    extra_weight_bytes += we * H * r * (m.qk_nope_dim + m.v_head_dim) + esz() * (r + m.q_lora_rank);
  }
  if (!moe_layer(layer)) return OkStatus();
  const MoeConfig& e = c.moe;
  const int64_t E = e.n_experts, Fe = e.expert_ffn_dim;
  const int64_t slots = experts_held() + stack_shared();  // shared experts (one rank): slots after the routed ones
  RETURN_IF_ERROR(alloc_linear(&l.moe.router, E, D, false));  // every rank routes over all E experts
  l.moe.router.keep_bf16 = true;  // the choice of experts stays that of the unquantised router
  if (e.sigmoid_gating) RETURN_IF_ERROR(alloc_n(&l.moe.bias, E, "expert selection bias"));
  RETURN_IF_ERROR(alloc_linear(&l.moe.gate, slots * Fe, D, false));
  RETURN_IF_ERROR(alloc_linear(&l.moe.up, slots * Fe, D, false));
  RETURN_IF_ERROR(alloc_linear(&l.moe.down, slots * D, Fe, false));
  if (expert_parallel() && e.n_shared > 0) {  // this rank's slice of the shared experts, as a dense FFN
    RETURN_IF_ERROR(alloc_linear(&l.gate_up, 2 * shared_width(), D, false));
    RETURN_IF_ERROR(alloc_linear(&l.down, D, shared_width(), false));
  }
  extra_weight_bytes += e.sigmoid_gating ? 4 * E : 0;
  return OkStatus();
}

// The shared experts were written where slots E..E+S-1 live (gate and up as S experts already; down as one [D][S Fe]
// matrix). down is reordered in place to S experts [D][Fe] (one copy out, then S strided copies back; S == 1 needs
// nothing).
Status CudaDecoder::Impl::place_shared_experts() {
  const int64_t S = stack_shared(), E = experts_held(), Fe = c.moe.expert_ffn_dim, D = c.dim;
  if (!c.has_moe || S <= 0) return OkStatus();
  const size_t esz = tensor_esz(R::kDownShexp), bytes = static_cast<size_t>(S * D * Fe) * esz;
  auto tail = [&](const LinearW& w) { return reinterpret_cast<char*>(w.bf16) + E * D * Fe * esz; };
  if (S == 1) return OkStatus();
  void* raw = nullptr;
  CUDA_TRY(cudaMalloc(&raw, bytes));
  const std::unique_ptr<void, cudaError_t (*)(void*)> tmp(raw, cudaFree);
  for (int layer = 0; layer < c.n_layers; ++layer) {
    if (!moe_layer(layer)) continue;
    char* down = tail(layers[static_cast<size_t>(layer)].moe.down);
    CUDA_TRY(cudaMemcpyAsync(raw, down, bytes, cudaMemcpyDeviceToDevice, stream));
    for (int64_t j = 0; j < S; ++j)
      CUDA_TRY(cudaMemcpy2DAsync(down + j * D * Fe * esz, Fe * esz, static_cast<char*>(raw) + j * Fe * esz,
                                 S * Fe * esz, Fe * esz, D, cudaMemcpyDeviceToDevice, stream));
  }
  CUDA_TRY(cudaStreamSynchronize(stream));  // before tmp is freed
  return OkStatus();
}

void* CudaDecoder::Impl::mla_moe_weight_ptr(TensorRole r, LayerW& l) {
  // Shared experts: after the routed ones (down: in its [D][S Fe] layout until place_shared_experts); expert
  // parallel: the rank's slice in gate_up (gate rows, then up rows) and down.
  const int64_t shared_at = experts_held() * c.moe.expert_ffn_dim * c.dim * tensor_esz(r);
  auto shared = [&](const LinearW& w) -> void* {
    return c.moe.n_shared > 0 && w.bf16 ? reinterpret_cast<char*>(w.bf16) + shared_at : nullptr;
  };
  if (expert_parallel() && l.moe.router.bf16 && l.gate_up.bf16) {  // an MoE layer's
    if (r == R::kGateShexp) return l.gate_up.bf16;
    if (r == R::kUpShexp) return reinterpret_cast<char*>(l.gate_up.bf16) + shared_width() * c.dim * tensor_esz(r);
    if (r == R::kDownShexp) return l.down.bf16;
  }
  switch (r) {
    case R::kWq: return l.mla.q.bf16;
    case R::kWqA: return l.mla.q_a.bf16;
    case R::kQANorm: return l.mla.q_a_norm;
    case R::kWqB: return l.mla.q_b.bf16;
    case R::kWkvA: return l.mla.kv_a.bf16;
    case R::kKvANorm: return l.mla.kv_a_norm;
    case R::kWkB: return l.mla.k_b;
    case R::kWvB: return l.mla.v_b;
    case R::kFfnGateInp: return l.moe.router.bf16;
    case R::kExpProbsB: return l.moe.bias;
    case R::kGateExps: return l.moe.gate.bf16;
    case R::kUpExps: return l.moe.up.bf16;
    case R::kDownExps: return l.moe.down.bf16;
    case R::kGateShexp: return shared(l.moe.gate);
    case R::kUpShexp: return shared(l.moe.up);
    case R::kDownShexp: return shared(l.moe.down);
    default: return nullptr;
  }
}

Status CudaDecoder::Impl::alloc_mla_moe_runtime() {
  const int64_t T = opt.max_step_tokens, D = c.dim, H = c.n_heads;
  const MlaConfig& m = c.mla;
  if (c.has_mla) {
    const int64_t lat = m.kv_lora_rank + m.qk_rope_dim;
    RETURN_IF_ERROR(alloc_e(&mm.q, T * H * (m.qk_nope_dim + m.qk_rope_dim), "mla q"));
    if (m.q_lora_rank > 0) RETURN_IF_ERROR(alloc_e(&mm.q_a, T * m.q_lora_rank, "mla q_a"));
    RETURN_IF_ERROR(alloc_e(&mm.kv_a, T * lat, "mla kv_a"));
    RETURN_IF_ERROR(alloc_e(&mm.q_lat, T * H * lat, "mla absorbed query"));
    RETURN_IF_ERROR(alloc_e(&mm.lat_out, T * H * m.kv_lora_rank, "mla latent output"));
  }
  if (c.has_moe) {  // k routed + S shared choices per token over E + S expert slots (expert parallel: S = 0)
    const int64_t S = stack_shared(), E = experts_held() + S, k = c.moe.n_experts_used + S;
    const int64_t Fe = c.moe.expert_ffn_dim;
    if (T * k > ck::kMoeMaxPairs)
      return Unsupported("cuda decoder: max_step_tokens x experts per token exceeds " +
                         std::to_string(ck::kMoeMaxPairs) + " (MoE pair sort)");
    RETURN_IF_ERROR(alloc_n(&mm.router, T * c.moe.n_experts, "router logits"));
    RETURN_IF_ERROR(alloc_n(&mm.ids, T * k, "expert ids"));
    if (S > 0) {
      RETURN_IF_ERROR(alloc_n(&mm.shared_ids, T * k, "shared expert ids"));
      std::vector<int32_t> sid(static_cast<size_t>(T * k), 0);
      for (int64_t i = 0; i < T * k; ++i)
        if (i % k >= k - S) sid[i] = static_cast<int32_t>(c.moe.n_experts + i % k - (k - S));
      CUDA_TRY(cudaMemcpy(mm.shared_ids, sid.data(), sizeof(int32_t) * sid.size(), cudaMemcpyHostToDevice));
      CUDA_TRY(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
      CUDA_TRY(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
      CUDA_TRY(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    }
    RETURN_IF_ERROR(alloc_n(&mm.weights, T * k, "expert weights"));
    RETURN_IF_ERROR(alloc_n(&mm.offsets, E + 1, "expert offsets"));
    RETURN_IF_ERROR(alloc_n(&mm.pairs, T * k, "expert pairs"));
    RETURN_IF_ERROR(alloc_e(&mm.act, T * k * Fe, "expert activations"));
    RETURN_IF_ERROR(alloc_n(&mm.y, T * k * D, "expert outputs"));
  }
  return OkStatus();
}

Status mla_layer_ok(const CudaDecoder::Impl& m, int layer, const char* op) {
  if (!m.c.has_mla || layer < 0 || layer >= static_cast<int>(m.layers.size()))
    return Internal(std::string("cuda ops: ") + op + " needs an MLA layer");
  return OkStatus();
}
ck::MlaShape mla_shape(const ModelConfig& c) {
  return ck::MlaShape{static_cast<int>(c.n_heads), static_cast<int>(c.mla.qk_nope_dim),
                      static_cast<int>(c.mla.qk_rope_dim), static_cast<int>(c.mla.kv_lora_rank)};
}

Status CudaOps::rmsnorm(Act a, TensorRole norm, int layer) {
  if (a == Act::kDelta) return delta_rmsnorm(norm, layer);  // gemma3's post norms
  RETURN_IF_ERROR(mla_layer_ok(m_, layer, "rmsnorm"));
  if (a != Act::kQA || norm != R::kQANorm) return Internal("cuda ops: rmsnorm runs q_a with its norm only");
  const int qa = static_cast<int>(m_.c.mla.q_lora_rank);
  if (exact()) {
    ck::rmsnorm_f32(Impl::f32(m_.mm.q_a), s_.T, qa, Impl::f32(m_.layers[layer].mla.q_a_norm),
                    static_cast<float>(m_.c.norm_eps), m_.stream);
    return OkStatus();
  }
  ck::rmsnorm_rows(m_.mm.q_a, s_.T, qa, qa, m_.layers[layer].mla.q_a_norm, static_cast<float>(m_.c.norm_eps),
                   m_.stream);
  return OkStatus();
}

// The absorptions: per-head GEMVs for few tokens (heads_gemv_bf16: weights in registers before the PDL wait), else
// cuBLAS batched GEMMs; with the GEMVs, W_UK's runs in mla_rope_kv_write's launch (mla_rope_absorb).
// CITADEL_MLA_ABSORB=cublas keeps cuBLAS, =apart the GEMVs in launches of their own (benchmarks: before / after in one
// binary).
bool CudaOps::absorb_with_gemv(int T) const {
  static const bool cublas_only = env_is("CITADEL_MLA_ABSORB", "cublas");
  const MlaConfig& c = m_.c.mla;
  const int r = static_cast<int>(c.kv_lora_rank), nope = static_cast<int>(c.qk_nope_dim);
  return !cublas_only && ck::heads_gemv_supported(T, r, nope) &&
         ck::heads_gemv_supported(T, static_cast<int>(c.v_head_dim), r);
}
bool CudaOps::absorb_with_rope(int T) const {
  static const bool apart = env_is("CITADEL_MLA_ABSORB", "apart");
  const MlaConfig& c = m_.c.mla;
  return !apart && absorb_with_gemv(T) && (c.qk_nope_dim + c.qk_rope_dim) % 8 == 0 &&
         (c.kv_lora_rank + c.qk_rope_dim) % 8 == 0;
}

Status CudaOps::mla_rope_kv_write(int layer) {
  RETURN_IF_ERROR(mla_layer_ok(m_, layer, "mla_rope_kv_write"));
  if (exact()) return mla_rope_kv_write_exact(layer);
  if (skip_ & kSkipRopeKv) return OkStatus();
  const MlaW& w = m_.layers[layer].mla;
  const ck::MlaShape ms = mla_shape(m_.c);
  const int32_t* pos = m_.d_ints + L_.positions;
  const float* freq = static_cast<const float*>(m_.rope_inv_freq);
  const float mscale = static_cast<float>(m_.rope_mscale), eps = static_cast<float>(m_.c.norm_eps);
  bf16_t* cache = m_.k_pool + layer * m_.layer_pool();
  // Few tokens: mla_attention's W_UK absorption runs in this launch too (it needs only q), one launch fewer.
  if (absorb_with_rope(s_.T) && !(skip_ & kSkipAttention)) {
    ck::mla_rope_absorb(m_.mm.q, m_.mm.kv_a, m_.mm.q_lat, ms, s_.T, pos, freq, mscale, w.kv_a_norm, eps,
                        m_.d_ints + L_.slots, cache, w.k_b, m_.stream);
    absorbed_layer_ = layer;
    return OkStatus();
  }
  ck::mla_rope_kv_write(m_.mm.q, m_.mm.kv_a, m_.mm.q_lat, ms, s_.T, pos, freq, mscale, w.kv_a_norm, eps,
                        m_.d_ints + L_.slots, cache, m_.stream);
  return OkStatus();
}

ck::MlaAttention CudaOps::mla_params(int layer) const {
  ck::MlaAttention p;
  p.cache = m_.exact() ? nullptr : m_.k_pool + layer * m_.layer_pool();
  p.block_tables = m_.d_ints + L_.tables, p.seq_lens = m_.d_ints + L_.seq_lens;
  p.positions = m_.d_ints + L_.positions;
  p.query_start = s_.decode ? nullptr : m_.d_ints + L_.total;
  p.max_blocks_per_seq = m_.max_blocks, p.block_size = m_.opt.block_size;
  p.scale = static_cast<float>(attention_scale(m_.c));
  // Decode: the step's own key row is the only one mla_rope_kv_write (the launch before) writes. CITADEL_MLA_EARLY=0
  // copies every key after the PDL wait (benchmarks: before / after in one binary).
  static const bool late = env_is("CITADEL_MLA_EARLY", "0");
  p.early_keys = s_.decode && !late;
  return p;
}

Status CudaOps::mla_attention(int layer) {
  RETURN_IF_ERROR(mla_layer_ok(m_, layer, "mla_attention"));
  if (exact()) return mla_attention_exact(layer);
  if (skip_ & kSkipAttention) return OkStatus();
  const MlaConfig& c = m_.c.mla;
  const MlaW& w = m_.layers[layer].mla;
  const int T = s_.T, H = static_cast<int>(m_.c.n_heads);
  const int64_t nope = c.qk_nope_dim, qk = nope + c.qk_rope_dim, r = c.kv_lora_rank, v = c.v_head_dim;
  const int64_t lat = r + c.qk_rope_dim;
  const bool gemv = absorb_with_gemv(T);
  // q_lat[t][h][0:r] = W_UK_h [r][nope] q_nope[t][h] (already there when mla_rope_kv_write ran it)
  const bool absorbed = absorbed_layer_ == layer;
  absorbed_layer_ = -1;
  if (!absorbed) {
    if (gemv)
      ck::heads_gemv_bf16(m_.mm.q, H * qk, qk, w.k_b, m_.mm.q_lat, H * lat, lat, T, H, static_cast<int>(r),
                          static_cast<int>(nope), m_.stream);
    else
      ck::gemm_bf16_batched(g_.cublas, m_.mm.q, H * qk, qk, w.k_b, r * nope, m_.mm.q_lat, H * lat, lat, T,
                            static_cast<int>(r), static_cast<int>(nope), H);
  }
  const ck::MlaAttention p = mla_params(layer);
  // CITADEL_MLA_PATH=simt keeps the attention off tensor cores (benchmarks: before / after in one binary).
  static const bool simt_only = env_is("CITADEL_MLA_PATH", "simt");
  if (simt_only)
    ck::mla_attention_run(p, mla_shape(m_.c), m_.mm.q_lat, T, m_.mm.lat_out, ck::mla_attention_plan(T, H), m_.stream);
  else
    ck::mla_attention(p, mla_shape(m_.c), m_.mm.q_lat, T, m_.mm.lat_out, m_.stream);
  // attn[t][h v] = W_UV_h [v][r] lat_out[t][h]
  if (gemv)
    ck::heads_gemv_bf16(m_.mm.lat_out, H * r, r, w.v_b, m_.attn, H * v, v, T, H, static_cast<int>(v),
                        static_cast<int>(r), m_.stream);
  else
    ck::gemm_bf16_batched(g_.cublas, m_.mm.lat_out, H * r, r, w.v_b, v * r, m_.attn, H * v, v, T,
                          static_cast<int>(v), static_cast<int>(r), H);
  return OkStatus();
}

// Which kernels run the experts. The per-pair GEMV (moe_pair_*) streams each pair's expert rows with the dense
// GEMV's memory parallelism and needs no sort: steps of a few tokens (batch-1 decode). The grouped GEMV reads each
// used expert's weights once and suits steps with about one pair per expert; the tensor-core tiles (moe_mma_*)
// everything with more pairs per expert. CITADEL_MOE_PATH=pair|gemv|mma forces one where it applies (benchmarks:
// before / after in one binary). Quantised experts: the grouped GEMV (it dequantises as it reads), at every T, like
// the dense int8 / int4 matrices.
MoePath moe_path(int T, int k, int E, bool quantized) {
  static const bool gemv = env_is("CITADEL_MOE_PATH", "gemv"), mma = env_is("CITADEL_MOE_PATH", "mma");
  static const bool pair = env_is("CITADEL_MOE_PATH", "pair");
  if (gemv || quantized) return MoePath::kGemv;
  if (mma) return MoePath::kMma;
  if (pair || T <= kPairMaxTokens) return MoePath::kPair;  // moe() checks T * (k + shared) <= kMoePairMaxPairs
  return T * k >= kMmaPairsPerExpert * E ? MoePath::kMma : MoePath::kGemv;
}

namespace {
// An expert stack as the grouped kernels take it (bf16, int8 or int4; quantize() has run).
ck::MoeMatrix moe_matrix(const LinearW& w) {
  switch (w.fmt) {
    case CudaWeightFormat::kInt8: return ck::MoeMatrix{w.q, w.scales, ck::MoeWeightFormat::kInt8};
    case CudaWeightFormat::kInt4: return ck::MoeMatrix{w.q, w.scales, ck::MoeWeightFormat::kInt4};
    default: return ck::MoeMatrix{w.bf16, nullptr, ck::MoeWeightFormat::kBf16};
  }
}
}  // namespace

ck::MoeRouting moe_routing(const MoeConfig& e) {
  ck::MoeRouting rt;
  rt.n_experts = static_cast<int>(e.n_experts), rt.n_used = static_cast<int>(e.n_experts_used);
  rt.n_shared = static_cast<int>(e.n_shared);
  rt.n_group = std::max<int>(1, static_cast<int>(e.n_group));
  rt.topk_group = e.n_group > 1 ? static_cast<int>(e.topk_group) : 1;
  rt.sigmoid = e.sigmoid_gating, rt.norm_topk = e.norm_topk, rt.routed_scale = static_cast<float>(e.routed_scale);
  return rt;
}

ck::MoeRouting CudaOps::moe_rank_routing() const {
  ck::MoeRouting rt = moe_routing(m_.c.moe);
  if (m_.expert_parallel()) {
    rt.n_shared = 0;
    const auto [eb, ee] = tp_expert_range(m_.c, m_.tp_rank, m_.tp_ranks);
    rt.expert_begin = static_cast<int>(eb), rt.expert_end = static_cast<int>(ee);
  }
  return rt;
}

Status CudaOps::moe_shared_slice(int layer) {
  if (!m_.expert_parallel() || m_.c.moe.n_shared <= 0) return OkStatus();
  RETURN_IF_ERROR(gated_ffn(lin::kGateUp, layer, Act::kNormed, Act::kFfn, false, "moe (shared experts)"));
  const LinearW& down = m_.layers[layer].down;  // [D][shared_width]: a partial sum until moe_finish
  if (exact())
    linear32(down, Impl::f32(m_.act), s_.T, m_.delta);
  else
    down.forward(g_, m_.act, s_.T, m_.delta, true);
  return OkStatus();
}

Status CudaOps::moe_finish(int T, int k) {
  const bool shared_apart = m_.expert_parallel() && m_.c.moe.n_shared > 0;  // delta holds their slice already
  ck::moe_combine(m_.mm.y, m_.mm.weights, T, k, m_.dim(), m_.delta, shared_apart, m_.stream, m_.expert_parallel());
  if (!m_.expert_parallel()) return OkStatus();
  return m_.opt.comm->all_reduce_sum_f32(m_.delta, int64_t{T} * m_.dim(), m_.stream);
}

Status CudaOps::moe(int layer, Act in, Act out) {
  if (!m_.moe_layer(layer) || layer >= static_cast<int>(m_.layers.size()))
    return Internal("cuda ops: moe needs an MoE layer");
  if (in != Act::kNormed || out != Act::kDelta) return Internal("cuda ops: moe runs normed -> delta only");
  if (exact()) return moe_exact(layer);
  if (skip_ & kSkipFfn) return OkStatus();
  const MoeConfig& e = m_.c.moe;
  const MoeW& w = m_.layers[layer].moe;
  // The shared experts are S more choices of every token (slots E_routed ..): the routed launches run them too, or
  // launches of their own on the side stream.
  const int T = s_.T, Er = static_cast<int>(e.n_experts), kr = static_cast<int>(e.n_experts_used);
  const int D = m_.dim(), Fe = static_cast<int>(e.expert_ffn_dim);
  const bool quantized = w.gate.fmt != CudaWeightFormat::kBf16 || w.down.fmt != CudaWeightFormat::kBf16;
  const ck::MoeRouting rt = moe_rank_routing();
  const int E = static_cast<int>(m_.experts_held()) + rt.n_shared, k = kr + rt.n_shared;  // slots, choices
  RETURN_IF_ERROR(moe_shared_slice(layer));
  MoePath path = moe_path(T, kr, Er, quantized);
  if (path == MoePath::kPair && T * k > ck::kMoePairMaxPairs) path = MoePath::kGemv;
  // The shared experts need no routing: on the side stream they overlap the router and the routing (few tokens).
  // CITADEL_MOE_SHARED=inline keeps them in the routed launches (benchmarks: before / after in one binary).
  static const bool inline_shared = env_is("CITADEL_MOE_SHARED", "inline");
  const bool side = path == MoePath::kPair && rt.n_shared > 0 && !inline_shared;
  // The down launches read ids before their PDL wait (written by moe_route two launches back, or constant);
  // CITADEL_MOE_EARLY=0 reads them after it (benchmarks: before / after in one binary).
  static const bool early = !env_is("CITADEL_MOE_EARLY", "0");
  if (side) {
    const ck::MoePairLaunch shared{kr, rt.n_shared, early};
    CUDA_TRY(cudaEventRecord(m_.fork, m_.stream));
    CUDA_TRY(cudaStreamWaitEvent(m_.side, m_.fork));
    ck::moe_pair_gate_up_silu(m_.h, m_.mm.shared_ids, T, k, w.gate.bf16, w.up.bf16, Fe, D, m_.mm.act, m_.side,
                              shared);
    ck::moe_pair_down(m_.mm.act, m_.mm.shared_ids, T, k, w.down.bf16, D, Fe, m_.mm.y, m_.side, shared);
    CUDA_TRY(cudaEventRecord(m_.join, m_.side));
  }
  w.router.forward(g_, m_.h, T, m_.mm.router, true);
  ck::moe_route(m_.mm.router, w.bias, rt, T, m_.mm.ids, m_.mm.weights, m_.stream);
  if (path == MoePath::kPair) {
    const int n = side ? kr : k;
    ck::moe_pair_gate_up_silu(m_.h, m_.mm.ids, T, k, w.gate.bf16, w.up.bf16, Fe, D, m_.mm.act, m_.stream, {0, n});
    ck::moe_pair_down(m_.mm.act, m_.mm.ids, T, k, w.down.bf16, D, Fe, m_.mm.y, m_.stream, {0, n, early});
    if (side) CUDA_TRY(cudaStreamWaitEvent(m_.stream, m_.join));
  } else {
    ck::moe_sort(m_.mm.ids, T, k, E, m_.mm.offsets, m_.mm.pairs, m_.stream);
    if (path == MoePath::kMma) {
      ck::moe_mma_gate_up_silu(m_.h, m_.mm.offsets, m_.mm.pairs, T, k, w.gate.bf16, w.up.bf16, E, Fe, D, m_.mm.act,
                               m_.stream);
      ck::moe_mma_down(m_.mm.act, m_.mm.offsets, m_.mm.pairs, T, k, w.down.bf16, E, D, Fe, m_.mm.y, m_.stream);
    } else {
      ck::moe_gate_up_silu(m_.h, m_.mm.offsets, m_.mm.pairs, T, k, moe_matrix(w.gate), moe_matrix(w.up), E, Fe, D,
                           m_.mm.act, m_.stream);
      ck::moe_down(m_.mm.act, m_.mm.offsets, m_.mm.pairs, T, k, moe_matrix(w.down), E, D, Fe, m_.mm.y, m_.stream);
    }
  }
  return moe_finish(T, k);
}

}  // namespace citadel::runtime
