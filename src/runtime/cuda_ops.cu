// CudaOps (see cuda_ops.cuh): each recipe op as the kernels of the bf16 path or of the fp32 (exact) path.
#include "runtime/cuda_ops.cuh"

#include <initializer_list>
#include <string>

#include "base/env.h"
#include "runtime/device_comm.h"

namespace citadel::runtime {

namespace ck = citadel::cuda;
using R = TensorRole;
using Impl = CudaDecoder::Impl;

namespace {

Status not_held(const char* op, TensorRole r) {
  return Internal(std::string("cuda ops: ") + op + " of " + role_name(r) + " is not held by the decoder");
}
}  // namespace

CudaOps::CudaOps(CudaDecoder::Impl& m, const CudaStepShape& s)
    : m_(m), s_(s), L_(m.layout(s.T, s.B)), pa_(m.paged_attention(L_)), g_(m.gemm()),
      skip_(m.exact() ? 0u : m.opt.debug_skip) {}

const LinearW* CudaOps::matrix(const Linear& w, int layer, uint32_t* skip_bit) const {
  const auto is = [&](std::initializer_list<TensorRole> roles) {
    if (w.n != static_cast<int>(roles.size())) return false;
    int i = 0;
    for (TensorRole r : roles)
      if (w.roles[i++] != r) return false;
    return true;
  };
  // null too for a matrix this layer's kind does not have (no storage: e.g. a dense FFN in an MoE layer)
  const auto pick = [&](uint32_t bit, const LinearW& lw) -> const LinearW* {
    *skip_bit = bit;
    return lw.bf16 || lw.q ? &lw : nullptr;
  };
  if (is({R::kOutput})) return pick(kSkipLmHead, m_.lm_head);
  if (layer < 0 || layer >= static_cast<int>(m_.layers.size())) return nullptr;
  const LayerW& l = m_.layers[layer];
  if (is({R::kWq, R::kWk, R::kWv})) return pick(kSkipQkv, l.qkv);
  if (is({R::kWo})) return pick(kSkipO, l.o);
  if (is({R::kGate, R::kUp})) return pick(kSkipFfn, l.gate_up);
  if (is({R::kDown})) return pick(kSkipDown, l.down);
  if (is({R::kWq})) return pick(kSkipQkv, l.mla.q);  // MLA
  if (is({R::kWqA})) return pick(kSkipQkv, l.mla.q_a);
  if (is({R::kWqB})) return pick(kSkipQkv, l.mla.q_b);
  if (is({R::kWkvA})) return pick(kSkipQkv, l.mla.kv_a);
  return nullptr;
}

const bf16_t* CudaOps::norm_weight(TensorRole norm, int layer) const {
  if (norm == R::kOutputNorm) return m_.out_norm;
  if (layer < 0 || layer >= static_cast<int>(m_.layers.size())) return nullptr;
  if (norm == R::kAttnNorm) return m_.layers[layer].attn_norm;
  if (norm == R::kFfnNorm) return m_.layers[layer].ffn_norm;
  if (norm == R::kPostAttnNorm) return m_.layers[layer].post_attn_norm;
  if (norm == R::kPostFfwNorm) return m_.layers[layer].post_ffn_norm;
  return nullptr;
}

void* CudaOps::buffer(Act a) const {
  switch (a) {
    case Act::kResidual: return m_.residual;
    case Act::kDelta: return m_.delta;
    case Act::kNormed: return m_.h;
    case Act::kQkv: return m_.qkv;
    case Act::kAttn: return m_.attn;
    case Act::kFfn: return m_.act;
    case Act::kQ: return m_.mm.q;
    case Act::kQA: return m_.mm.q_a;
    case Act::kKvA: return m_.mm.kv_a;
  }
  return nullptr;
}

void CudaOps::linear32(const LinearW& w, const float* x, int M, float* y) const {
  if (w32())
    ck::gemv_f32(x, Impl::f32(w.bf16), w.bias ? Impl::f32(w.bias) : nullptr, y, M, w.N, w.K, m_.stream);
  else
    w.forward_xf32(g_, x, M, y, false);
}

void CudaOps::norm(const float* d, const bf16_t* w) {
  const int T = s_.T, D = m_.dim();
  const float eps = static_cast<float>(m_.c.norm_eps);
  if (exact())
    ck::add_rmsnorm_f32(m_.residual, d, Impl::f32(w), Impl::f32(m_.h), T, D, eps, m_.stream);
  else if (!(skip_ & kSkipNorm))
    ck::add_rmsnorm(m_.residual, d, w, m_.h, T, D, eps, m_.stream);
}

Status CudaOps::embed(TensorRole table) {
  if (table != R::kTokEmbd) return not_held("embed", table);
  const int32_t* tokens = m_.d_ints + L_.tokens;
  const int first = static_cast<int>(m_.vocab_first), held = static_cast<int>(m_.vocab_held);
  if (exact() && w32())
    ck::embedding_f32(Impl::f32(m_.embed), tokens, m_.residual, s_.T, m_.dim(), held, m_.stream, first);
  else
    ck::embedding(m_.embed, tokens, m_.residual, s_.T, m_.dim(), held, m_.stream, first);
  // Vocabulary-parallel: each rank wrote its tokens' rows (zeros for the others'); the sum is every row.
  if (m_.vocab_parallel()) return m_.opt.comm->all_reduce_sum_f32(m_.residual, int64_t{s_.T} * m_.dim(), m_.stream);
  return OkStatus();
}

Status CudaOps::add_rmsnorm(bool add, TensorRole norm_role, int layer) {
  const bf16_t* w = norm_weight(norm_role, layer);
  if (!w) return not_held("add_rmsnorm", norm_role);
  norm(add ? m_.delta : nullptr, w);
  return OkStatus();
}

Status CudaOps::linear(const Linear& w, int layer, Act in, Act out) {
  uint32_t bit = 0;
  const LinearW* lw = matrix(w, layer, &bit);
  if (!lw || bit == kSkipLmHead || bit == kSkipFfn)  // the LM head runs in logits(), gate|up in linear_silu_mul()
    return not_held("linear", w.roles[0]);
  const bool in_f32 = in == Act::kResidual || in == Act::kDelta;
  if (!exact() && in_f32) return Internal("cuda ops: linear of an fp32 activation in the bf16 path");
  if (w.n == 1 && w.roles[0] == TensorRole::kWkvA && kv_a_done_layer_ == layer && in == Act::kNormed &&
      out == Act::kKvA) {
    kv_a_done_layer_ = -1;  // the query projection ran it (mla_query_with_kv_a)
    return OkStatus();
  }
  if (mla_query_with_kv_a(w, layer, *lw, in, out)) return OkStatus();
  if (exact()) {
    linear32(*lw, Impl::f32(buffer(in)), s_.T, Impl::f32(buffer(out)));
  } else if (!(skip_ & bit)) {
    const bool out_f32 = out == Act::kResidual || out == Act::kDelta;
    lw->forward(g_, static_cast<const bf16_t*>(buffer(in)), s_.T, buffer(out), out_f32);
  }
  if (m_.opt.comm && role_info(w.roles[0]).split == SplitAxis::kCols && !(skip_ & bit)) {
    // Row-parallel: this rank's partial sums, added up over the ranks (a bias would be added once per rank).
    if (lw->bias) return Unsupported(std::string("cuda ops: row-parallel ") + role_name(w.roles[0]) + " with a bias");
    if (out != Act::kDelta && out != Act::kResidual) return Internal("cuda ops: a row-parallel output must be fp32");
    RETURN_IF_ERROR(m_.opt.comm->all_reduce_sum_f32(Impl::f32(buffer(out)), int64_t{s_.T} * lw->N, m_.stream));
  }
  return OkStatus();
}

// deepseek2, one or two tokens: MLA's first query projection (q, or V3's q_a) and kv_a read the same normed rows, so
// both run in one launch (gemv_bf16_two) and the kv_a call that follows is a no-op. bf16 weights without bias, no
// tensor parallelism, nothing skipped; CITADEL_MLA_KV_A=apart keeps two launches (benchmarks). False: not taken.
bool CudaOps::mla_query_with_kv_a(const Linear& w, int layer, const LinearW& q, Act in, Act out) {
  static const bool apart = env_is("CITADEL_MLA_KV_A", "apart");
  const bool query = w.n == 1 && (w.roles[0] == TensorRole::kWq || w.roles[0] == TensorRole::kWqA);
  if (apart || !query || exact() || !m_.c.has_mla || s_.T > 2 || m_.opt.comm || in != Act::kNormed) return false;
  if (skip_ & kSkipQkv) return false;
  uint32_t bit = 0;
  const LinearW* kv = matrix(Linear{{TensorRole::kWkvA}, 1}, layer, &bit);
  if (!kv || q.fmt != CudaWeightFormat::kBf16 || kv->fmt != CudaWeightFormat::kBf16 || q.bias || kv->bias) return false;
  if (q.K != kv->K) return false;
  ck::gemv_bf16_two(m_.h, q.bf16, static_cast<bf16_t*>(buffer(out)), q.N, kv->bf16, m_.mm.kv_a, kv->N, s_.T, q.K,
                    m_.stream);
  kv_a_done_layer_ = layer;
  return true;
}

Status CudaOps::linear_silu_mul(const Linear& w, int layer, Act in, Act out) {
  return gated_ffn(w, layer, in, out, /*gelu=*/false, "linear_silu_mul");
}

Status CudaOps::linear_gelu_mul(const Linear& w, int layer, Act in, Act out) {
  return gated_ffn(w, layer, in, out, /*gelu=*/true, "linear_gelu_mul");
}

Status CudaOps::gated_ffn(const Linear& w, int layer, Act in, Act out, bool gelu, const char* op) {
  uint32_t bit = 0;
  const LinearW* lw = matrix(w, layer, &bit);
  if (!lw || bit != kSkipFfn) return not_held(op, w.roles[0]);
  if (in != Act::kNormed || out != Act::kFfn)
    return Internal(std::string("cuda ops: ") + op + " runs normed -> ffn only (the gate|up staging buffer)");
  const int T = s_.T, F = lw->N / 2;
  if (exact()) {
    if (w32() || gelu) {  // the fused bf16x3 GEMM knows SiLU only
      linear32(*lw, Impl::f32(m_.h), T, Impl::f32(m_.gu));
      if (gelu)
        ck::gelu_mul_f32(Impl::f32(m_.gu), Impl::f32(m_.act), T, F, m_.stream);
      else
        ck::silu_mul_f32(Impl::f32(m_.gu), Impl::f32(m_.act), T, F, m_.stream);
    } else {
      lw->forward_xf32(g_, Impl::f32(m_.h), T, Impl::f32(m_.act), true);
    }
  } else if (!(skip_ & kSkipFfn) && (gelu || !lw->forward_silu(g_, m_.h, T, m_.act))) {
    lw->forward(g_, m_.h, T, m_.gu, false);
    if (gelu)
      ck::gelu_mul(m_.gu, m_.act, T, F, m_.stream);
    else
      ck::silu_mul(m_.gu, m_.act, T, F, m_.stream);
  }
  return OkStatus();
}

Status CudaOps::rope_kv_write(int layer) {
  if (layer < 0 || layer >= static_cast<int>(m_.layers.size())) return Internal("cuda ops: rope_kv_write layer");
  const ModelConfig& c = m_.c;
  const int H = static_cast<int>(c.n_heads), KVH = static_cast<int>(c.n_kv_heads);
  const int hd = static_cast<int>(c.head_dim), NQKV = m_.qkv_rows();
  const int32_t* positions = m_.d_ints + L_.positions;
  const int32_t* slots = m_.d_ints + L_.slots;
  const auto style = c.rope_type == RopeStyle::kNeox ? ck::RopeLayout::kNeox : ck::RopeLayout::kNorm;
  // A sliding-window layer of an interleaved model (gemma3) rotates with rope_theta_swa, unscaled.
  const bool local = is_swa_layer(c, layer);
  const float theta = static_cast<float>(local ? c.rope_theta_swa : c.rope_theta);
  const void* table = local ? nullptr : m_.rope_inv_freq;
  const double mscale = local ? 1.0 : m_.rope_mscale;
  const int64_t off = layer * m_.layer_pool();
  if (exact()) {
    ck::rope_kv_write_f32(Impl::f32(m_.qkv), s_.T, NQKV, H, KVH, hd, positions, theta, style, slots,
                          Impl::f32(m_.k_pool) + off, Impl::f32(m_.v_pool) + off, m_.stream,
                          static_cast<const double*>(table), mscale);
  } else if (!(skip_ & kSkipRopeKv)) {
    ck::rope_kv_write(m_.qkv, s_.T, NQKV, H, KVH, hd, positions, theta, style, slots, m_.k_pool + off,
                      m_.v_pool + off, m_.stream, static_cast<const float*>(table), static_cast<float>(mscale));
  }
  return OkStatus();
}

Status CudaOps::attention(int layer) {
  if (layer < 0 || layer >= static_cast<int>(m_.layers.size())) return Internal("cuda ops: attention layer");
  const int B = s_.B, NQKV = m_.qkv_rows(), Q = m_.q_rows();
  const int64_t off = layer * m_.layer_pool();
  const int32_t* qs = m_.h_pinned + L_.total;  // prefill: query_start[B+1], staged after the device ints
  pa_.window = is_swa_layer(m_.c, layer) ? static_cast<int>(m_.c.sliding_window) : 0;
  if (exact()) {
    const float* kp = Impl::f32(m_.k_pool) + off;
    const float* vp = Impl::f32(m_.v_pool) + off;
    const float* q = Impl::f32(m_.qkv);
    float* out = Impl::f32(m_.attn);
    const int K = decode_prefix();
    if (K > 0)
      ck::paged_attention_f32_decode(pa_, kp, vp, q, NQKV, K, s_.n_splits * s_.partition, out, m_.attn_ws,
                                     m_.stream);
    for (int b = K; b < B; ++b)
      ck::paged_attention_f32(pa_, kp, vp, b, q + int64_t{qs[b]} * NQKV, NQKV, qs[b + 1] - qs[b],
                              out + int64_t{qs[b]} * Q, m_.stream);
    return OkStatus();
  }
  pa_.k_pool = m_.k_pool + off, pa_.v_pool = m_.v_pool + off;
  if (skip_ & kSkipAttention) return OkStatus();
  const int K = decode_prefix();
  if (K > 0)
    ck::paged_attention_decode(pa_, m_.qkv, NQKV, m_.attn, K, s_.n_splits, s_.partition, m_.attn_ws, m_.stream);
  // Prompts: split-KV in the attention workspace past the decode kernel's counters (the launches are stream-ordered,
  // so the decode partials and each prompt's chunks take turns in it); the context lengths are the staged ones.
  const int32_t* ctx = m_.h_pinned + L_.seq_lens;
  const int64_t lent = ck::decode_workspace_counters();
  for (int b = K; b < B; ++b)
    ck::paged_attention_prefill(pa_, b, m_.qkv + int64_t{qs[b]} * NQKV, NQKV, qs[b + 1] - qs[b],
                                m_.attn + int64_t{qs[b]} * Q, m_.stream, ctx[b], m_.attn_ws + lent,
                                m_.attn_ws_floats - lent);
  return OkStatus();
}

// Decode: all B sequences. Otherwise the leading sequences with one query each: their query rows are 0..K-1, as the
// decode kernel reads them (row b of sequence b).
int CudaOps::decode_prefix() const {
  if (s_.decode) return s_.B;
  if (!m_.opt.mixed_decode_attention) return 0;
  const int32_t* qs = m_.h_pinned + L_.total;
  int K = 0;
  while (K < s_.B && qs[K + 1] - qs[K] == 1) ++K;
  return K;
}

// residual += delta, h = rmsnorm(residual); then the LM head over all T rows (all_logits) or each sequence's last
// row (prefill: gathered into last_h by last_idx; decode: the rows are the sequences).
Status CudaOps::logits(TensorRole norm_role, TensorRole head) {
  const bf16_t* w = norm_weight(norm_role, 0);
  uint32_t bit = 0;
  const LinearW* lw = matrix(Linear{{head}, 1}, 0, &bit);
  if (!w) return not_held("logits", norm_role);
  if (!lw || bit != kSkipLmHead) return not_held("logits", head);
  norm(m_.delta, w);
  const int T = s_.T, B = s_.B, D = m_.dim(), rows = s_.all_logits ? T : B;
  const int32_t* last_idx = m_.d_ints + L_.last_idx;
  // Vocabulary-parallel: this rank's columns first, then every rank's joined into the whole rows.
  float* y = m_.vocab_parallel() ? m_.logits_part : m_.logits;
  if (exact()) {
    const float* x = Impl::f32(m_.h);
    if (!s_.all_logits && !s_.decode) {
      ck::gather_rows_f32(Impl::f32(m_.h), last_idx, Impl::f32(m_.last_h), B, D, m_.stream);
      x = Impl::f32(m_.last_h);
    }
    linear32(*lw, x, rows, y);
  } else if (s_.all_logits) {
    lw->forward(g_, m_.h, T, y, true);
  } else {
    const bf16_t* x = m_.h;
    if (!s_.decode) {
      ck::gather_rows(m_.h, last_idx, m_.last_h, B, D, m_.stream);
      x = m_.last_h;
    }
    if (!(skip_ & kSkipLmHead)) lw->forward(g_, x, B, y, true);
  }
  if (!m_.vocab_parallel()) return OkStatus();
  const int per = static_cast<int>(m_.vocab_per);
  RETURN_IF_ERROR(m_.opt.comm->all_gather_f32(y, int64_t{rows} * per, m_.logits_gathered, m_.stream));
  ck::vocab_unshard(m_.logits_gathered, m_.logits, rows, per, m_.n_vocab(), m_.opt.comm->size(), m_.stream);
  return OkStatus();
}

}  // namespace citadel::runtime
