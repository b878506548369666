#include "model/transformer.h"

#include <algorithm>
#include <chrono>
#include <string>

namespace citadel {
namespace {

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

void add_bias(float* y, const float* bias, int n_tokens, int64_t width) {
  if (!bias) return;
  for (int t = 0; t < n_tokens; ++t) cpu::add(y + t * width, bias, y + t * width, width);
}

}  // namespace

RopeParams rope_params_for(const ModelConfig& c, const float* freq_factors) {
  RopeParams p;
  p.type = c.rope_type == RopeStyle::kNorm ? RopeType::kNorm : RopeType::kNeox;
  p.rope_dim = static_cast<int>(c.rope_dim);
  p.freq_base = static_cast<float>(c.rope_theta);
  p.freq_factors = freq_factors;
  const RopeScaling& s = c.rope_scaling;
  if ((s.type == "linear" || s.type == "yarn") && s.factor > 0) p.freq_scale = static_cast<float>(1.0 / s.factor);
  if (s.type == "yarn") {
    p.ext_factor = 1.0f;
    p.n_ctx_orig = static_cast<int>(s.original_context > 0 ? s.original_context : c.context_len);
  }
  return p;
}

ForwardScratch::ForwardScratch(const ModelConfig& c, int max_tokens_in) : max_tokens(std::max(1, max_tokens_in)) {
  const size_t T = static_cast<size_t>(max_tokens);
  const size_t q_dim = static_cast<size_t>(c.n_heads * c.head_dim), kv_dim = static_cast<size_t>(c.n_kv_heads * c.head_dim);
  x.resize(T * c.dim);
  h.resize(T * c.dim);
  q.resize(T * q_dim);
  k.resize(T * kv_dim);
  v.resize(T * kv_dim);
  att.resize(T * q_dim);
  gate.resize(T * c.ffn_dim);
  up.resize(T * c.ffn_dim);
  slot_block.resize(T);
  slot_offset.resize(T);
}

Transformer::Transformer(const ModelWeights* w) : w_(w), rope_(rope_params_for(w->config, w->rope_freqs)) {}

Status Transformer::check_batch(const ForwardBatch& b, const std::vector<KvCacheView>& kv) const {
  const ModelConfig& c = w_->config;
  if (b.n_tokens < 0 || b.n_logits < 0 || b.n_logits > b.n_tokens) return InvalidArgument("forward: bad batch sizes");
  if (kv.size() != static_cast<size_t>(c.n_layers)) return InvalidArgument("forward: one KV view per layer needed");
  if (b.n_tokens == 0) return OkStatus();
  const int64_t n_slots = static_cast<int64_t>(kv[0].n_blocks) * kv[0].block_size;
  for (int i = 0; i < b.n_tokens; ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= c.n_vocab) {
      return InvalidArgument("forward: token " + std::to_string(i) + " has id " + std::to_string(b.tokens[i]) +
                             " outside the vocabulary of " + std::to_string(c.n_vocab));
    }
    if (b.slots[i] < 0 || b.slots[i] >= n_slots || b.seq_of_token[i] < 0 || b.seq_of_token[i] >= b.n_seqs ||
        b.positions[i] < 0 || b.positions[i] / kv[0].block_size >= b.max_blocks) {
      return InvalidArgument("forward: token " + std::to_string(i) + " has a slot, sequence or position out of range");
    }
  }
  // Attention reads blocks 0..pos/block_size of each token's sequence: all must name real blocks, and each token
  // must write inside its own sequence's table.
  const int bs = kv[0].block_size;
  std::vector<int32_t> max_pos(static_cast<size_t>(b.n_seqs), -1);
  for (int i = 0; i < b.n_tokens; ++i) {
    max_pos[b.seq_of_token[i]] = std::max(max_pos[b.seq_of_token[i]], b.positions[i]);
    const int32_t* row = b.block_tables + static_cast<int64_t>(b.seq_of_token[i]) * b.max_blocks;
    if (b.slots[i] / bs != row[b.positions[i] / bs]) {
      return InvalidArgument("forward: token " + std::to_string(i) + " writes a slot outside its block table");
    }
  }
  for (int q = 0; q < b.n_seqs; ++q) {
    const int32_t* row = b.block_tables + static_cast<int64_t>(q) * b.max_blocks;
    for (int j = 0; max_pos[q] >= 0 && j <= max_pos[q] / bs; ++j) {
      if (row[j] < 0 || row[j] >= kv[0].n_blocks) {
        return InvalidArgument("forward: block table of sequence " + std::to_string(q) + " has no valid block " +
                               std::to_string(j) + " for position " + std::to_string(max_pos[q]));
      }
    }
  }
  for (int r = 0; r < b.n_logits; ++r) {
    if (b.logit_rows[r] < 0 || b.logit_rows[r] >= b.n_tokens || (r > 0 && b.logit_rows[r] <= b.logit_rows[r - 1])) {
      return InvalidArgument("forward: logit_rows must be increasing token indices");
    }
  }
  return OkStatus();
}

Status Transformer::forward(const ForwardBatch& b, const std::vector<KvCacheView>& kv, ForwardScratch* s,
                            float* logits) const {
  RETURN_IF_ERROR(check_batch(b, kv));
  for (int t0 = 0; t0 < b.n_tokens; t0 += s->max_tokens) {
    RETURN_IF_ERROR(run_chunk(b, t0, std::min(s->max_tokens, b.n_tokens - t0), kv, s, logits));
  }
  return OkStatus();
}

