#include "kernels/quant/types.h"

namespace citadel {

const DTypeInfo* dtype_info(uint32_t id) {
  static const DTypeInfo kF32{"f32", 1, 4}, kF16{"f16", 1, 2}, kBF16{"bf16", 1, 2}, kF64{"f64", 1, 8},
      kI8{"i8", 1, 1}, kF8E4M3{"f8_e4m3", 1, 1}, kI16{"i16", 1, 2}, kI32{"i32", 1, 4}, kI64{"i64", 1, 8},
      kQ4_0{"q4_0", kQK, sizeof(BlockQ4_0)}, kQ4_1{"q4_1", kQK, sizeof(BlockQ4_1)},
      kQ5_0{"q5_0", kQK, sizeof(BlockQ5_0)}, kQ5_1{"q5_1", kQK, sizeof(BlockQ5_1)},
      kQ8_0{"q8_0", kQK, sizeof(BlockQ8_0)}, kQ8_1{"q8_1", kQK, sizeof(BlockQ8_1)},
      kQ2_K{"q2_K", kQK_K, sizeof(BlockQ2_K)}, kQ3_K{"q3_K", kQK_K, sizeof(BlockQ3_K)},
      kQ4_K{"q4_K", kQK_K, sizeof(BlockQ4_K)}, kQ5_K{"q5_K", kQK_K, sizeof(BlockQ5_K)},
      kQ6_K{"q6_K", kQK_K, sizeof(BlockQ6_K)}, kQ8_K{"q8_K", kQK_K, sizeof(BlockQ8_K)};
  switch (static_cast<DType>(id)) {
    case DType::kF32: return &kF32;
    case DType::kF16: return &kF16;
    case DType::kBF16: return &kBF16;
    case DType::kF64: return &kF64;
    case DType::kI8: return &kI8;
    case DType::kF8E4M3: return &kF8E4M3;
    case DType::kI16: return &kI16;
    case DType::kI32: return &kI32;
    case DType::kI64: return &kI64;
    case DType::kQ4_0: return &kQ4_0;
    case DType::kQ4_1: return &kQ4_1;
    case DType::kQ5_0: return &kQ5_0;
    case DType::kQ5_1: return &kQ5_1;
    case DType::kQ8_0: return &kQ8_0;
    case DType::kQ8_1: return &kQ8_1;
    case DType::kQ2_K: return &kQ2_K;
    case DType::kQ3_K: return &kQ3_K;
    case DType::kQ4_K: return &kQ4_K;
    case DType::kQ5_K: return &kQ5_K;
    case DType::kQ6_K: return &kQ6_K;
    case DType::kQ8_K: return &kQ8_K;
  }
  return nullptr;
}

const char* dtype_name(DType t) {
  const DTypeInfo* info = dtype_info(t);
  return info ? info->name : "unknown";
}

size_t dtype_row_bytes(DType t, int64_t n) {
  const DTypeInfo* info = dtype_info(t);
  if (!info || n < 0 || n % info->block != 0) return 0;
  return static_cast<size_t>(n / info->block) * info->block_bytes;
}

}  // namespace citadel
