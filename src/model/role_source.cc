#include "model/role_source.h"

#include <cstring>

#include "kernels/quant/quant.h"

namespace citadel {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr const char* kScaleSuffix = "_scale_inv";

}  // namespace

RoleSource::RoleSource(const TensorStore& store, std::vector<std::vector<uint8_t>>* arena)
    : store_(store), arena_(arena) {
  const int64_t br = store.meta_int("hf.quantization.weight_block_rows").value_or(128);
  const int64_t bc = store.meta_int("hf.quantization.weight_block_cols").value_or(128);
  if (br > 0) block_rows_ = br;
  if (bc > 0) block_cols_ = bc;
}

bool RoleSource::has(TensorRole role, int layer) const {
  if (store_.find(tensor_name(role, layer, store_.format()))) return true;
  return store_.format() == "safetensors" && hf_expert_parts(role) &&
         store_.find(hf_expert_name(role, layer, 0)) != nullptr;
}

uint8_t* RoleSource::new_buffer(size_t bytes) {
  arena_->emplace_back(bytes);
  return arena_->back().data();
}

Result<RoleTensor> RoleSource::get(TensorRole role, int layer, const std::vector<int64_t>& shape) {
  if (store_.format() == "safetensors" && hf_expert_parts(role)) return experts(role, layer, shape);
  return plain(tensor_name(role, layer, store_.format()), shape, nullptr);
}

Result<RoleTensor> RoleSource::plain(const std::string& name, const std::vector<int64_t>& shape,
                                     std::vector<uint8_t>* scratch) {
  const std::string& path = store_.path();
  const TensorInfo* t = store_.find(name);
  if (!t) return DataLoss(path + ": tensor " + name + " is missing");
  if (t->shape != shape) {
    return DataLoss(path + ": " + name + " has shape " + shape_str(t->shape) + ", expected " + shape_str(shape));
  }
  if (!dtype_info(t->dtype)) return Unsupported(path + ": " + name + " has an unknown dtype");
  const TensorInfo* scale = store_.find(name + kScaleSuffix);
  if (!scale) return RoleTensor{name, t->dtype, t->data, t->shape};
  if (t->dtype != DType::kF8E4M3) {
    return Unsupported(path + ": " + name + " has block scales (" + scale->name + ") but dtype " +
                       dtype_name(t->dtype) + "; only f8_e4m3 weights are block-scaled");
  }
  const size_t bytes = static_cast<size_t>(t->numel()) * sizeof(float);
  uint8_t* out = scratch ? (scratch->resize(bytes), scratch->data()) : new_buffer(bytes);
  Status st = dequantize_fp8_blocks(*t, *scale, block_rows_, block_cols_, reinterpret_cast<float*>(out));
  if (!st.ok()) return DataLoss(path + ": " + st.message());
  return RoleTensor{name, DType::kF32, out, t->shape};
}

