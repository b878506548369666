// DeviceArena and LinearW (see cuda_linear.cuh).
#include "runtime/cuda_linear.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "kernels/cuda/common.cuh"
#include "runtime/cuda_status.cuh"

namespace citadel::runtime {

namespace ck = citadel::cuda;

DeviceArena::~DeviceArena() {
  for (void* p : live) cudaFree(p);
}

Status DeviceArena::alloc(void** p, size_t bytes, const char* what) {
  cudaError_t e = cudaMalloc(p, std::max<size_t>(bytes, 16));
  if (e != cudaSuccess) {
    cudaGetLastError();
    return ResourceExhausted(std::string("cuda decoder: cannot allocate ") + std::to_string(bytes) + " bytes for " +
                             what + ": " + cudaGetErrorString(e));
  }
  live.push_back(*p);
  return OkStatus();
}

void DeviceArena::release(void* p) {
  auto it = std::find(live.begin(), live.end(), p);
  if (it != live.end()) live.erase(it);
  cudaFree(p);
}

Status LinearW::quantize(CudaWeightFormat to, DeviceArena* arena, cudaStream_t s) {
  fmt = keep_bf16 && to != CudaWeightFormat::kF32 ? CudaWeightFormat::kBf16 : to;
  // A matrix the format cannot hold takes the next wider one: the int4 layout needs whole groups of 128 along K (so
  // SmolLM2's dim 576 stays int8), the int8 and fp8 kernels K % 16 == 0 (else bf16, e.g. a tiny q_lora of 24).
  if (fmt == CudaWeightFormat::kInt4 && K % 128 != 0) fmt = CudaWeightFormat::kInt8;
  if ((fmt == CudaWeightFormat::kInt8 || fmt == CudaWeightFormat::kFp8) && K % 16 != 0) fmt = CudaWeightFormat::kBf16;
  if (fmt == CudaWeightFormat::kBf16 || fmt == CudaWeightFormat::kF32 || !bf16) return OkStatus();
  if (fmt == CudaWeightFormat::kInt8 || fmt == CudaWeightFormat::kFp8) {
    const bool fp8 = fmt == CudaWeightFormat::kFp8;
    RETURN_IF_ERROR(arena->alloc_n(&q, int64_t{N} * K, fp8 ? "fp8 weights" : "int8 weights"));
    RETURN_IF_ERROR(arena->alloc_n(&scales, N, fp8 ? "fp8 scales" : "int8 scales"));
    (fp8 ? ck::quantize_fp8 : ck::quantize_int8)(bf16, q, scales, N, K, s);
  } else {
    RETURN_IF_ERROR(arena->alloc_n(&q, ck::int4_weight_bytes(N, K), "int4 weights"));
    RETURN_IF_ERROR(arena->alloc_n(&scales, int64_t{N} * (K / 128), "int4 scales"));
    ck::quantize_int4(bf16, q, scales, N, K, s);
  }
  CUDA_TRY(cudaStreamSynchronize(s));
  arena->release(bf16);
  bf16 = nullptr;
  return OkStatus();
}

void LinearW::forward(const GemmContext& g, const bf16_t* x, int M, void* y, bool y_f32) const {
  switch (fmt) {
    case CudaWeightFormat::kBf16:
      if (M <= 8) {
        ck::gemv_bf16(x, bf16, bias, y, y_f32, M, N, K, g.stream);
      } else if (g.use_cublaslt) {
        ck::gemm_bf16_lt(g.gemm_lt, x, bf16, bias, y, y_f32, M, N, K);
      } else {
        ck::gemm_bf16(g.cublas, x, bf16, y, y_f32, M, N, K);
        if (bias) ck::add_bias(static_cast<bf16_t*>(y), bias, M, N, g.stream);
      }
      return;
    case CudaWeightFormat::kInt8:
      ck::gemv_int8(x, q, scales, bias, y, y_f32, M, N, K, g.stream);
      return;
    case CudaWeightFormat::kInt4:
      ck::gemv_int4(x, q, scales, bias, y, y_f32, M, N, K, g.stream);
      return;
    case CudaWeightFormat::kFp8:
      if (M > 8 && g.fp8_x) {
        ck::quantize_rows_fp8(x, g.fp8_x, g.fp8_scale, M, K, g.stream);
        if (ck::gemm_fp8_lt(g.gemm_lt, g.fp8_x, g.fp8_scale, q, scales, bias, y, y_f32, M, N, K)) return;
      }
      ck::gemv_fp8(x, q, scales, bias, y, y_f32, M, N, K, g.stream);  // small M, or no cuBLASLt fp8 algorithm
      return;
    case CudaWeightFormat::kF32:
      break;
  }
  CHECK(false && "kF32 weights run through the decoder's exact path");
}

bool LinearW::forward_silu(const GemmContext& g, const bf16_t* x, int M, bf16_t* act) const {
  const int F = N / 2;
  switch (fmt) {
    case CudaWeightFormat::kBf16:
      if (M > 8) return false;
      ck::gemv_silu_bf16(x, bf16, act, M, F, K, g.stream);
      return true;
    case CudaWeightFormat::kInt8:
      ck::gemv_silu_int8(x, q, scales, act, M, F, K, g.stream);
      return true;
    case CudaWeightFormat::kInt4:
      ck::gemv_silu_int4(x, q, scales, act, M, F, K, g.stream);
      return true;
    case CudaWeightFormat::kFp8:
      if (M > 8 && g.fp8_x) return false;  // the fp8 GEMM, then silu_mul
      ck::gemv_silu_fp8(x, q, scales, act, M, F, K, g.stream);
      return true;
    case CudaWeightFormat::kF32:
      break;
  }
  return false;
}

void LinearW::forward_xf32(const GemmContext& g, const float* x, int M, float* y, bool silu) const {
  CHECK(fmt == CudaWeightFormat::kBf16);
  const float* b = reinterpret_cast<const float*>(bias);  // fp32 in the fp32-activation path
  if (M > 8 && g.use_cublaslt && g.gemm_lt && g.xf32.x3) {
    ck::gemm_xf32_lt(g.gemm_lt, x, bf16, silu ? nullptr : b, y, silu, M, N, K, g.xf32);
  } else if (silu) {
    ck::gemv_silu_bf16_xf32(x, bf16, y, M, N / 2, K, g.stream);
  } else {
    ck::gemv_bf16_xf32(x, bf16, b, y, M, N, K, g.stream);
  }
}

int64_t LinearW::bytes(int64_t bias_esz) const {
  const int64_t b = bias ? int64_t{N} * bias_esz : 0, nk = int64_t{N} * K;
  switch (fmt) {
    case CudaWeightFormat::kF32: return b + nk * 4;
    case CudaWeightFormat::kBf16: return b + nk * 2;
    case CudaWeightFormat::kInt8:
    case CudaWeightFormat::kFp8: return b + nk + int64_t{N} * 4;
    case CudaWeightFormat::kInt4: return b + nk / 2 + int64_t{N} * (K / 128) * 4;
  }
  return 0;
}

}  // namespace citadel::runtime
