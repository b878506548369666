// cuBLAS bf16 GEMM for prefill and large decode batches: y[M][N] = x[M][K] @ W[N][K]^T, fp32 accumulation.
#include <cublas_v2.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

#define CUBLAS_CHECK(expr)                                                                          \
  do {                                                                                              \
    cublasStatus_t _s = (expr);                                                                     \
    if (_s != CUBLAS_STATUS_SUCCESS)                                                                \
      ::citadel::detail::check_failed(__FILE__, __LINE__, #expr, cublasGetStatusString(_s));       \
  } while (0)

namespace citadel::cuda {

void* create_cublas_handle(cudaStream_t s, void* workspace, size_t workspace_bytes) {
  cublasHandle_t h = nullptr;
  CUBLAS_CHECK(cublasCreate(&h));
  CUBLAS_CHECK(cublasSetStream(h, s));
  if (workspace) CUBLAS_CHECK(cublasSetWorkspace(h, workspace, workspace_bytes));
  CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  return h;
}

void destroy_cublas_handle(void* handle) {
  if (handle) cublasDestroy(static_cast<cublasHandle_t>(handle));
}

void gemm_bf16(void* handle, const bf16_t* x, const bf16_t* W, void* y, bool y_f32, int M, int N, int K) {
  if (M <= 0) return;
  const float alpha = 1.f, beta = 0.f;
  // Column-major view: y^T [N x M] = W [N x K] (row-major [N][K] read as col-major K x N, transposed) * x^T [K x M].
  CUBLAS_CHECK(cublasGemmEx(static_cast<cublasHandle_t>(handle), CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, W,
                            CUDA_R_16BF, K, x, CUDA_R_16BF, K, &beta, y, y_f32 ? CUDA_R_32F : CUDA_R_16BF, N,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace citadel::cuda