// Tokens [t0, t0 + n) through the whole model; logits for the logit rows among them.
Status Transformer::run_chunk(const ForwardBatch& b, int t0, int n, const std::vector<KvCacheView>& kv,
                              ForwardScratch* s, float* logits) const {
  const ModelConfig& c = w_->config;
  RETURN_IF_ERROR(cpu::embedding(w_->tok_embd, b.tokens + t0, n, s->x.data()));
  const int bs = kv[0].block_size;
  for (int i = 0; i < n; ++i) {
    s->slot_block[i] = b.slots[t0 + i] / bs;
    s->slot_offset[i] = b.slots[t0 + i] % bs;
  }
  for (int l = 0; l < c.n_layers; ++l) RETURN_IF_ERROR(layer(l, b, t0, n, kv[l], s));

  // Gather the wanted rows of this chunk, final norm, LM head.
  const int* first = std::lower_bound(b.logit_rows, b.logit_rows + b.n_logits, t0);
  const int* last = std::lower_bound(first, b.logit_rows + b.n_logits, t0 + n);
  const int m = static_cast<int>(last - first);
  if (m == 0) return OkStatus();
  for (int r = 0; r < m; ++r) {
    std::copy_n(s->x.data() + static_cast<size_t>(first[r] - t0) * c.dim, c.dim, s->h.data() + static_cast<size_t>(r) * c.dim);
  }
  cpu::rmsnorm(s->h.data(), w_->output_norm, s->h.data(), m, c.dim, static_cast<float>(c.norm_eps));
  float* out = logits + static_cast<size_t>(first - b.logit_rows) * c.n_vocab;
  OpTimer tm(s->profile);
  Status st = cpu::matmul(w_->output, s->h.data(), m, out);
  tm.charge(&ForwardProfile::matmul);
  return st;
}

Status Transformer::layer(int l, const ForwardBatch& b, int t0, int n, const KvCacheView& kv,
                          ForwardScratch* s) const {
  const ModelConfig& c = w_->config;
  const LayerWeights& L = w_->layers[l];
  const int64_t dim = c.dim, q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  const float eps = static_cast<float>(c.norm_eps);
  float *x = s->x.data(), *h = s->h.data();

  OpTimer tm(s->profile);
  constexpr auto kMatmul = &ForwardProfile::matmul, kAttn = &ForwardProfile::attention, kOther = &ForwardProfile::other;

  // Attention block.
  cpu::rmsnorm(x, L.attn_norm, h, n, dim, eps);
  tm.charge(kOther);
  {
    const cpu::MatmulTarget qkv[3] = {{L.wq, s->q.data()}, {L.wk, s->k.data()}, {L.wv, s->v.data()}};
    RETURN_IF_ERROR(cpu::matmul_multi(qkv, 3, h, n));  // one parallel region for the three
  }
  tm.charge(kMatmul);
  add_bias(s->q.data(), L.bq, n, q_dim);
  add_bias(s->k.data(), L.bk, n, kv_dim);
  add_bias(s->v.data(), L.bv, n, kv_dim);
  cpu::rope(s->q.data(), n, static_cast<int>(c.n_heads), static_cast<int>(c.head_dim), b.positions + t0, rope_);
  cpu::rope(s->k.data(), n, static_cast<int>(c.n_kv_heads), static_cast<int>(c.head_dim), b.positions + t0, rope_);
  cpu::kv_write(kv, s->k.data(), s->v.data(), n, s->slot_block.data(), s->slot_offset.data());
  tm.charge(kOther);
  AttnBatch ab;
  ab.n_tokens = n;
  ab.block_tables = b.block_tables;
  ab.max_blocks_per_seq = b.max_blocks;
  ab.n_seqs = b.n_seqs;
  ab.seq_of_token = b.seq_of_token + t0;
  ab.pos_of_token = b.positions + t0;
  cpu::attention(s->q.data(), kv, ab, static_cast<int>(c.n_heads), 0.0f, s->att.data());
  tm.charge(kAttn);
  RETURN_IF_ERROR(cpu::matmul(L.wo, s->att.data(), n, h));
  tm.charge(kMatmul);
  cpu::add(x, h, x, n * dim);

  // Feed-forward block (SwiGLU).
  cpu::rmsnorm(x, L.ffn_norm, h, n, dim, eps);
  tm.charge(kOther);
  {
    const cpu::MatmulTarget gate_up[2] = {{L.w_gate, s->gate.data()}, {L.w_up, s->up.data()}};
    RETURN_IF_ERROR(cpu::matmul_multi(gate_up, 2, h, n));
  }
  tm.charge(kMatmul);
  cpu::silu_mul(s->gate.data(), s->up.data(), s->gate.data(), n * c.ffn_dim);
  tm.charge(kOther);
  RETURN_IF_ERROR(cpu::matmul(L.w_down, s->gate.data(), n, h));
  tm.charge(kMatmul);
  cpu::add(x, h, x, n * dim);
  tm.charge(kOther);
  return OkStatus();
}

}  // namespace citadel
