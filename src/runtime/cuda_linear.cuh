// The decoder's device memory and its weight matrices: DeviceArena owns every cudaMalloc of one decoder; LinearW is
// one matrix [N][K] in the decoder's format with y = x W^T (+ bias) for any M (GEMV kernels for small M, cuBLASLt
// above). CUDA-side header (kernels, runtime/*.cu, GPU tests).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "kernels/cuda/cuda_ops.h"
#include "runtime/cuda_decoder.h"

namespace citadel::runtime {

using cuda::bf16_t;

// Every buffer handed out is freed with the arena (or earlier with release()).
struct DeviceArena {
  std::vector<void*> live;

  DeviceArena() = default;
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  ~DeviceArena();

  // ResourceExhausted naming `what` when the device is out of memory.
  Status alloc(void** p, size_t bytes, const char* what);
  template <typename T>
  Status alloc_n(T** p, int64_t n, const char* what) {
    return alloc(reinterpret_cast<void**>(p), sizeof(T) * static_cast<size_t>(n), what);
  }
  void release(void* p);
};

// What a matmul runs on: the stream and the cuBLAS / cuBLASLt contexts bound to it.
struct GemmContext {
  cudaStream_t stream = nullptr;
  void* cublas = nullptr;
  void* gemm_lt = nullptr;
  bool use_cublaslt = true;  // M > 8 bf16 GEMMs through cuBLASLt (bias epilogue); false: cublasGemmEx + add_bias
  // fp8 GEMMs (M > 8): the activations quantised per token, xq [M][K] e4m3 and xscale [M] fp32, sized for the
  // largest M x K of a step. Null: fp8 matrices run the GEMV at every M.
  uint8_t* fp8_x = nullptr;
  float* fp8_scale = nullptr;
  // fp32-activation GEMMs (M > 8, bf16 matrices): the bf16x3 planes. Empty: those run the GEMV at every M.
  cuda::Bf16x3Scratch xf32;
};

// A weight matrix [N][K]. bf16 holds the staging copy until quantize() repacks it. In the decoder's exact path the
// buffers of fp32 tensors hold fp32 values instead (kF32 matrices; biases with f32 activations).
struct LinearW {
  int N = 0, K = 0;
  CudaWeightFormat fmt = CudaWeightFormat::kBf16;  // this matrix's format (int4 falls back to int8 when K % 128,
                                                  // int8 / fp8 to bf16 when K % 16)
  bf16_t* bf16 = nullptr;     // [N][K] (kF32: fp32)
  uint8_t* q = nullptr;       // int8 or fp8 (e4m3) [N][K], int4 [N][K/2]
  float* scales = nullptr;    // int8 and fp8 [N], int4 [N][K/128]
  bf16_t* bias = nullptr;     // [N] or null
  bool keep_bf16 = false;     // quantize() leaves it bf16 whatever the format (MoE routers)

  // Repacks the bf16 staging copy into `to` (kInt8 / kInt4 / kFp8; kBf16 and kF32 keep it) and frees the copy.
  Status quantize(CudaWeightFormat to, DeviceArena* arena, cudaStream_t s);
  // y [M][N] = x [M][K] W^T (+ bias); y bf16 or fp32 (y_f32). Not for kF32 (the exact path's own kernels).
  // kFp8 with M > 8: x quantised per token into g.fp8_x / g.fp8_scale, then the cuBLASLt fp8 GEMM.
  void forward(const GemmContext& g, const bf16_t* x, int M, void* y, bool y_f32) const;
  // For W = [gate | up] ([2F][K]): act [M][F] = silu(x Wg^T) * (x Wu^T) in one GEMV launch where the GEMV path serves
  // this M; false (nothing run): the caller runs forward() and silu_mul.
  bool forward_silu(const GemmContext& g, const bf16_t* x, int M, bf16_t* act) const;
  // fp32 activations with kBf16 matrices (the decoder's fp32-activation path): y [M][N] fp32 = x [M][K] fp32 W^T
  // (+ bias, fp32 in that path), or with silu act [M][F] = silu(x Wg^T) * (x Wu^T). GEMV for M <= 8 (or without
  // cuBLASLt / scratch), else gemm_xf32_lt.
  void forward_xf32(const GemmContext& g, const float* x, int M, float* y, bool silu) const;
  // Bytes a pass over the matrix streams (weights, scales, bias of bias_esz bytes per element).
  int64_t bytes(int64_t bias_esz) const;
};

}  // namespace citadel::runtime
