#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/ops.h"
#include "kernels/quant/quant.h"
#include "model/role_source.h"
#include "model/rope.h"

namespace citadel {
namespace {

// Binds tensors of one store, recording f32 copies in the weights' owned list.
class Binder {
 public:
  Binder(ModelWeights* w, const WeightsOptions& opts)
      : w_(w), opts_(opts), store_(*w->store), source_(*w->store, &w->owned_bytes) {}

  bool find(TensorRole role, int layer) const { return source_.has(role, layer); }

  // f32 copy of any float tensor (vectors: norms, biases, rope factors).
  Result<const float*> vec(const RoleTensor& t) {
    const int64_t n = shape_numel(t.shape);
    std::vector<float> v(static_cast<size_t>(n));
    Status st = dequantize_row(t.dtype, t.data, v.data(), n);
    if (!st.ok()) return Unsupported(store_.path() + ": " + t.name + ": " + st.message());
    for (float x : v) {
      if (!std::isfinite(x)) return DataLoss(store_.path() + ": " + t.name + " holds a non-finite value");
    }
    w_->owned.push_back(std::move(v));
    return w_->owned.back().data();
  }

  // A role's vector [n], shape from role_shape().
  Result<const float*> vec(TensorRole role, int layer) {
    ASSIGN_OR_RETURN(RoleTensor t, source_.get(role, layer, role_shape(w_->config, role)));
    return vec(t);
  }

  // A role's matrix [rows, cols] (shape from role_shape(); a stack [n, rows, cols] is viewed as [n rows, cols]): a
  // view into the file, or an f32 copy (upcast, or data the kernels cannot read in place; for_matmul: read by
  // cpu::matmul, else only gathered by rows).
  Result<WeightView> mat(TensorRole role, int layer, bool for_matmul) {
    const std::vector<int64_t> shape = role_shape(w_->config, role);
    ASSIGN_OR_RETURN(RoleTensor t, source_.get(role, layer, shape));
    const int64_t cols = shape.back();
    const int64_t rows = shape_numel(shape) / std::max<int64_t>(cols, 1);
    const DTypeInfo* info = dtype_info(t.dtype);
    if (cols % info->block != 0) {
      return DataLoss(store_.path() + ": " + t.name + ": " + std::to_string(cols) + " columns is not a multiple of " +
                      info->name + "'s block of " + std::to_string(info->block));
    }
    WeightView v{t.dtype, t.data, rows, cols};
    const bool misaligned = reinterpret_cast<uintptr_t>(t.data) % 4 != 0;
    const bool assembled = !w_->owned_bytes.empty() && t.data == w_->owned_bytes.back().data();
    if (assembled && t.dtype == DType::kF32) return v;  // already an f32 copy
    if (opts_.upcast_f32 || misaligned || (for_matmul && !cpu::matmul_supported(t.dtype))) {
      std::vector<float> f(static_cast<size_t>(rows * cols));
      for (int64_t r = 0; r < rows; ++r) {
        Status st = dequantize_row(t.dtype, t.data + r * v.row_bytes(), f.data() + r * cols, cols);
        if (!st.ok()) return Unsupported(store_.path() + ": " + t.name + ": " + st.message());
      }
      w_->owned.push_back(std::move(f));
      v = WeightView{DType::kF32, w_->owned.back().data(), rows, cols};
      if (assembled) w_->owned_bytes.pop_back();  // superseded by the f32 copy
    }
    return v;
  }

  // Binds one role of one layer (or a global role) into out; the embedding table is only gathered by rows.
  Status bind(TensorRole role, int layer, RoleWeights* out) {
    const size_t i = static_cast<size_t>(role);
    if (role_info(role).matrix) {
      ASSIGN_OR_RETURN(out->mat[i], mat(role, layer, /*for_matmul=*/role != TensorRole::kTokEmbd));
    } else {
      ASSIGN_OR_RETURN(out->vec[i], vec(role, layer));
    }
    return OkStatus();
  }

