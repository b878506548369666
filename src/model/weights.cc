#include "model/weights.h"

#include <cmath>
#include <cstring>

#include "kernels/quant/quant.h"

namespace citadel {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Binds tensors of one store, recording f32 copies in the weights' owned list.
class Binder {
 public:
  Binder(ModelWeights* w, const WeightsOptions& opts) : w_(w), opts_(opts), store_(*w->store) {}

  const TensorInfo* find(TensorRole role, int layer) const {
    return store_.find(tensor_name(role, layer, store_.format()));
  }

  // A tensor that must exist with exactly this shape.
  Result<const TensorInfo*> get(TensorRole role, int layer, const std::vector<int64_t>& shape) {
    const std::string name = tensor_name(role, layer, store_.format());
    const TensorInfo* t = store_.find(name);
    if (!t) return DataLoss(store_.path() + ": tensor " + name + " is missing");
    if (t->shape != shape) {
      return DataLoss(store_.path() + ": " + name + " has shape " + shape_str(t->shape) + ", expected " +
                      shape_str(shape));
    }
    if (!dtype_info(t->dtype)) return Unsupported(store_.path() + ": " + name + " has an unknown dtype");
    return t;
  }

  // f32 copy of any float tensor (vectors: norms, biases, rope factors).
  Result<const float*> vec(const TensorInfo* t) {
    std::vector<float> v(static_cast<size_t>(t->numel()));
    Status st = dequantize_row(t->dtype, t->data, v.data(), t->numel());
    if (!st.ok()) return Unsupported(store_.path() + ": " + t->name + ": " + st.message());
    for (float x : v) {
      if (!std::isfinite(x)) return DataLoss(store_.path() + ": " + t->name + " holds a non-finite value");
    }
    w_->owned.push_back(std::move(v));
    return w_->owned.back().data();
  }

  Result<const float*> vec(TensorRole role, int layer, int64_t n) {
    ASSIGN_OR_RETURN(const TensorInfo* t, get(role, layer, {n}));
    return vec(t);
  }

  // A matrix [rows, cols]: a view into the file, or an f32 copy (upcast, or data the kernels cannot read in place).
  Result<WeightView> mat(TensorRole role, int layer, int64_t rows, int64_t cols, bool for_matmul) {
    ASSIGN_OR_RETURN(const TensorInfo* t, get(role, layer, {rows, cols}));
    const DTypeInfo* info = dtype_info(t->dtype);
    if (cols % info->block != 0) {
      return DataLoss(store_.path() + ": " + t->name + ": " + std::to_string(cols) + " columns is not a multiple of " +
                      info->name + "'s block of " + std::to_string(info->block));
    }
    WeightView v{t->dtype, t->data, rows, cols};
    const bool misaligned = reinterpret_cast<uintptr_t>(t->data) % 4 != 0;
    if (opts_.upcast_f32 || misaligned || (for_matmul && !cpu::matmul_supported(t->dtype))) {
      std::vector<float> f(static_cast<size_t>(rows * cols));
      for (int64_t r = 0; r < rows; ++r) {
        Status st = dequantize_row(t->dtype, t->data + r * v.row_bytes(), f.data() + r * cols, cols);
        if (!st.ok()) return Unsupported(store_.path() + ": " + t->name + ": " + st.message());
      }
      w_->owned.push_back(std::move(f));
      v = WeightView{DType::kF32, w_->owned.back().data(), rows, cols};
    }
    return v;
  }

 private:
  ModelWeights* w_;
  WeightsOptions opts_;
  const TensorStore& store_;
};

// Llama-3.1 "llama3" rope scaling from HF config values (GGUF files carry the result as rope_freqs.weight).
std::vector<float> llama3_freq_factors(const ModelConfig& c) {
  const auto& s = c.rope_scaling;
  const double old_ctx = s.original_context > 0 ? static_cast<double>(s.original_context) : 8192.0;
  const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
  std::vector<float> f(static_cast<size_t>(c.rope_dim / 2));
  for (size_t i = 0; i < f.size(); ++i) {
    const double freq = std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(c.rope_dim));
    const double wavelen = 2.0 * M_PI / freq;
    double div = 1.0;
    if (wavelen > low_wavelen) {
      div = s.factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      div = 1.0 / ((1.0 - smooth) / s.factor + smooth);
    }
    f[i] = static_cast<float>(div);
  }
  return f;
}

