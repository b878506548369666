// Internal to the CPU matmul: row-dot kernels per weight dtype and SIMD level.
// A kernel computes one weight row (GGUF blocks) times one prepared activation row (see ActRow), n elements.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/quant/types.h"

namespace citadel::cpu::detail {

enum class ActFormat { kF32, kQ16, kQ8_K };

// One token's activations in the format its weight dtype wants.
// kQ16 (32-block weights): x[i] ~= d[i / 32] * q[i], 16-bit codes with an f32 scale per 32 values. 8-bit codes (q8_0,
// as llama.cpp) were tried first: their rounding through SmolLM2-135M's 30 layers moved the logits by up to 0.75
// (NMSE 1e-2 against f32) and flipped near-tie greedy choices; 16 bits cost the same integer work here (two madd
// of int16 pairs instead of maddubs + madd) and bring the error to ~1e-7.
struct ActRow {
  const float* f32 = nullptr;       // [n]              for f32/f16/bf16 weights
  const int16_t* q16 = nullptr;     // [n]              for 32-block weights
  const float* q16_d = nullptr;     // [n / 32] scale per block
  const float* q16_sums = nullptr;  // [n / 32] d * sum(q) per block, for the min / offset terms
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
// The kQ16 activation quantizer (reference): per 32 values d = amax / 32767, q = round-to-nearest-even(x / d) (as
// x * (1 / d)), sums[b] = d * sum(q[b]). n % 32 == 0. q [n], d and sums [n / 32].
void quantize_row_q16(const float* x, int16_t* q, float* d, float* sums, int64_t n);
// The same, bit-exact, with AVX2. Only call when cpu_features().has_avx2_fma().
void quantize_q16_avx2(const float* x, int16_t* q, float* d, float* sums, int64_t n);

}  // namespace citadel::cpu::detail