 private:
  ModelWeights* w_;
  WeightsOptions opts_;
  const TensorStore& store_;
  RoleSource source_;
};

// Binds the arch's roles of one layer (per_layer) or the global ones (see weights.h for the needs).
Status bind_roles(Binder& b, const ArchSpec& arch, bool per_layer, int layer, RoleWeights* out) {
  bool bias_group = arch.qkv_bias_required;
  for (const RoleUse& u : arch.roles) {
    if (u.need == RoleNeed::kBiasGroup && role_info(u.role).per_layer == per_layer) {
      bias_group = bias_group || b.find(u.role, layer);
    }
  }
  for (const RoleUse& u : arch.roles) {
    if (role_info(u.role).per_layer != per_layer) continue;
    const bool bind = u.need == RoleNeed::kRequired || (u.need == RoleNeed::kOptional && b.find(u.role, layer)) ||
                      (u.need == RoleNeed::kBiasGroup && bias_group);
    if (bind) RETURN_IF_ERROR(b.bind(u.role, layer, out));
  }
  return OkStatus();
}

// Places the matrices CPU decode streams in one huge-page buffer (decode_copies): those cpu::matmul reads through the
// 16-row interleaved layout on this CPU (cpu::interleave_wanted) get it there, 64-byte aligned; with copy_half, f16 / bf16 matrices move there (a copy of the file's bytes; the mapping's pages go cold).
// Routed-expert stacks are sliced per expert at run time (slices drop the interleaved copy), so they stay as they are.
Status place_decode_weights(ModelWeights* w, bool copy_half) {
  std::vector<WeightView*> mats{&w->global.mat[static_cast<size_t>(TensorRole::kOutput)]};
  for (RoleWeights& L : w->layers) {
    for (size_t i = 0; i < L.mat.size(); ++i) {
      const TensorRole role = static_cast<TensorRole>(i);
      if (role == TensorRole::kGateExps || role == TensorRole::kUpExps || role == TensorRole::kDownExps) continue;
      mats.push_back(&L.mat[i]);
    }
  }
  // Bytes each matrix takes in the buffer (0: stays where it is), rounded to 64.
  auto bytes_of = [copy_half](const WeightView& v) -> size_t {
    if (!v.data) return 0;
    size_t n = 0;
    if (cpu::interleave_wanted(v.dtype)) n = cpu::interleaved_bytes(v.dtype, v.rows, v.cols);
    else if (copy_half && (v.dtype == DType::kF16 || v.dtype == DType::kBF16)) n = v.rows * v.row_bytes();
    return (n + 63) / 64 * 64;
  };
  size_t total = 0;
  for (const WeightView* v : mats) total += bytes_of(*v);
  if (total == 0) return OkStatus();
  w->decode_copies = HugePageBuffer(total);
  uint8_t* p = w->decode_copies.data();
  for (WeightView* v : mats) {
    const size_t n = bytes_of(*v);
    if (n == 0) continue;
    if (cpu::interleave_wanted(v->dtype)) {
      RETURN_IF_ERROR(cpu::interleave_weights(*v, p));
      v->interleaved = p;
    } else {
      std::memcpy(p, v->data, v->rows * v->row_bytes());
      v->data = p;
    }
    p += n;
  }
  return OkStatus();
}

}  // namespace

uint64_t ModelWeights::bytes_per_token() const {
  auto bytes = [](const WeightView& v) { return static_cast<uint64_t>(v.rows) * v.row_bytes(); };
  uint64_t n = bytes(mat(TensorRole::kOutput));
  for (const RoleWeights& L : layers) {
    for (size_t i = 0; i < L.mat.size(); ++i) {
      const WeightView& v = L.mat[i];
      const TensorRole role = static_cast<TensorRole>(i);
      if (!v.data || role == TensorRole::kWkvB) continue;  // split into k_b / v_b at load
      const bool routed = role == TensorRole::kGateExps || role == TensorRole::kUpExps || role == TensorRole::kDownExps;
      // A token reads only its selected experts.
      n += routed ? bytes(v) / static_cast<uint64_t>(config.moe.n_experts) * config.moe.n_experts_used : bytes(v);
    }
  }
  return n;
}

Result<std::unique_ptr<ModelWeights>> load_weights(std::unique_ptr<TensorStore> store, const WeightsOptions& opts) {
  if (!store) return InvalidArgument("load_weights: no tensor store");
  auto w = std::make_unique<ModelWeights>();
  ASSIGN_OR_RETURN(w->config, model_config_from(*store));
  const ModelConfig& c = w->config;
  w->arch = find_arch(c.arch);
  if (!w->arch) return Unsupported(store->path() + ": architecture '" + c.arch + "' has no recipe");
  w->store = std::move(store);
  w->upcast = opts.upcast_f32;
  Binder b(w.get(), opts);
  RETURN_IF_ERROR(bind_roles(b, *w->arch, /*per_layer=*/false, 0, &w->global));
  w->layers.resize(static_cast<size_t>(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) RETURN_IF_ERROR(bind_roles(b, *w->arch, /*per_layer=*/true, l, &w->layers[l]));

  RoleWeights& g = w->global;
  WeightView& output = g.mat[static_cast<size_t>(TensorRole::kOutput)];
  const WeightView& tok_embd = g.mat[static_cast<size_t>(TensorRole::kTokEmbd)];
  if (!output.data && cpu::matmul_supported(tok_embd.dtype)) {
    output = tok_embd;  // tied
  } else if (!output.data) {
    ASSIGN_OR_RETURN(output, b.mat(TensorRole::kTokEmbd, 0, /*for_matmul=*/true));  // tied, an f32 copy
  }
  if (w->arch->finish) RETURN_IF_ERROR(w->arch->finish(w.get()));
  // Without huge pages a copy of f16 / bf16 matrices gains nothing over the file mapping.
  if (!opts.upcast_f32) {
    // f16 / bf16 matrices are copied only out of a file mapping (whose pages go cold and can be reclaimed); a model
    // held in memory (decrypted) keeps its one copy.
    RETURN_IF_ERROR(place_decode_weights(
        w.get(), opts.copy_half_for_decode && huge_pages_enabled() && w->store->file_backed()));
  }
  const float*& rope_freqs = g.vec[static_cast<size_t>(TensorRole::kRopeFreqs)];
  if (!rope_freqs && c.rope_scaling.type == "llama3") {
    auto factors = llama3_rope_factors(c);
    if (!factors.ok()) return DataLoss(w->store->path() + ": " + factors.status().message());
    w->owned.push_back(std::move(*factors));
    rope_freqs = w->owned.back().data();
  }
  return w;
}

Result<std::unique_ptr<ModelWeights>> load_model(const std::string& path, const WeightsOptions& opts) {
  ASSIGN_OR_RETURN(auto store, open_model_file(path));
  return load_weights(std::move(store), opts);
}

}  // namespace citadel
