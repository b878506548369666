#include "model/cpu_ops.h"

#include <algorithm>
#include <chrono>

#include "base/check.h"

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
  switch (a) {
    case Act::kResidual: case Act::kDelta: case Act::kNormed: return static_cast<size_t>(c.dim);
    case Act::kQkv: return static_cast<size_t>((c.n_heads + 2 * c.n_kv_heads) * c.head_dim);
    case Act::kAttn: return static_cast<size_t>(c.n_heads * c.head_dim);
    case Act::kFfn: return static_cast<size_t>(c.ffn_dim);
  }
  return 0;
}

}  // namespace

ForwardScratch::ForwardScratch(const ModelConfig& c, int max_tokens_in) : max_tokens(std::max(1, max_tokens_in)) {
  const size_t T = static_cast<size_t>(max_tokens);
  for (size_t a = 0; a < kNumActs; ++a) act[a].resize(T * act_width(c, static_cast<Act>(a)));
  up.resize(T * static_cast<size_t>(c.ffn_dim));
  slot_block.resize(T);
  slot_offset.resize(T);
}

CpuOps::CpuOps(const ModelWeights& w, const RopeParams& rope, const ForwardBatch& b, int t0, int n,
               const std::vector<KvCacheView>& kv, ForwardScratch* s, float* logits)
    : w_(w), c_(w.config), rope_(rope), b_(b), t0_(t0), n_(n), kv_(kv), s_(s), logits_(logits) {
  CHECK(n_ <= s_->max_tokens);
  const int bs = kv_[0].block_size;
  for (int i = 0; i < n_; ++i) {
    s_->slot_block[i] = b_.slots[t0_ + i] / bs;
    s_->slot_offset[i] = b_.slots[t0_ + i] % bs;
  }
}

Status CpuOps::embed(TensorRole table) {
  OpTimer tm(s_->profile);
  Status st = cpu::embedding(w_.mat(table), b_.tokens + t0_, n_, act(Act::kResidual));
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
  add_biases(w, layer, t);
  tm.charge(kOther);
  return OkStatus();
}

// gate into `out`, up into the scratch's up buffer, then out = silu(gate) * up in place.
Status CpuOps::linear_silu_mul(const Linear& w, int layer, Act in, Act out) {
  CHECK(w.n == 2);
  OpTimer tm(s_->profile);
  const cpu::MatmulTarget t[2] = {{w_.mat(w.roles[0], layer), act(out)}, {w_.mat(w.roles[1], layer), s_->up.data()}};
  RETURN_IF_ERROR(cpu::matmul_multi(t, 2, act(in), n_));
  tm.charge(kMatmul);
  add_biases(w, layer, t);
  cpu::silu_mul(t[0].y, t[1].y, t[0].y, n_ * t[0].w.rows);
  tm.charge(kOther);
  return OkStatus();
}

Status CpuOps::rope_kv_write(int layer) {
  OpTimer tm(s_->profile);
  const int H = static_cast<int>(c_.n_heads), KVH = static_cast<int>(c_.n_kv_heads), hd = static_cast<int>(c_.head_dim);
  float* q = act(Act::kQkv);
  float* k = q + static_cast<size_t>(s_->max_tokens) * H * hd;
  float* v = k + static_cast<size_t>(s_->max_tokens) * KVH * hd;
  cpu::rope(q, n_, H, hd, b_.positions + t0_, rope_);
  cpu::rope(k, n_, KVH, hd, b_.positions + t0_, rope_);
  cpu::kv_write(kv_[layer], k, v, n_, s_->slot_block.data(), s_->slot_offset.data());
  tm.charge(kOther);
  return OkStatus();
}

Status CpuOps::attention(int layer) {
  OpTimer tm(s_->profile);
  AttnBatch ab;
  ab.n_tokens = n_;
  ab.block_tables = b_.block_tables;
  ab.max_blocks_per_seq = b_.max_blocks;
  ab.n_seqs = b_.n_seqs;
  ab.seq_of_token = b_.seq_of_token + t0_;
  ab.pos_of_token = b_.positions + t0_;
  cpu::attention(act(Act::kQkv), kv_[layer], ab, static_cast<int>(c_.n_heads), 0.0f, act(Act::kAttn));
  tm.charge(kAttn);
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
  Status st = cpu::matmul(w_.mat(head), h, m, logits_ + (first - b_.logit_rows) * c_.n_vocab);
  tm.charge(kMatmul);
  return st;
}

}  // namespace citadel
