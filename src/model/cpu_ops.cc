#include "model/cpu_ops.h"

#include <algorithm>
#include <chrono>

#include "base/check.h"
#include "model/moe.h"
#include "model/shard.h"

namespace citadel {
namespace {

constexpr auto kMatmul = &ForwardProfile::matmul, kAttn = &ForwardProfile::attention, kOther = &ForwardProfile::other;

// Charges the time since the last mark to one profile bucket (no-op without a profile).
class OpTimer {
 public:
  explicit OpTimer(ForwardProfile* p) : p_(p), t_(p ? Clock::now() : Clock::time_point{}) {}
  void charge(double ForwardProfile::*bucket) {
    if (!p_) return;
    const auto now = Clock::now();
    p_->*bucket += std::chrono::duration<double>(now - t_).count();
    t_ = now;
  }

 private:
  using Clock = std::chrono::steady_clock;
  ForwardProfile* p_;
  Clock::time_point t_;
};

size_t act_width(const ModelConfig& c, Act a) {
  const MlaConfig& m = c.mla;
  int64_t w = 0;
  switch (a) {
    case Act::kResidual: case Act::kDelta: case Act::kNormed: w = c.dim; break;
    case Act::kQkv: w = c.has_mla ? 0 : (c.n_heads + 2 * c.n_kv_heads) * c.head_dim; break;
    case Act::kAttn: w = c.n_heads * (c.has_mla ? m.v_head_dim : c.head_dim); break;
    case Act::kFfn: w = std::max(c.ffn_dim, c.moe.n_shared * c.moe.expert_ffn_dim); break;
    case Act::kQ: w = c.has_mla ? c.n_heads * c.head_dim : 0; break;
    case Act::kQA: w = m.q_lora_rank; break;
    case Act::kKvA: w = c.has_mla ? m.kv_lora_rank + m.qk_rope_dim : 0; break;
  }
  return static_cast<size_t>(w);
}


}  // namespace

ForwardScratch::ForwardScratch(const ModelConfig& c, int max_tokens_in) : max_tokens(std::max(1, max_tokens_in)) {
  const size_t T = static_cast<size_t>(max_tokens);
  for (size_t a = 0; a < kNumActs; ++a) act[a].resize(T * act_width(c, static_cast<Act>(a)));
  up.resize(T * act_width(c, Act::kFfn));
  slot_block.resize(T);
  slot_offset.resize(T);
  auto z = [](int64_t n) { return static_cast<size_t>(n); };
  if (c.has_mla) {
    const MlaConfig& m = c.mla;
    q_lat.resize(T * z(c.n_heads * (m.kv_lora_rank + m.qk_rope_dim)));
    o_lat.resize(T * z(c.n_heads * m.kv_lora_rank));
    head_in.resize(T * z(std::max({m.qk_nope_dim, m.kv_lora_rank, m.v_head_dim})));
    head_out.resize(head_in.size());
  }
  if (c.has_moe) {
    const MoeConfig& e = c.moe;
    router.resize(T * z(e.n_experts));
    sel_w.resize(T * z(e.n_experts_used));
    sel_id.resize(sel_w.size());
    ex_rows.resize(sel_w.size());
    ex_x.resize(T * z(c.dim));
    ex_y.resize(ex_x.size());
    ex_gate.resize(T * z(e.expert_ffn_dim));
    ex_up.resize(ex_gate.size());
    ex_sum.resize(ex_x.size());
  }
}

CpuOps::CpuOps(const ModelWeights& w, const RopeParams& rope, const RopeParams& rope_local, const ForwardBatch& b,
               int t0, int n, const std::vector<KvCacheView>& kv, ForwardScratch* s, float* logits,
               Communicator* comm)
    : w_(w), c_(w.config), rope_(rope), rope_local_(rope_local), b_(b), t0_(t0), n_(n), kv_(kv), s_(s),
      logits_(logits), comm_(w.tp.size > 1 ? comm : nullptr) {
  CHECK(n_ <= s_->max_tokens);
  CHECK(w.tp.size == 1 || (comm && comm->size() == w.tp.size && comm->rank() == w.tp.rank));
  const int bs = kv_[0].block_size;
  for (int i = 0; i < n_; ++i) {
    s_->slot_block[i] = b_.slots[t0_ + i] / bs;
    s_->slot_offset[i] = b_.slots[t0_ + i] % bs;
  }
}

Status CpuOps::embed(TensorRole table) {
  OpTimer tm(s_->profile);
  float* x = act(Act::kResidual);
  if (!comm_) {
    Status st = cpu::embedding(w_.mat(table), b_.tokens + t0_, n_, x);
    tm.charge(kOther);
    return st;
  }
  // Vocabulary-parallel: this rank's rows, zero for the tokens other ranks hold, summed over the ranks.
  const int64_t D = c_.dim;
  for (int i = 0; i < n_; ++i) {
    const int32_t id = b_.tokens[t0_ + i] - static_cast<int32_t>(w_.tp.vocab_begin);
    if (id >= 0 && id < w_.tp.vocab_end - w_.tp.vocab_begin) {
      RETURN_IF_ERROR(cpu::embedding(w_.mat(table), &id, 1, x + i * D));
    } else {
      std::fill_n(x + i * D, D, 0.0f);
    }
  }
  Status st = comm_->all_reduce_sum(x, n_ * D);
  tm.charge(kOther);
  return st;
}

Status CpuOps::add_rmsnorm(bool add, TensorRole norm, int layer) {
  OpTimer tm(s_->profile);
  float* x = act(Act::kResidual);
  if (add) cpu::add(x, act(Act::kDelta), x, n_ * c_.dim);
  cpu::rmsnorm(x, w_.vec(norm, layer), act(Act::kNormed), n_, c_.dim, static_cast<float>(c_.norm_eps));
  tm.charge(kOther);
  return OkStatus();
}

int CpuOps::targets(const Linear& w, int layer, float* y, cpu::MatmulTarget* t) const {
  size_t offset = 0;
  for (int i = 0; i < w.n; ++i) {
    t[i] = {w_.mat(w.roles[i], layer), y + offset};
    offset += static_cast<size_t>(t[i].w.rows) * s_->max_tokens;
  }
  return w.n;
}

void CpuOps::add_biases(const Linear& w, int layer, const cpu::MatmulTarget* t) const {
  for (int i = 0; i < w.n; ++i) {
    const TensorRole bias_role = role_info(w.roles[i]).bias;
    const float* bias = bias_role != w.roles[i] ? w_.vec(bias_role, layer) : nullptr;
    if (!bias) continue;
    for (int r = 0; r < n_; ++r) cpu::add(t[i].y + r * t[i].w.rows, bias, t[i].y + r * t[i].w.rows, t[i].w.rows);
  }
}

Status CpuOps::linear(const Linear& w, int layer, Act in, Act out) {
  OpTimer tm(s_->profile);
  cpu::MatmulTarget t[3];
  const int k = targets(w, layer, act(out), t);
  RETURN_IF_ERROR(k == 1 ? cpu::matmul(t[0].w, act(in), n_, t[0].y) : cpu::matmul_multi(t, k, act(in), n_));
  tm.charge(kMatmul);
  if (comm_ && role_info(w.roles[0]).split == SplitAxis::kCols) {  // row-parallel: partial sums of every output
    CHECK(k == 1);
    RETURN_IF_ERROR(comm_->all_reduce_sum(t[0].y, n_ * t[0].w.rows));
  }
  add_biases(w, layer, t);
  tm.charge(kOther);
  return OkStatus();
}

// gate into `out`, up into the scratch's up buffer, then out = act(gate) * up in place.
Status CpuOps::gated_ffn(const Linear& w, int layer, Act in, Act out, bool gelu) {
  CHECK(w.n == 2);
  OpTimer tm(s_->profile);
  const cpu::MatmulTarget t[2] = {{w_.mat(w.roles[0], layer), act(out)}, {w_.mat(w.roles[1], layer), s_->up.data()}};
  RETURN_IF_ERROR(cpu::matmul_multi(t, 2, act(in), n_));
  tm.charge(kMatmul);
  add_biases(w, layer, t);
  if (gelu) cpu::gelu_tanh_mul(t[0].y, t[1].y, t[0].y, n_ * t[0].w.rows);
  else cpu::silu_mul(t[0].y, t[1].y, t[0].y, n_ * t[0].w.rows);
  tm.charge(kOther);
  return OkStatus();
}

Status CpuOps::linear_silu_mul(const Linear& w, int layer, Act in, Act out) {
  return gated_ffn(w, layer, in, out, /*gelu=*/false);
}

Status CpuOps::linear_gelu_mul(const Linear& w, int layer, Act in, Act out) {
  return gated_ffn(w, layer, in, out, /*gelu=*/true);
}

Status CpuOps::scale(Act a, float s) {
  OpTimer tm(s_->profile);
  float* x = act(a);
  const size_t n = static_cast<size_t>(n_) * act_width(c_, a);
  for (size_t i = 0; i < n; ++i) x[i] *= s;
  tm.charge(kOther);
  return OkStatus();
}

// kQkv holds q [max_tokens, H hd] then k [max_tokens, KVH hd] (planar): each head row normalised in place.
Status CpuOps::qk_norm(int layer) {
  OpTimer tm(s_->profile);
  const int64_t hd = c_.head_dim;
  float* q = act(Act::kQkv);
  float* k = q + static_cast<size_t>(s_->max_tokens) * c_.n_heads * hd;
  const float eps = static_cast<float>(c_.norm_eps);
  cpu::rmsnorm(q, w_.vec(TensorRole::kAttnQNorm, layer), q, n_ * c_.n_heads, hd, eps);
  cpu::rmsnorm(k, w_.vec(TensorRole::kAttnKNorm, layer), k, n_ * c_.n_kv_heads, hd, eps);
  tm.charge(kOther);
  return OkStatus();
}

Status CpuOps::rope_kv_write(int layer) {
  OpTimer tm(s_->profile);
  const int H = static_cast<int>(c_.n_heads), KVH = static_cast<int>(c_.n_kv_heads), hd = static_cast<int>(c_.head_dim);
  float* q = act(Act::kQkv);
  float* k = q + static_cast<size_t>(s_->max_tokens) * H * hd;
  float* v = k + static_cast<size_t>(s_->max_tokens) * KVH * hd;
  const RopeParams& rope = is_swa_layer(c_, layer) ? rope_local_ : rope_;
  cpu::rope(q, n_, H, hd, b_.positions + t0_, rope);
  cpu::rope(k, n_, KVH, hd, b_.positions + t0_, rope);
  cpu::kv_write(kv_[layer], k, v, n_, s_->slot_block.data(), s_->slot_offset.data());
  tm.charge(kOther);
  return OkStatus();
}

AttnBatch CpuOps::attn_batch(int layer) const {
  AttnBatch ab;
  if (is_swa_layer(c_, layer)) ab.window = static_cast<int>(c_.sliding_window);
  ab.n_tokens = n_;
  ab.block_tables = b_.block_tables;
  ab.max_blocks_per_seq = b_.max_blocks;
  ab.n_seqs = b_.n_seqs;
  ab.seq_of_token = b_.seq_of_token + t0_;
  ab.pos_of_token = b_.positions + t0_;
  return ab;
}

Status CpuOps::attention(int layer) {
  OpTimer tm(s_->profile);
  cpu::attention(act(Act::kQkv), kv_[layer], attn_batch(layer), static_cast<int>(c_.n_heads), 0.0f, act(Act::kAttn));
  tm.charge(kAttn);
  return OkStatus();
}

Status CpuOps::rmsnorm(Act a, TensorRole norm, int layer) {
  OpTimer tm(s_->profile);
  const int64_t width = role_shape(c_, norm)[0];
  cpu::rmsnorm(act(a), w_.vec(norm, layer), act(a), n_, width, static_cast<float>(c_.norm_eps));
  tm.charge(kOther);
  return OkStatus();
}

Status CpuOps::mla_rope_kv_write(int layer) {
  OpTimer tm(s_->profile);
  const MlaConfig& m = c_.mla;
  const int64_t row = m.kv_lora_rank + m.qk_rope_dim;
  float* kva = act(Act::kKvA);
  const float* norm = w_.vec(TensorRole::kKvANorm, layer);
  for (int t = 0; t < n_; ++t) {
    cpu::rmsnorm(kva + t * row, norm, kva + t * row, 1, m.kv_lora_rank, static_cast<float>(c_.norm_eps));
  }
  // Each head's rope part starts qk_nope into it: rotate "heads" of head_dim values starting there.
  cpu::rope(act(Act::kQ) + m.qk_nope_dim, n_, static_cast<int>(c_.n_heads), static_cast<int>(c_.head_dim),
            b_.positions + t0_, rope_);
  cpu::rope(kva + m.kv_lora_rank, n_, 1, static_cast<int>(row), b_.positions + t0_, rope_);
  cpu::kv_write(kv_[layer], kva, nullptr, n_, s_->slot_block.data(), s_->slot_offset.data());
  tm.charge(kOther);
  return OkStatus();
}

Status CpuOps::per_head_matmul(const WeightView& stack, int n_heads, const float* in, size_t in_stride, size_t in_head,
                               float* out, size_t out_stride, size_t out_head) {
  const int64_t rows = stack.rows / n_heads, cols = stack.cols;
  float *x = s_->head_in.data(), *y = s_->head_out.data();
  for (int h = 0; h < n_heads; ++h) {
    for (int t = 0; t < n_; ++t) std::copy_n(in + t * in_stride + h * in_head, cols, x + t * cols);
    RETURN_IF_ERROR(cpu::matmul(stack.rows_view(h * rows, rows), x, n_, y));
    for (int t = 0; t < n_; ++t) std::copy_n(y + t * rows, rows, out + t * out_stride + h * out_head);
  }
  return OkStatus();
}

// Absorbed: q_lat = [q_nope W_UK | q_rope] per head, attention over the cached [latent | k_rope] rows with the latent
// as the value, then W_UV per head.
Status CpuOps::mla_attention(int layer) {
  OpTimer tm(s_->profile);
  const MlaConfig& m = c_.mla;
  const int H = static_cast<int>(c_.n_heads);
  const size_t qk = static_cast<size_t>(c_.head_dim), r = static_cast<size_t>(m.kv_lora_rank);
  const size_t lat = r + static_cast<size_t>(m.qk_rope_dim), v = static_cast<size_t>(m.v_head_dim);
  const float* q = act(Act::kQ);
  float* q_lat = s_->q_lat.data();
  RETURN_IF_ERROR(per_head_matmul(w_.mat(TensorRole::kWkB, layer), H, q, H * qk, qk, q_lat, H * lat, lat));
  for (int t = 0; t < n_; ++t) {
    for (int h = 0; h < H; ++h) {
      std::copy_n(q + (t * H + h) * qk + m.qk_nope_dim, m.qk_rope_dim, q_lat + (t * H + h) * lat + r);
    }
  }
  tm.charge(kMatmul);
  cpu::attention(q_lat, kv_[layer], attn_batch(layer), H, static_cast<float>(attention_scale(c_)), s_->o_lat.data());
  tm.charge(kAttn);
  RETURN_IF_ERROR(per_head_matmul(w_.mat(TensorRole::kWvB, layer), H, s_->o_lat.data(), H * r, r, act(Act::kAttn),
                                  H * v, v));
  tm.charge(kMatmul);
  return OkStatus();
}

// The shared FFN into out first (the linear ops), then the routed experts added: tokens grouped by expert (a
// counting sort, token order kept within an expert), per expert one gathered gate|up GEMM, SiLU-mul and down GEMM,
// then each row added to its token's output times its weight.
Status CpuOps::moe(int layer, Act in, Act out) {
  const MoeConfig& e = c_.moe;
  if (e.n_shared > 0) {
    RETURN_IF_ERROR(linear_silu_mul(lin::kShGateUp, layer, in, Act::kFfn));
    RETURN_IF_ERROR(linear(lin::kShDown, layer, Act::kFfn, out));
  }
  OpTimer tm(s_->profile);
  const int E = static_cast<int>(e.n_experts), k = static_cast<int>(e.n_experts_used);
  const int64_t D = c_.dim, Fe = e.expert_ffn_dim;
  const float* x = act(in);
  float* y = act(out);
  RETURN_IF_ERROR(cpu::matmul(w_.mat(TensorRole::kFfnGateInp, layer), x, n_, s_->router.data()));
  tm.charge(kMatmul);
  const float* bias = w_.vec(TensorRole::kExpProbsB, layer);
  for (int t = 0; t < n_; ++t) {
    moe_route(e, s_->router.data() + t * E, bias, s_->sel_id.data() + t * k, s_->sel_w.data() + t * k);
  }
  std::vector<int> start(static_cast<size_t>(E) + 1, 0);
  for (int i = 0; i < n_ * k; ++i) ++start[s_->sel_id[i] + 1];
  for (int i = 0; i < E; ++i) start[i + 1] += start[i];
  std::vector<int> fill(start.begin(), start.end() - 1);
  for (int i = 0; i < n_ * k; ++i) s_->ex_rows[fill[s_->sel_id[i]]++] = i;
  // Tensor parallel: this rank's experts [eb, ee) (its stacks' experts 0..) into ex_sum, summed over the ranks below.
  const int eb = comm_ ? static_cast<int>(w_.tp.expert_begin) : 0;
  const int ee = comm_ ? static_cast<int>(w_.tp.expert_end) : E;
  float* acc = comm_ ? s_->ex_sum.data() : y;
  if (comm_ || e.n_shared == 0) std::fill_n(acc, n_ * D, 0.0f);
  tm.charge(kOther);
  const WeightView &gate = w_.mat(TensorRole::kGateExps, layer), &up = w_.mat(TensorRole::kUpExps, layer);
  const WeightView& down = w_.mat(TensorRole::kDownExps, layer);
  for (int ex = eb; ex < ee; ++ex) {
    const int n = start[ex + 1] - start[ex], local = ex - eb;
    if (n == 0) continue;
    const int* rows = s_->ex_rows.data() + start[ex];
    for (int i = 0; i < n; ++i) std::copy_n(x + (rows[i] / k) * D, D, s_->ex_x.data() + i * D);
    const cpu::MatmulTarget t[2] = {{gate.rows_view(local * Fe, Fe), s_->ex_gate.data()},
                                    {up.rows_view(local * Fe, Fe), s_->ex_up.data()}};
    RETURN_IF_ERROR(cpu::matmul_multi(t, 2, s_->ex_x.data(), n));
    cpu::silu_mul(s_->ex_gate.data(), s_->ex_up.data(), s_->ex_gate.data(), n * Fe);
    RETURN_IF_ERROR(cpu::matmul(down.rows_view(local * D, D), s_->ex_gate.data(), n, s_->ex_y.data()));
    for (int i = 0; i < n; ++i) {
      const float wt = s_->sel_w[rows[i]];
      float* dst = acc + (rows[i] / k) * D;
      const float* src = s_->ex_y.data() + i * D;
      for (int64_t j = 0; j < D; ++j) dst[j] += wt * src[j];
    }
  }
  tm.charge(kMatmul);
  if (!comm_) return OkStatus();
  RETURN_IF_ERROR(comm_->all_reduce_sum(acc, n_ * D));
  if (e.n_shared > 0) cpu::add(y, acc, y, n_ * D);
  else std::copy_n(acc, n_ * D, y);
  tm.charge(kOther);
  return OkStatus();
}

// The wanted rows of this chunk are gathered into kNormed (m <= n rows) before the final norm and the LM head.
Status CpuOps::logits(TensorRole norm, TensorRole head) {
  OpTimer tm(s_->profile);
  const int64_t D = c_.dim;
  float *x = act(Act::kResidual), *h = act(Act::kNormed);
  cpu::add(x, act(Act::kDelta), x, n_ * D);
  const int* first = std::lower_bound(b_.logit_rows, b_.logit_rows + b_.n_logits, t0_);
  const int* last = std::lower_bound(first, b_.logit_rows + b_.n_logits, t0_ + n_);
  const int m = static_cast<int>(last - first);
  for (int r = 0; r < m; ++r) std::copy_n(x + (first[r] - t0_) * D, D, h + r * D);
  if (m > 0) cpu::rmsnorm(h, w_.vec(norm), h, m, D, static_cast<float>(c_.norm_eps));
  tm.charge(kOther);
  if (m == 0) return OkStatus();
  float* out = logits_ + (first - b_.logit_rows) * c_.n_vocab;
  if (!comm_) {
    Status st = cpu::matmul(w_.mat(head), h, m, out);
    tm.charge(kMatmul);
    return st;
  }
  // Vocabulary-parallel: this rank's columns [m, per] (per = the ranks' common slice width, zero-padded), gathered
  // as [ranks][m][per], then placed into the whole rows.
  const int64_t V = c_.n_vocab, per = tp_vocab_range(V, 0, w_.tp.size).end;
  const int64_t mine = w_.tp.vocab_end - w_.tp.vocab_begin;
  thread_local std::vector<float> part, all;
  part.assign(static_cast<size_t>(m * per), 0.0f);
  all.resize(part.size() * static_cast<size_t>(w_.tp.size));
  if (mine > 0) {
    thread_local std::vector<float> y;
    y.resize(static_cast<size_t>(m * mine));
    RETURN_IF_ERROR(cpu::matmul(w_.mat(head), h, m, y.data()));
    for (int r = 0; r < m; ++r) std::copy_n(y.data() + r * mine, mine, part.data() + r * per);
  }
  RETURN_IF_ERROR(comm_->all_gather(part.data(), m * per, all.data()));
  for (int q = 0; q < w_.tp.size; ++q) {
    const VocabRange g = tp_vocab_range(V, q, w_.tp.size);
    for (int r = 0; r < m; ++r) std::copy_n(all.data() + (q * m + r) * per, g.end - g.begin, out + r * V + g.begin);
  }
  tm.charge(kMatmul);
  return OkStatus();
}

}  // namespace citadel
