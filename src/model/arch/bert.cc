#include "model/arch/bert.h"

#include <cmath>
#include <cstring>

#include "base/rng.h"
#include "kernels/quant/quant.h"

namespace citadel {
namespace {

class BertBinder {
 public:
  BertBinder(BertWeights* w, std::string prefix) : w_(w), s_(*w->store), prefix_(std::move(prefix)) {}

  Result<const TensorInfo*> get(const std::string& name, const std::vector<int64_t>& shape) {
    const std::string full = prefix_ + name;
    const TensorInfo* t = s_.find(full);
    if (!t) return DataLoss(s_.path() + ": tensor " + full + " is missing");
    if (!shape.empty() && t->shape != shape)
      return DataLoss(s_.path() + ": " + full + " has shape " + shape_str(t->shape) + ", expected " + shape_str(shape));
    if (!dtype_info(t->dtype)) return Unsupported(s_.path() + ": " + full + " has an unknown dtype");
    return t;
  }

  // f32 vector [n]; non-finite values are refused.
  Result<const float*> vec(const std::string& name, int64_t n) {
    ASSIGN_OR_RETURN(const TensorInfo* t, get(name, {n}));
    std::vector<float> v(static_cast<size_t>(n));
    Status st = dequantize_row(t->dtype, t->data, v.data(), n);
    if (!st.ok()) return Unsupported(s_.path() + ": " + t->name + ": " + st.message());
    for (float x : v)
      if (!std::isfinite(x)) return DataLoss(s_.path() + ": " + t->name + " holds a non-finite value");
    w_->owned.push_back(std::move(v));
    return w_->owned.back().data();
  }

  // Matrix [rows, cols]: a view of f32 data in the file, else an f32 copy (rows = 0: any row count).
  Result<WeightView> mat(const std::string& name, int64_t rows, int64_t cols) {
    const std::vector<int64_t> shape = rows > 0 ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{};
    ASSIGN_OR_RETURN(const TensorInfo* t, get(name, shape));
    if (t->shape.size() != 2 || t->shape[1] != cols)
      return DataLoss(s_.path() + ": " + t->name + " has shape " + shape_str(t->shape) + ", expected [*, " +
                      std::to_string(cols) + "]");
    WeightView v{t->dtype, t->data, t->shape[0], cols};
    const bool aligned = reinterpret_cast<uintptr_t>(t->data) % 4 == 0;
    if (t->dtype == DType::kF32 && aligned) return v;
    if (dtype_info(t->dtype)->block != 1 && cols % dtype_info(t->dtype)->block != 0)
      return DataLoss(s_.path() + ": " + t->name + ": columns do not fill whole blocks");
    std::vector<float> f(static_cast<size_t>(v.rows * cols));
    for (int64_t r = 0; r < v.rows; ++r) {
      Status st = dequantize_row(t->dtype, t->data + r * v.row_bytes(), f.data() + r * cols, cols);
      if (!st.ok()) return Unsupported(s_.path() + ": " + t->name + ": " + st.message());
    }
    w_->owned.push_back(std::move(f));
    return WeightView{DType::kF32, w_->owned.back().data(), v.rows, cols};
  }

