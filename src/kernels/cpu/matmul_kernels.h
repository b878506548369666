// Internal to the CPU matmul: row-dot kernels per weight dtype and SIMD level.
// A kernel computes one weight row (GGUF blocks) times one prepared activation row (see ActRow), n elements.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/quant/types.h"

namespace citadel::cpu::detail {

enum class ActFormat { kF32, kQ8_0, kQ8_K };

// One token's activations in the format its weight dtype wants.
struct ActRow {
  const float* f32 = nullptr;       // [n]              for f32/f16/bf16 weights
  const BlockQ8_0* q8_0 = nullptr;  // [n / 32]         for 32-block weights
  const float* q8_0_sums = nullptr; // [n / 32] d * sum(qs) per block, for the min term of q4_1 / q5_1
  const BlockQ8_K* q8_K = nullptr;  // [n / 256]        for K-quant weights
};

using RowDotFn = float (*)(const void* w_row, const ActRow& x, int64_t n);
// kRows4 consecutive weight rows (w_rows: the first, row_bytes apart) times one activation row: y[0..3]. Each y[r]
// equals what RowDotFn gives for that row up to float summation order.
using Rows4DotFn = void (*)(const void* w_rows, size_t row_bytes, const ActRow& x, int64_t n, float* y);
constexpr int kRows4 = 4;

struct DotKernel {
  ActFormat act = ActFormat::kF32;
  RowDotFn dot = nullptr;
  Rows4DotFn dot4 = nullptr;  // optional: shares the activation loads of a block across 4 rows
};

// Portable scalar kernels (integer dot products, same math as the SIMD ones); {kF32, nullptr} when unsupported.
DotKernel generic_dot_kernel(DType t);
// AVX2+FMA+F16C kernels (compiled with target attributes); dot == nullptr when the dtype has none.
DotKernel avx2_dot_kernel(DType t);
// AVX2 activation quantizer: y bit-exact with quantize_row_q8_0, sums[b] = f16_to_f32(y[b].d) * sum(y[b].qs).
// Only call when cpu_features().has_avx2_fma(); n % 32 == 0.
void quantize_q8_0_avx2(const float* x, BlockQ8_0* y, float* sums, int64_t n);

}  // namespace citadel::cpu::detail
