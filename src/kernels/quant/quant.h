// Reference (scalar, portable) conversion between f32 and the GGUF block formats of types.h.
//
// Contracts:
// - A "row" of n elements of a block type is n / block consecutive blocks in GGUF layout (types.h); n must be a
//   multiple of the type's block size (32 or 256); plain types (f32, f16, bf16, f8_e4m3) take any n >= 0.
// - dequantize_row() is bit-exact with ggml's dequantize_row_* and gguf-py's numpy dequantize (the golden test
//   checks this); it is the reference every fast kernel is compared with.
// - quantize_row() for f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 is bit-exact with ggml's quantize_row_*_ref and
//   gguf-py (round to nearest with the block's absmax or min/max); q4_K, q5_K, q6_K use our own scale search with
//   least-squares refinement (not bit-identical to ggml, comparable error; the test bounds the NMSE).
// - quantize_row_q8_0 / quantize_row_q8_K: llama.cpp's activation formats (the CPU matmul quantizes activations to
//   16-bit codes instead: kernels/cpu/matmul_kernels.h ActRow).
// Thread-safety: pure functions of their arguments; safe to call concurrently on disjoint outputs.
#pragma once

#include <cstdint>
#include <cstring>

#include "base/status.h"
#include "kernels/quant/types.h"

namespace citadel {

// Signature of a per-type row converter; n is a multiple of the type's block size.
using DequantizeFn = void (*)(const void* src, float* dst, int64_t n);
using QuantizeFn = void (*)(const float* src, void* dst, int64_t n);

// nullptr when the type has no reference (de)quantizer.
DequantizeFn dequantize_fn(DType t);
QuantizeFn quantize_fn(DType t);

inline bool dequantize_supported(DType t) { return dequantize_fn(t) != nullptr; }
inline bool quantize_supported(DType t) { return quantize_fn(t) != nullptr; }

// src: n elements of type t (dtype_row_bytes(t, n) bytes) -> dst: float[n].
// Unsupported for types without a dequantizer; InvalidArgument when n < 0 or not a multiple of the block size.
Status dequantize_row(DType t, const void* src, float* dst, int64_t n);

// src: float[n] -> dst: dtype_row_bytes(t, n) bytes of type t. Same errors as dequantize_row.
Status quantize_row(DType t, const float* src, void* dst, int64_t n);

// Activation quantizers (n % 32 == 0, resp. n % 256 == 0; CHECKed: callers are kernels, not users).
// q8_0: d = absmax / 127, q = round(x / d). q8_K: same with a float d per 256 and bsums[j] = sum of q[16j..16j+15].
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);
void quantize_row_q8_K(const float* x, BlockQ8_K* y, int64_t n);

// The 6-bit (scale, min) pair j (0..7) of a q4_K / q5_K block's 12 packed scale bytes.
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// All 8 (scale, min) pairs of a q4_K / q5_K block at once: byte j of *sc and *m is get_scale_min_k4(j)'s.
inline void scales_mins_k4(const uint8_t* q, uint64_t* sc, uint64_t* m) {
  uint32_t u[3];
  std::memcpy(u, q, 12);
  const uint32_t lo6 = 0x3f3f3f3f, nib = 0x0f0f0f0f, top2 = 0x30303030;
  *sc = (u[0] & lo6) | static_cast<uint64_t>((u[2] & nib) | ((u[0] >> 2) & top2)) << 32;
  *m = (u[1] & lo6) | static_cast<uint64_t>(((u[2] >> 4) & nib) | ((u[1] >> 2) & top2)) << 32;
}

// The 16 signed 6-bit scales of a q3_K block (value - 32 applied).
void unpack_q3_K_scales(const uint8_t* packed /*[12]*/, int8_t* scales /*[16]*/);

}  // namespace citadel