 private:
  BertWeights* w_;
  const TensorStore& s_;
  std::string prefix_;
};

// A matrix [rows, cols] packed for the f32 GEMM.
Result<PackedMatrix> packed(BertBinder& b, const std::string& name, int64_t rows, int64_t cols) {
  ASSIGN_OR_RETURN(WeightView v, b.mat(name, rows, cols));
  return cpu::pack_matrix(static_cast<const float*>(v.data), rows, cols);
}

Status bind_layer(BertBinder& b, BertWeights* w, int l, BertLayer* L) {
  const ModelConfig& c = w->config;
  const std::string p = "encoder.layer." + std::to_string(l) + ".";
  const int64_t d = c.dim, f = c.ffn_dim;
  // Query, key and value as one [3 dim, dim] matrix: one GEMM writes q | k | v per token.
  std::vector<float> qkv(static_cast<size_t>(3 * d * d)), bqkv(static_cast<size_t>(3 * d));
  const char* parts[3] = {"query", "key", "value"};
  for (int i = 0; i < 3; ++i) {
    ASSIGN_OR_RETURN(WeightView m, b.mat(p + "attention.self." + parts[i] + ".weight", d, d));
    ASSIGN_OR_RETURN(const float* bias, b.vec(p + "attention.self." + parts[i] + ".bias", d));
    std::memcpy(qkv.data() + i * d * d, m.data, sizeof(float) * d * d);
    std::memcpy(bqkv.data() + i * d, bias, sizeof(float) * d);
  }
  L->wqkv = cpu::pack_matrix(qkv.data(), 3 * d, d);
  w->owned.push_back(std::move(bqkv));
  L->bqkv = w->owned.back().data();
  ASSIGN_OR_RETURN(L->wo, packed(b, p + "attention.output.dense.weight", d, d));
  ASSIGN_OR_RETURN(L->bo, b.vec(p + "attention.output.dense.bias", d));
  ASSIGN_OR_RETURN(L->attn_norm_w, b.vec(p + "attention.output.LayerNorm.weight", d));
  ASSIGN_OR_RETURN(L->attn_norm_b, b.vec(p + "attention.output.LayerNorm.bias", d));
  ASSIGN_OR_RETURN(L->up, packed(b, p + "intermediate.dense.weight", f, d));
  ASSIGN_OR_RETURN(L->b_up, b.vec(p + "intermediate.dense.bias", f));
  ASSIGN_OR_RETURN(L->down, packed(b, p + "output.dense.weight", d, f));
  ASSIGN_OR_RETURN(L->b_down, b.vec(p + "output.dense.bias", d));
  ASSIGN_OR_RETURN(L->ffn_norm_w, b.vec(p + "output.LayerNorm.weight", d));
  ASSIGN_OR_RETURN(L->ffn_norm_b, b.vec(p + "output.LayerNorm.bias", d));
  return OkStatus();
}

Status check_config(const ModelConfig& c, const std::string& path) {
  struct Req { const char* key; int64_t v; };
  for (const Req& r : {Req{"block_count", c.n_layers}, Req{"embedding_length", c.dim},
                       Req{"attention.head_count", c.n_heads}, Req{"feed_forward_length", c.ffn_dim}}) {
    if (r.v <= 0 || r.v > (int64_t{1} << 24))
      return DataLoss(path + ": bert." + r.key + " is missing or out of range (" + std::to_string(r.v) + ")");
  }
  if (c.dim % c.n_heads != 0 || c.head_dim * c.n_heads != c.dim)
    return DataLoss(path + ": hidden size " + std::to_string(c.dim) + " is not heads " + std::to_string(c.n_heads) +
                    " x head_dim " + std::to_string(c.head_dim));
  if (!(c.norm_eps > 0) || c.norm_eps > 1)
    return DataLoss(path + ": bert.attention.layer_norm_epsilon " + std::to_string(c.norm_eps) + " is out of range");
  return OkStatus();
}

// Post-norm residual: x = LayerNorm(x + t), t [n, dim] (overwritten).
void add_norm(float* x, float* t, const float* w, const float* b, int64_t n, int64_t dim, float eps) {
  cpu::add(x, t, t, n * dim);
  cpu::layernorm(t, w, b, x, n, dim, eps);
}

}  // namespace

bool is_bert_model(const TensorStore& store) {
  return store.meta_string("general.architecture").value_or("") == "bert";
}

Result<std::unique_ptr<BertWeights>> load_bert_weights(std::unique_ptr<TensorStore> store) {
  if (!store) return InvalidArgument("load_bert_weights: no tensor store");
  auto w = std::make_unique<BertWeights>();
  w->config = read_model_config(*store);
  ModelConfig& c = w->config;
  if (c.arch != "bert") return Unsupported(store->path() + ": architecture '" + c.arch + "' is not a BERT encoder");
  RETURN_IF_ERROR(check_config(c, store->path()));
  const std::string prefix = store->find("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  w->store = std::move(store);
  BertBinder b(w.get(), prefix);
  const int64_t d = c.dim;
  ASSIGN_OR_RETURN(w->tok_embd, b.mat("embeddings.word_embeddings.weight", 0, d));
  if (c.n_vocab > 0 && c.n_vocab != w->tok_embd.rows)
    return DataLoss(w->store->path() + ": the word embedding table has " + std::to_string(w->tok_embd.rows) +
                    " rows, the config says vocab_size " + std::to_string(c.n_vocab));
  c.n_vocab = w->tok_embd.rows;
  ASSIGN_OR_RETURN(w->pos_embd, b.mat("embeddings.position_embeddings.weight", 0, d));
  ASSIGN_OR_RETURN(w->type_embd, b.mat("embeddings.token_type_embeddings.weight", 0, d));
  w->n_positions = w->pos_embd.rows;
  w->n_token_types = w->type_embd.rows;
  if (w->n_positions < 1 || w->n_token_types < 1)
    return DataLoss(w->store->path() + ": empty position or token type table");
  if (c.context_len <= 0 || c.context_len > w->n_positions) c.context_len = w->n_positions;
  ASSIGN_OR_RETURN(w->embd_norm_w, b.vec("embeddings.LayerNorm.weight", d));
  ASSIGN_OR_RETURN(w->embd_norm_b, b.vec("embeddings.LayerNorm.bias", d));
  w->layers.resize(static_cast<size_t>(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) RETURN_IF_ERROR(bind_layer(b, w.get(), l, &w->layers[l]));
  return w;
}

std::unique_ptr<BertWeights> random_bert_weights(const ModelConfig& shape, int64_t n_positions, uint64_t seed) {
  auto w = std::make_unique<BertWeights>();
  ModelConfig& c = w->config;
  c = shape;
  c.arch = "bert";
  if (c.head_dim <= 0 && c.n_heads > 0) c.head_dim = c.dim / c.n_heads;
  if (!(c.norm_eps > 0)) c.norm_eps = 1e-12;
  c.context_len = n_positions;
  w->n_positions = n_positions;
  w->n_token_types = 2;
  Xoshiro256 rng(seed);
  // offset + scale * U(-1, 1).
  auto uniform = [&](int64_t n, float scale, float offset) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = offset + scale * (2.0f * rng.uniform_f32() - 1.0f);
    return v;
  };
  auto fill = [&](int64_t n, float scale, float offset = 0.0f) -> const float* {  // kept in w->owned
    w->owned.push_back(uniform(n, scale, offset));
    return w->owned.back().data();
  };
  auto table = [&](int64_t rows, float scale) { return WeightView{DType::kF32, fill(rows * c.dim, scale), rows, c.dim}; };
  auto matrix = [&](int64_t rows, int64_t cols, float gain) {
    const std::vector<float> m = uniform(rows * cols, gain * std::sqrt(3.0f / static_cast<float>(cols)), 0.0f);
    return cpu::pack_matrix(m.data(), rows, cols);
  };
  const int64_t d = c.dim, f = c.ffn_dim;
  w->tok_embd = table(c.n_vocab, 0.05f);
  w->pos_embd = table(n_positions, 0.05f);
  w->type_embd = table(2, 0.05f);
  w->embd_norm_w = fill(d, 0.1f, 1.0f);
  w->embd_norm_b = fill(d, 0.05f);
  w->layers.resize(static_cast<size_t>(c.n_layers));
  for (BertLayer& L : w->layers) {
    L.wqkv = matrix(3 * d, d, 1.0f);
    L.bqkv = fill(3 * d, 0.02f);
    L.wo = matrix(d, d, 0.5f);
    L.bo = fill(d, 0.02f);
    L.attn_norm_w = fill(d, 0.1f, 1.0f);
    L.attn_norm_b = fill(d, 0.05f);
    L.up = matrix(f, d, 1.0f);
    L.b_up = fill(f, 0.02f);
    L.down = matrix(d, f, 0.5f);
    L.b_down = fill(d, 0.02f);
    L.ffn_norm_w = fill(d, 0.1f, 1.0f);
    L.ffn_norm_b = fill(d, 0.05f);
  }
  return w;
}

Status BertEncoder::hidden(const EncoderBatch& b, EncoderScratch* s) const {
  const ModelConfig& c = w_->config;
  if (b.n_seqs < 1 || !b.seq_start || !b.tokens || b.seq_start[0] != 0)
    return InvalidArgument("embed: an empty batch");
  for (int i = 0; i < b.n_seqs; ++i) {
    const int64_t len = b.seq_start[i + 1] - b.seq_start[i];
    if (len < 1 || len > w_->n_positions)
      return InvalidArgument("embed: sequence " + std::to_string(i) + " has " + std::to_string(len) +
                             " tokens; 1 to " + std::to_string(w_->n_positions) + " are allowed");
  }
  const int64_t n = b.seq_start[b.n_seqs], d = c.dim, f = c.ffn_dim;
  const float eps = static_cast<float>(c.norm_eps);
  for (auto* v : {&s->x, &s->attn, &s->tmp})
    if (v->size() < static_cast<size_t>(n * d)) v->resize(static_cast<size_t>(n * d));
  if (s->qkv.size() < static_cast<size_t>(3 * n * d)) s->qkv.resize(static_cast<size_t>(3 * n * d));
  if (s->ffn.size() < static_cast<size_t>(n * f)) s->ffn.resize(static_cast<size_t>(n * f));
  s->pos.resize(static_cast<size_t>(n));
  for (int i = 0; i < b.n_seqs; ++i)
    for (int32_t t = b.seq_start[i]; t < b.seq_start[i + 1]; ++t) s->pos[t] = t - b.seq_start[i];

  float *x = s->x.data(), *tmp = s->tmp.data();
  RETURN_IF_ERROR(cpu::embedding(w_->tok_embd, b.tokens, n, x));
  RETURN_IF_ERROR(cpu::embedding(w_->pos_embd, s->pos.data(), n, tmp));
  cpu::add(x, tmp, x, n * d);
  cpu::add_bias(x, static_cast<const float*>(w_->type_embd.data), n, d);  // token type 0 for every token
  cpu::layernorm(x, w_->embd_norm_w, w_->embd_norm_b, x, n, d, eps);

  for (const BertLayer& L : w_->layers) {
    float* qkv = s->qkv.data();
    cpu::matmul_packed(L.wqkv, x, n, L.bqkv, qkv);
    cpu::encoder_attention(qkv, qkv + d, qkv + 2 * d, 3 * d, b.seq_start, b.n_seqs, static_cast<int>(c.n_heads),
                           static_cast<int>(c.head_dim), 0.0f, s->attn.data());
    cpu::matmul_packed(L.wo, s->attn.data(), n, L.bo, tmp);
    add_norm(x, tmp, L.attn_norm_w, L.attn_norm_b, n, d, eps);
    cpu::matmul_packed(L.up, x, n, L.b_up, s->ffn.data(), 0, cpu::Epilogue::kGeluErf);
    cpu::matmul_packed(L.down, s->ffn.data(), n, L.b_down, tmp);
    add_norm(x, tmp, L.ffn_norm_w, L.ffn_norm_b, n, d, eps);
  }
  return OkStatus();
}

Status BertEncoder::embed(const EncoderBatch& b, EncoderScratch* s, float* out) const {
  RETURN_IF_ERROR(hidden(b, s));
  const int64_t d = w_->config.dim;
  const float* x = s->x.data();
  for (int i = 0; i < b.n_seqs; ++i) {
    const int32_t t0 = b.seq_start[i], t1 = b.seq_start[i + 1];
    std::vector<double> acc(static_cast<size_t>(d), 0.0);
    for (int32_t t = t0; t < t1; ++t)
      for (int64_t j = 0; j < d; ++j) acc[j] += x[t * d + j];
    double norm = 0;
    for (int64_t j = 0; j < d; ++j) {
      acc[j] /= (t1 - t0);
      norm += acc[j] * acc[j];
    }
    const double scale = opts_.normalize ? 1.0 / std::max(std::sqrt(norm), 1e-12) : 1.0;
    for (int64_t j = 0; j < d; ++j) out[i * d + j] = static_cast<float>(acc[j] * scale);
  }
  return OkStatus();
}

}  // namespace citadel