Status bind_layer(Binder& b, const ModelConfig& c, const ArchSpec& arch, int l, LayerWeights* L) {
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  ASSIGN_OR_RETURN(L->attn_norm, b.vec(TensorRole::kAttnNorm, l, c.dim));
  ASSIGN_OR_RETURN(L->wq, b.mat(TensorRole::kWq, l, q_dim, c.dim, true));
  ASSIGN_OR_RETURN(L->wk, b.mat(TensorRole::kWk, l, kv_dim, c.dim, true));
  ASSIGN_OR_RETURN(L->wv, b.mat(TensorRole::kWv, l, kv_dim, c.dim, true));
  if (arch.qkv_bias_required || b.find(TensorRole::kBq, l)) {
    ASSIGN_OR_RETURN(L->bq, b.vec(TensorRole::kBq, l, q_dim));
    ASSIGN_OR_RETURN(L->bk, b.vec(TensorRole::kBk, l, kv_dim));
    ASSIGN_OR_RETURN(L->bv, b.vec(TensorRole::kBv, l, kv_dim));
  }
  ASSIGN_OR_RETURN(L->wo, b.mat(TensorRole::kWo, l, c.dim, q_dim, true));
  ASSIGN_OR_RETURN(L->ffn_norm, b.vec(TensorRole::kFfnNorm, l, c.dim));
  ASSIGN_OR_RETURN(L->w_gate, b.mat(TensorRole::kGate, l, c.ffn_dim, c.dim, true));
  ASSIGN_OR_RETURN(L->w_up, b.mat(TensorRole::kUp, l, c.ffn_dim, c.dim, true));
  ASSIGN_OR_RETURN(L->w_down, b.mat(TensorRole::kDown, l, c.dim, c.ffn_dim, true));
  return OkStatus();
}

}  // namespace

uint64_t ModelWeights::bytes_per_token() const {
  auto bytes = [](const WeightView& v) { return static_cast<uint64_t>(v.rows) * v.row_bytes(); };
  uint64_t n = bytes(output);
  for (const LayerWeights& L : layers) {
    n += bytes(L.wq) + bytes(L.wk) + bytes(L.wv) + bytes(L.wo) + bytes(L.w_gate) + bytes(L.w_up) + bytes(L.w_down);
  }
  return n;
}

Result<std::unique_ptr<ModelWeights>> load_weights(std::unique_ptr<TensorStore> store, const WeightsOptions& opts) {
  if (!store) return InvalidArgument("load_weights: no tensor store");
  auto w = std::make_unique<ModelWeights>();
  ASSIGN_OR_RETURN(w->config, model_config_from(*store));
  const ModelConfig& c = w->config;
  w->arch = find_arch(c.arch);
  if (!w->arch) return Unsupported(store->path() + ": architecture '" + c.arch + "' is not of the llama family");
  w->store = std::move(store);
  w->upcast = opts.upcast_f32;
  Binder b(w.get(), opts);
  ASSIGN_OR_RETURN(w->tok_embd, b.mat(TensorRole::kTokEmbd, 0, c.n_vocab, c.dim, false));
  w->layers.resize(static_cast<size_t>(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) RETURN_IF_ERROR(bind_layer(b, c, *w->arch, l, &w->layers[l]));
  ASSIGN_OR_RETURN(w->output_norm, b.vec(TensorRole::kOutputNorm, 0, c.dim));
  if (b.find(TensorRole::kOutput, 0)) {
    ASSIGN_OR_RETURN(w->output, b.mat(TensorRole::kOutput, 0, c.n_vocab, c.dim, true));
  } else if (cpu::matmul_supported(w->tok_embd.dtype)) {
    w->output = w->tok_embd;  // tied
  } else {
    ASSIGN_OR_RETURN(w->output, b.mat(TensorRole::kTokEmbd, 0, c.n_vocab, c.dim, true));
  }
  if (b.find(TensorRole::kRopeFreqs, 0)) {
    ASSIGN_OR_RETURN(w->rope_freqs, b.vec(TensorRole::kRopeFreqs, 0, c.rope_dim / 2));
  } else if (c.rope_scaling.type == "llama3") {
    if (!(c.rope_scaling.factor > 0) || !(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor) ||
        !(c.rope_scaling.low_freq_factor > 0)) {
      return DataLoss(w->store->path() + ": llama3 rope scaling needs factor > 0 and high_freq_factor > "
                      "low_freq_factor > 0");
    }
    w->owned.push_back(llama3_freq_factors(c));
    w->rope_freqs = w->owned.back().data();
  }
  return w;
}

Result<std::unique_ptr<ModelWeights>> load_model(const std::string& path, const WeightsOptions& opts) {
  ASSIGN_OR_RETURN(auto store, open_model_file(path));
  return load_weights(std::move(store), opts);
}

}  // namespace citadel
