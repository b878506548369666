// cuBLAS bf16 GEMM for prefill and large decode batches: y[M][N] = x[M][K] @ W[N][K]^T, fp32 accumulation.
// gemm_bf16: plain cublasGemmEx (bench ceiling, tests). gemm_bf16_lt: cuBLASLt with the bias in the epilogue and the
// algorithm picked per shape by timing the heuristic candidates once.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <map>
#include <tuple>

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

// ---- cuBLASLt: bias epilogue and per-shape algorithm autotuning ----
namespace {

struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool tuned = false;  // false: heuristic #0 (chosen while a graph was being captured)
  float best_us = 0.f;
  int n_candidates = 0;
};

struct LtKey {
  int M, N, K;
  bool bias, y_f32;
  bool operator<(const LtKey& o) const {
    return std::tie(M, N, K, bias, y_f32) < std::tie(o.M, o.N, o.K, o.bias, o.y_f32);
  }
};

}  // namespace

struct GemmLt {
  cublasLtHandle_t lt = nullptr;
  cudaStream_t stream = nullptr;
  void* ws = nullptr;
  size_t ws_bytes = 0;
  bool autotune = true;
  std::map<LtKey, LtPlan> plans;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
};

void* create_gemm_lt(cudaStream_t s, void* workspace, size_t workspace_bytes, bool autotune) {
  auto* g = new GemmLt;
  CUBLAS_CHECK(cublasLtCreate(&g->lt));
  g->stream = s, g->ws = workspace, g->ws_bytes = workspace ? workspace_bytes : 0, g->autotune = autotune;
  CUDA_CHECK(cudaEventCreate(&g->e0));
  CUDA_CHECK(cudaEventCreate(&g->e1));
  return g;
}

void destroy_gemm_lt(void* ctx) {
  auto* g = static_cast<GemmLt*>(ctx);
  if (!g) return;
  for (auto& [k, p] : g->plans) {
    cublasLtMatrixLayoutDestroy(p.a), cublasLtMatrixLayoutDestroy(p.b), cublasLtMatrixLayoutDestroy(p.d);
    cublasLtMatmulDescDestroy(p.desc);
  }
  cudaEventDestroy(g->e0), cudaEventDestroy(g->e1);
  cublasLtDestroy(g->lt);
  delete g;
}

namespace {

void lt_run(GemmLt* g, const LtPlan& p, const cublasLtMatmulAlgo_t& algo, const bf16_t* x, const bf16_t* W, void* y) {
  const float alpha = 1.f, beta = 0.f;
  CUBLAS_CHECK(cublasLtMatmul(g->lt, p.desc, &alpha, W, p.a, x, p.b, &beta, y, p.d, y, p.d, &algo, g->ws, g->ws_bytes,
                              g->stream));
}

// Plan for (M, N, K, bias, y_f32): heuristic candidates, each timed on the caller's buffers (the real call follows
// and overwrites y), the fastest kept. While the stream is being captured nothing can be timed: heuristic #0 is
// used and the plan is tuned at the next uncaptured call.
LtPlan& lt_plan(GemmLt* g, const bf16_t* x, const bf16_t* W, const bf16_t* bias, void* y, bool y_f32, int M, int N,
                int K) {
  const LtKey key{M, N, K, bias != nullptr, y_f32};
  auto it = g->plans.find(key);
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(g->stream, &cap));
  const bool capturing = cap != cudaStreamCaptureStatusNone;
  if (it != g->plans.end() && (it->second.tuned || capturing || !g->autotune)) return it->second;
  if (it == g->plans.end()) {
    LtPlan p;
    const cudaDataType_t yt = y_f32 ? CUDA_R_32F : CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (bias) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      const cudaDataType_t bt = CUDA_R_16BF;
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    }
    // Column-major view as in gemm_bf16: y^T [N x M] = W^T-op [N x K] * x^T [K x M].
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, K, N, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, K, M, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, yt, N, M, N));
    it = g->plans.emplace(key, p).first;
  }
  LtPlan& p = it->second;
  if (bias) CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g->ws_bytes,
                                                    sizeof(g->ws_bytes)));
  constexpr int kMaxCand = 12;
  cublasLtMatmulHeuristicResult_t res[kMaxCand];
  int n = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(g->lt, p.desc, p.a, p.b, p.d, p.d, pref, kMaxCand, res, &n));
  cublasLtMatmulPreferenceDestroy(pref);
  CHECK_MSG(n > 0, "cublasLt: no algorithm for this GEMM");
  p.algo = res[0].algo;
  p.n_candidates = n;
  if (capturing || !g->autotune) return p;
  float best = 1e30f;
  for (int i = 0; i < n; ++i) {
    if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
    lt_run(g, p, res[i].algo, x, W, y);  // warm-up
    constexpr int kReps = 5;
    CUDA_CHECK(cudaEventRecord(g->e0, g->stream));
    for (int r = 0; r < kReps; ++r) lt_run(g, p, res[i].algo, x, W, y);
    CUDA_CHECK(cudaEventRecord(g->e1, g->stream));
    CUDA_CHECK(cudaEventSynchronize(g->e1));
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, g->e0, g->e1));
    if (ms < best) best = ms, p.algo = res[i].algo;
  }
  p.best_us = best * 1e3f / 5;
  p.tuned = true;
  return p;
}

}  // namespace

void gemm_bf16_lt(void* ctx, const bf16_t* x, const bf16_t* W, const bf16_t* bias, void* y, bool y_f32, int M, int N,
                  int K) {
  if (M <= 0) return;
  auto* g = static_cast<GemmLt*>(ctx);
  LtPlan& p = lt_plan(g, x, W, bias, y, y_f32, M, N, K);
  if (bias) CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  lt_run(g, p, p.algo, x, W, y);
}

}  // namespace citadel::cuda
