// RoleSource: finds one role's tensor of one layer in a TensorStore, in the role's layout (roles.h role_shape), for
// the Binder of weights.cc. Usually that is a view of the one tensor tensor_name() names. HF checkpoints that store a
// role otherwise are assembled at load into an arena of owned bytes:
//  - routed-expert stacks (roles.h HfExpertParts): each expert's row block of a fused tensor (gate_up_proj), or one
//    tensor per expert stacked; kept in the stored dtype when every part has the same one, else f32;
//  - block-scaled FP8 weights: an F8_E4M3 tensor X with a companion X_scale_inv ("...weight_scale_inv") of shape
//    [ceil(rows / br), ceil(cols / bc)] (with the same leading expert axis when X is a stack [n, rows, cols]):
//    w[i][j] = fp8[i][j] * scale_inv[i / br][j / bc]. The block br x bc is config.json's
//    quantization_config.weight_block_size (metadata hf.quantization.weight_block_rows / _cols), else 128 x 128.
//    Dequantized to f32 (4 bytes a weight: a tiny or mid-sized checkpoint's load path, not a 671B one's).
//
// Thread-safety: one loader at a time; the arena's buffers are never moved or freed while the weights live (a
// std::vector<std::vector<uint8_t>> keeps each inner buffer's address when it grows).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/tensor_store.h"
#include "model/roles.h"

namespace citadel {

// A role's tensor as stored (or assembled): numel(shape) elements of dtype, row-major.
struct RoleTensor {
  std::string name;               // the file's tensor (the first expert's for a stacked one), for messages
  DType dtype = DType::kF32;
  const uint8_t* data = nullptr;  // into the mapped file (may be unaligned) or the arena (16-byte aligned)
  std::vector<int64_t> shape;
};

class RoleSource {
 public:
  // arena: where assembled tensors live; must outlive every RoleTensor returned.
  RoleSource(const TensorStore& store, std::vector<std::vector<uint8_t>>* arena);

  // Whether the store holds the role of this layer, in any layout.
  bool has(TensorRole role, int layer) const;

  // The role's tensor with exactly `shape`. Errors are one line naming the file and the tensor: missing (kDataLoss),
  // a shape other than expected (both shapes), an unknown dtype (kUnsupported), FP8 scales of the wrong shape.
  Result<RoleTensor> get(TensorRole role, int layer, const std::vector<int64_t>& shape);

 private:
  // One named tensor of `shape`; FP8-dequantized (into *scratch, else a new arena buffer) when it has block scales.
  Result<RoleTensor> plain(const std::string& name, const std::vector<int64_t>& shape, std::vector<uint8_t>* scratch);
  Result<RoleTensor> experts(TensorRole role, int layer, const std::vector<int64_t>& shape);
  uint8_t* new_buffer(size_t bytes);

  const TensorStore& store_;
  std::vector<std::vector<uint8_t>>* arena_;
  int64_t block_rows_ = 128, block_cols_ = 128;
};

// The name(s) a role of a layer is looked up by, for "is missing" messages: "model.layers.3.mlp.experts.gate_up_proj
// (or model.layers.3.mlp.experts.E.gate_proj.weight per expert)" for HF expert stacks, else tensor_name().
std::string role_tensor_names(TensorRole role, int layer, const std::string& format);

// out[numel(w)] (f32) = w (F8_E4M3, [rows, cols] or [n, rows, cols]) times its block's scale_inv (any float dtype,
// [ceil(rows / block_rows), ceil(cols / block_cols)], with n leading for a stack). Errors name both tensors.
Status dequantize_fp8_blocks(const TensorInfo& w, const TensorInfo& scale_inv, int64_t block_rows,
                             int64_t block_cols, float* out);

}  // namespace citadel