// shape [E, rows, cols]. The fused tensor holds `parts` row blocks of `rows` per expert; per-expert tensors [rows, cols].
Result<RoleTensor> RoleSource::experts(TensorRole role, int layer, const std::vector<int64_t>& shape) {
  const HfExpertParts& p = *hf_expert_parts(role);
  const std::string fused = tensor_name(role, layer, store_.format());
  const int64_t E = shape[0], rows = shape[1], cols = shape[2];
  std::vector<uint8_t> scratch;
  if (store_.find(fused)) {
    ASSIGN_OR_RETURN(RoleTensor f, plain(fused, {E, rows * p.parts, cols}, p.parts > 1 ? &scratch : nullptr));
    if (p.parts == 1) return f;  // already [E, rows, cols]
    const size_t block = static_cast<size_t>(rows) * dtype_row_bytes(f.dtype, cols);
    uint8_t* out = new_buffer(block * static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      std::memcpy(out + static_cast<size_t>(e) * block, f.data + static_cast<size_t>(e * p.parts + p.part) * block,
                  block);
    }
    return RoleTensor{fused, f.dtype, out, shape};
  }
  if (!store_.find(hf_expert_name(role, layer, 0))) {
    return DataLoss(store_.path() + ": tensor " + role_tensor_names(role, layer, store_.format()) + " is missing");
  }
  // Per expert: the stack keeps the experts' dtype when they agree (FP8 ones count as the f32 they become).
  auto effective = [&](const TensorInfo* t) {
    return store_.find(t->name + kScaleSuffix) ? DType::kF32 : t->dtype;
  };
  DType dtype = effective(store_.find(hf_expert_name(role, layer, 0)));
  for (int64_t e = 1; e < E; ++e) {
    const TensorInfo* t = store_.find(hf_expert_name(role, layer, e));
    if (t && effective(t) != dtype) dtype = DType::kF32;
  }
  const size_t row_bytes = dtype_row_bytes(dtype, cols);
  if (row_bytes == 0) {
    return Unsupported(store_.path() + ": " + hf_expert_name(role, layer, 0) + ": " + std::to_string(cols) +
                       " columns is not a whole number of " + dtype_name(dtype) + " blocks");
  }
  const size_t block = static_cast<size_t>(rows) * row_bytes;
  uint8_t* out = new_buffer(block * static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    ASSIGN_OR_RETURN(RoleTensor t, plain(hf_expert_name(role, layer, e), {rows, cols}, &scratch));
    uint8_t* dst = out + static_cast<size_t>(e) * block;
    if (t.dtype == dtype) {
      std::memcpy(dst, t.data, block);
      continue;
    }
    for (int64_t r = 0; r < rows; ++r) {  // mixed dtypes: every expert to f32
      Status st = dequantize_row(t.dtype, t.data + r * dtype_row_bytes(t.dtype, cols),
                                 reinterpret_cast<float*>(dst) + r * cols, cols);
      if (!st.ok()) return Unsupported(store_.path() + ": " + t.name + ": " + st.message());
    }
  }
  return RoleTensor{hf_expert_name(role, layer, 0), dtype, out, shape};
}

std::string role_tensor_names(TensorRole role, int layer, const std::string& format) {
  const std::string name = tensor_name(role, layer, format);
  if (format != "safetensors" || !hf_expert_parts(role)) return name;
  return name + " (or model.layers." + std::to_string(layer) + ".mlp.experts.E." + hf_expert_parts(role)->per_expert +
         " per expert)";
}

Status dequantize_fp8_blocks(const TensorInfo& w, const TensorInfo& scale_inv, int64_t block_rows,
                             int64_t block_cols, float* out) {
  if (w.dtype != DType::kF8E4M3) return InvalidArgument(w.name + " is " + dtype_name(w.dtype) + ", not f8_e4m3");
  if ((w.shape.size() != 2 && w.shape.size() != 3) || block_rows <= 0 || block_cols <= 0) {
    return InvalidArgument(w.name + ": block-scaled FP8 needs a matrix or a stack of matrices, got shape " +
                           shape_str(w.shape));
  }
  const int64_t n = w.shape.size() == 3 ? w.shape[0] : 1;
  const int64_t rows = w.shape[w.shape.size() - 2], cols = w.shape.back();
  const int64_t sr = ceil_div(rows, block_rows), sc = ceil_div(cols, block_cols);
  std::vector<int64_t> want = {sr, sc};
  if (w.shape.size() == 3) want.insert(want.begin(), n);
  if (scale_inv.shape != want) {
    return InvalidArgument(scale_inv.name + " has shape " + shape_str(scale_inv.shape) + ", expected " +
                           shape_str(want) + " for " + w.name + " " + shape_str(w.shape) + " in " +
                           std::to_string(block_rows) + " x " + std::to_string(block_cols) + " blocks");
  }
  std::vector<float> scales(static_cast<size_t>(shape_numel(want)));
  Status st = dequantize_row(scale_inv.dtype, scale_inv.data, scales.data(), shape_numel(want));
  if (!st.ok()) return InvalidArgument(scale_inv.name + ": " + st.message());
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t i = 0; i < rows; ++i) {
      float* y = out + (b * rows + i) * cols;
      RETURN_IF_ERROR(dequantize_row(DType::kF8E4M3, w.data + (b * rows + i) * cols, y, cols));
      const float* s = scales.data() + (b * sr + i / block_rows) * sc;
      for (int64_t j = 0; j < cols; ++j) y[j] *= s[j / block_cols];
    }
  }
  return OkStatus();
}

}  // namespace citadel
