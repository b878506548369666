// cuBLAS GEMMs for prefill and large decode batches: y[M][N] = x[M][K] @ W[N][K]^T, fp32 accumulation.
// gemm_bf16: plain cublasGemmEx (bench ceiling, tests). gemm_bf16_lt: cuBLASLt with the bias in the epilogue and the
// algorithm picked per shape by timing the heuristic candidates once. gemm_fp8_lt: the same on e4m3 operands with
// per-channel weight and per-token activation scales (cuBLASLt outer-vector scaling, sm_90). gemm_xf32_lt: fp32
// activations on bf16 tensor cores (three bf16 planes of x stacked along M in one GEMM). gemm_f32: cublasSgemm, fp32
// without TF32 (the encoder runner).
#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

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

void gemm_bf16(void* handle, const bf16_t* x, const bf16_t* W, void* y, bool y_f32, int M, int N, int K, int ldy) {
  if (M <= 0) return;
  const float alpha = 1.f, beta = 0.f;
  // Column-major view: y^T [N x M] = W [N x K] (row-major [N][K] read as col-major K x N, transposed) * x^T [K x M].
  CUBLAS_CHECK(cublasGemmEx(static_cast<cublasHandle_t>(handle), CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, W,
                            CUDA_R_16BF, K, x, CUDA_R_16BF, K, &beta, y, y_f32 ? CUDA_R_32F : CUDA_R_16BF,
                            ldy > 0 ? ldy : N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void gemm_f32(void* handle, const float* x, const float* W, float* y, int M, int N, int K) {
  if (M <= 0) return;
  const float alpha = 1.f, beta = 0.f;
  // Column-major view as gemm_bf16: y^T [N x M] = W^T' * x^T.
  CUBLAS_CHECK(cublasSgemm(static_cast<cublasHandle_t>(handle), CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, W, K, x, K,
                           &beta, y, N));
}

void gemm_bf16_batched(void* handle, const bf16_t* x, int64_t ldx, int64_t stride_x, const bf16_t* W,
                       int64_t stride_w, bf16_t* y, int64_t ldy, int64_t stride_y, int M, int N, int K, int batch) {
  if (M <= 0 || batch <= 0) return;
  const float alpha = 1.f, beta = 0.f;
  // Per batch b, column-major: y_b^T [N x M] (ld ldy) = W_b (row-major [N][K], col-major K x N, transposed) x_b^T.
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(static_cast<cublasHandle_t>(handle), CUBLAS_OP_T, CUBLAS_OP_N, N, M, K,
                                          &alpha, W, CUDA_R_16BF, K, stride_w, x, CUDA_R_16BF, ldx, stride_x, &beta,
                                          y, CUDA_R_16BF, ldy, stride_y, batch, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT));
}

// ---- cuBLASLt: bias epilogue and per-shape algorithm autotuning; bf16, and fp8 (e4m3) with outer-vector scales ----
namespace {

struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool tuned = false;  // false: heuristic #0 (chosen while a graph was being captured)
  bool bias_epilogue = false;  // the bias goes through cuBLASLt (else, with a bias, through add_bias after it)
  bool usable = true;  // false: cuBLASLt has no algorithm for this shape (bf16: cublasGemmEx; fp8: the caller's)
  float best_us = 0.f;
  int n_candidates = 0;
};

struct LtKey {
  int M, N, K;
  bool bias, y_f32, fp8;
  bool operator<(const LtKey& o) const {
    return std::tie(M, N, K, bias, y_f32, fp8) < std::tie(o.M, o.N, o.K, o.bias, o.y_f32, o.fp8);
  }
};

// The device pointers of one call. fp8: x and W are e4m3, xscale [M] and wscale [N] the outer-vector scales.
struct LtArgs {
  const void* x;
  const void* W;
  const bf16_t* bias;
  const float* xscale;
  const float* wscale;
  void* y;
};

}  // namespace

struct GemmLt {
  cublasLtHandle_t lt = nullptr;
  cudaStream_t stream = nullptr;
  void* ws = nullptr;
  size_t ws_bytes = 0;
  bool autotune = true;
  std::map<LtKey, LtPlan> plans;
  // Tuned algorithm (and whether it had the bias epilogue) per M bucket (M rounded up to a power of two; the other
  // key fields as they are): the first M of a bucket is timed, the rest reuse its choice.
  std::map<LtKey, std::pair<cublasLtMatmulAlgo_t, bool>> bucket_algo;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  void* cublas = nullptr;  // bf16 shapes cuBLASLt has no algorithm for (e.g. an odd N): cublasGemmEx + a bias kernel
};

void* create_gemm_lt(cudaStream_t s, void* workspace, size_t workspace_bytes, bool autotune) {
  auto* g = new GemmLt;
  CUBLAS_CHECK(cublasLtCreate(&g->lt));
  g->stream = s, g->ws = workspace, g->ws_bytes = workspace ? workspace_bytes : 0, g->autotune = autotune;
  CUDA_CHECK(cudaEventCreate(&g->e0));
  CUDA_CHECK(cudaEventCreate(&g->e1));
  g->cublas = create_cublas_handle(s, workspace, g->ws_bytes);
  return g;
}

namespace {

void destroy_plan(LtPlan* p) {
  cublasLtMatrixLayoutDestroy(p->a), cublasLtMatrixLayoutDestroy(p->b), cublasLtMatrixLayoutDestroy(p->d);
  cublasLtMatmulDescDestroy(p->desc);
  p->a = p->b = p->d = nullptr, p->desc = nullptr;
}

}  // namespace

void destroy_gemm_lt(void* ctx) {
  auto* g = static_cast<GemmLt*>(ctx);
  if (!g) return;
  for (auto& [k, p] : g->plans) destroy_plan(&p);
  cudaEventDestroy(g->e0), cudaEventDestroy(g->e1);
  cublasLtDestroy(g->lt);
  destroy_cublas_handle(g->cublas);
  delete g;
}

namespace {

template <typename T>
void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const T& v) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, a, &v, sizeof(v)));
}

// Descriptor and layouts of key (bias in the epilogue or not). Column-major view as in gemm_bf16:
// y^T [N x M] = W^T-op [N x K] * x^T [K x M] (TN, the layout fp8 requires). fp8: A scale = wscale [N] (cuBLAS's
// rows), B scale = xscale [M].
LtPlan make_plan(const LtKey& key, bool bias_epilogue) {
  LtPlan p;
  p.bias_epilogue = bias_epilogue;
  const cudaDataType_t yt = key.y_f32 ? CUDA_R_32F : CUDA_R_16BF;
  const cudaDataType_t xt = key.fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  set_attr(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  set_attr(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  if (bias_epilogue) {
    set_attr(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
    set_attr(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CUDA_R_16BF);
  }
  if (key.fp8) {
    const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    set_attr(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode);
    set_attr(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode);
  }
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, xt, key.K, key.N, key.K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, xt, key.K, key.M, key.K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, yt, key.N, key.M, key.N));
  return p;
}

// The call's pointers into the descriptor (they are attributes, not matmul arguments).
void set_pointers(const LtPlan& p, bool fp8, const LtArgs& a) {
  if (p.bias_epilogue) set_attr(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, a.bias);
  if (fp8) {
    set_attr(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, a.wscale);
    set_attr(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, a.xscale);
  }
}

cublasStatus_t lt_run(GemmLt* g, const LtPlan& p, const cublasLtMatmulAlgo_t& algo, const LtArgs& a) {
  const float alpha = 1.f, beta = 0.f;
  return cublasLtMatmul(g->lt, p.desc, &alpha, a.W, p.a, a.x, p.b, &beta, a.y, p.d, a.y, p.d, &algo, g->ws,
                        g->ws_bytes, g->stream);
}

// Picks p.algo among the heuristic candidates: while the stream is captured, #0 untried; otherwise the first that
// runs (autotune: the fastest of those that run, each timed on the caller's buffers; the real call follows and
// overwrites y). False: no candidate (or none that runs).
bool lt_select(GemmLt* g, LtPlan& p, const LtArgs& a, bool capturing) {
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g->ws_bytes,
                                                    sizeof(g->ws_bytes)));
  constexpr int kMaxCand = 12;  // 32 found nothing faster in serving on an H100 (session 27)
  cublasLtMatmulHeuristicResult_t res[kMaxCand];
  int n = 0;
  const cublasStatus_t hs =
      cublasLtMatmulAlgoGetHeuristic(g->lt, p.desc, p.a, p.b, p.d, p.d, pref, kMaxCand, res, &n);
  cublasLtMatmulPreferenceDestroy(pref);
  if (hs != CUBLAS_STATUS_SUCCESS || n <= 0) return false;
  p.algo = res[0].algo;
  p.n_candidates = n;
  if (capturing) return true;
  // Candidates that run, each timed over kRounds interleaved rounds of kReps calls (its best round counts): one
  // sequential pass let the clock and power state drift between candidates, so the pick changed from run to run.
  std::vector<int> ok;
  for (int i = 0; i < n; ++i) {
    if (res[i].state != CUBLAS_STATUS_SUCCESS || lt_run(g, p, res[i].algo, a) != CUBLAS_STATUS_SUCCESS) continue;
    if (!g->autotune) {
      p.algo = res[i].algo;
      return true;
    }
    ok.push_back(i);
  }
  constexpr int kReps = 5, kRounds = 3;
  std::vector<float> best_ms(static_cast<size_t>(n), 1e30f);
  for (int round = 0; round < kRounds; ++round) {
    for (int i : ok) {
      CUDA_CHECK(cudaEventRecord(g->e0, g->stream));
      for (int r = 0; r < kReps; ++r) CUBLAS_CHECK(lt_run(g, p, res[i].algo, a));
      CUDA_CHECK(cudaEventRecord(g->e1, g->stream));
      CUDA_CHECK(cudaEventSynchronize(g->e1));
      float ms = 0.f;
      CUDA_CHECK(cudaEventElapsedTime(&ms, g->e0, g->e1));
      best_ms[static_cast<size_t>(i)] = std::min(best_ms[static_cast<size_t>(i)], ms);
    }
  }
  bool found = false;
  float best = 1e30f;
  for (int i : ok) {
    const float ms = best_ms[static_cast<size_t>(i)];
    if (ms < best) best = ms, p.algo = res[i].algo, found = true;
  }
  p.best_us = best * 1e3f / kReps;
  p.tuned = found;
  return found;
}

// Plan for key, tuned at its first uncaptured call (see gemm_bf16_lt). fp8 with a bias: the bias epilogue first;
// where cuBLASLt has no algorithm for it with the outer-vector scales, the plan drops the epilogue (bias by kernel).
LtPlan& lt_plan(GemmLt* g, const LtKey& key, const LtArgs& a) {
  auto it = g->plans.find(key);
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(g->stream, &cap));
  const bool capturing = cap != cudaStreamCaptureStatusNone;
  if (it != g->plans.end() && (it->second.tuned || capturing || !g->autotune || !it->second.usable)) return it->second;
  if (it == g->plans.end()) it = g->plans.emplace(key, make_plan(key, key.bias)).first;
  LtPlan& p = it->second;
  LtKey bucket = key;
  bucket.M = 1;
  while (bucket.M < key.M) bucket.M *= 2;
  const auto b = g->bucket_algo.find(bucket);
  if (b != g->bucket_algo.end() && !capturing) {  // reuse the bucket's tuned algorithm where it fits this shape
    if (p.bias_epilogue != b->second.second) {
      destroy_plan(&p);
      p = make_plan(key, b->second.second);
    }
    cublasLtMatmulHeuristicResult_t check{};
    if (cublasLtMatmulAlgoCheck(g->lt, p.desc, p.a, p.b, p.d, p.d, &b->second.first, &check) ==
            CUBLAS_STATUS_SUCCESS &&
        check.state == CUBLAS_STATUS_SUCCESS && check.workspaceSize <= g->ws_bytes) {
      p.algo = b->second.first, p.tuned = true;
      set_pointers(p, key.fp8, a);
      return p;
    }
  }
  set_pointers(p, key.fp8, a);
  if (lt_select(g, p, a, capturing)) {
    if (p.tuned) g->bucket_algo[bucket] = {p.algo, p.bias_epilogue};
    return p;
  }
  if (p.bias_epilogue && key.fp8) {
    destroy_plan(&p);
    p = make_plan(key, false);
    set_pointers(p, true, a);
    if (lt_select(g, p, a, capturing)) {
      if (p.tuned) g->bucket_algo[bucket] = {p.algo, p.bias_epilogue};
      return p;
    }
  }
  p.usable = false;
  return p;
}

__global__ void add_bias_f32_kernel(float* y, const uint16_t* bias, int N) {
  dev::pdl_wait();
  dev::pdl_trigger();
  const int64_t m = blockIdx.y;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N; i += gridDim.x * blockDim.x)
    y[m * N + i] += dev::bf16f(bias[i]);
}

// y [M][N] (fp32 or bf16) += bias [N]
void add_bias_any(cudaStream_t s, void* y, bool y_f32, const bf16_t* bias, int M, int N) {
  if (!y_f32) return add_bias(static_cast<bf16_t*>(y), bias, M, N, s);
  dev::launch_pdl(add_bias_f32_kernel, dim3((N + 255) / 256, M), dim3(256), 0, s, static_cast<float*>(y), bias, N);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void gemm_bf16_lt(void* ctx, const bf16_t* x, const bf16_t* W, const bf16_t* bias, void* y, bool y_f32, int M, int N,
                  int K) {
  if (M <= 0) return;
  auto* g = static_cast<GemmLt*>(ctx);
  const LtArgs a{x, W, bias, nullptr, nullptr, y};
  LtPlan& p = lt_plan(g, LtKey{M, N, K, bias != nullptr, y_f32, false}, a);
  if (p.usable) {
    set_pointers(p, false, a);
    CUBLAS_CHECK(lt_run(g, p, p.algo, a));
    return;
  }
  gemm_bf16(g->cublas, x, W, y, y_f32, M, N, K);
  if (bias) add_bias_any(g->stream, y, y_f32, bias, M, N);
}

bool gemm_fp8_lt(void* ctx, const uint8_t* xq, const float* xscale, const uint8_t* W, const float* wscale,
                 const bf16_t* bias, void* y, bool y_f32, int M, int N, int K) {
  if (M <= 0) return true;
  CHECK(K % 16 == 0);
  auto* g = static_cast<GemmLt*>(ctx);
  const LtArgs a{xq, W, bias, xscale, wscale, y};
  LtPlan& p = lt_plan(g, LtKey{M, N, K, bias != nullptr, y_f32, true}, a);
  if (!p.usable) return false;
  set_pointers(p, true, a);
  CUBLAS_CHECK(lt_run(g, p, p.algo, a));
  if (bias && !p.bias_epilogue) add_bias_any(g->stream, y, y_f32, bias, M, N);
  return true;
}

namespace {
// x [n] fp32 -> three bf16 planes x3 [3][n]: hi = rn(x), mid = rn(x - hi), lo = rn(x - hi - mid). Both differences
// are exact in fp32 (each is the rounding error of the previous step), so hi + mid + lo = x up to lo's rounding.
__global__ void split_bf16x3_kernel(const float* x, uint16_t* x3, int64_t n) {
  dev::pdl_wait();
  dev::pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = x[i];
    const uint16_t hi = dev::f2bf(v);
    const float r1 = v - dev::bf16f(hi);
    const uint16_t mid = dev::f2bf(r1);
    x3[i] = hi, x3[n + i] = mid, x3[2 * n + i] = dev::f2bf(r1 - dev::bf16f(mid));
  }
}

// y3 [3][rows][N] (the planes' products) -> y [rows][N] = (lo + mid) + hi (+ bias [N] fp32), or with SILU (N = 2F,
// gate columns then up columns) y [rows][F] = silu(gate) * up, silu(a) = a / (1 + expf(-a)).
template <bool SILU>
__global__ void combine_bf16x3_kernel(const float* y3, int rows, int N, const float* bias, float* y) {
  dev::pdl_wait();
  dev::pdl_trigger();
  const int64_t plane = int64_t{rows} * N;
  const int cols = SILU ? N / 2 : N;
  auto sum = [&](int64_t j) { return (y3[2 * plane + j] + y3[plane + j]) + y3[j]; };
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < int64_t{rows} * cols;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t m = i / cols;
    const int c = static_cast<int>(i % cols);
    if constexpr (SILU) {
      const float g = sum(m * N + c), u = sum(m * N + cols + c);
      y[i] = g / (1.f + expf(-g)) * u;
    } else {
      y[i] = bias ? sum(m * N + c) + bias[c] : sum(m * N + c);
    }
  }
}

int grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 4096)); }
}  // namespace

void gemm_xf32_lt(void* ctx, const float* x, const bf16_t* W, const float* bias, float* y, bool silu, int M, int N,
                  int K, const Bf16x3Scratch& scratch) {
  if (M <= 0) return;
  auto* g = static_cast<GemmLt*>(ctx);
  CHECK(!silu || (N % 2 == 0 && bias == nullptr));
  const int64_t rows = std::min<int64_t>({M, scratch.x3_elems / (3 * int64_t{K}), scratch.y3_elems / (3 * int64_t{N})});
  CHECK_MSG(rows >= 1, "gemm_xf32_lt: scratch smaller than one row");
  const int out_cols = silu ? N / 2 : N;
  for (int64_t m0 = 0; m0 < M; m0 += rows) {
    const int r = static_cast<int>(std::min<int64_t>(rows, M - m0));
    const int64_t n = int64_t{r} * K;
    dev::launch_pdl(split_bf16x3_kernel, dim3(grid_for(n)), dim3(256), 0, g->stream, x + m0 * K, scratch.x3, n);
    CUDA_LAUNCH_CHECK();
    gemm_bf16_lt(ctx, scratch.x3, W, nullptr, scratch.y3, true, 3 * r, N, K);
    float* ym = y + m0 * out_cols;
    if (silu)
      dev::launch_pdl(combine_bf16x3_kernel<true>, dim3(grid_for(int64_t{r} * out_cols)), dim3(256), 0, g->stream,
                      static_cast<const float*>(scratch.y3), r, N, bias, ym);
    else
      dev::launch_pdl(combine_bf16x3_kernel<false>, dim3(grid_for(int64_t{r} * out_cols)), dim3(256), 0, g->stream,
                      static_cast<const float*>(scratch.y3), r, N, bias, ym);
    CUDA_LAUNCH_CHECK();
  }
}

const char* gemm_fp8_lt_path(void* ctx, int M, int N, int K, bool bias, bool y_f32) {
  const auto& plans = static_cast<GemmLt*>(ctx)->plans;
  auto it = plans.find(LtKey{M, N, K, bias, y_f32, true});
  if (it == plans.end()) return "not planned";
  if (!it->second.usable) return "unsupported";
  if (!bias) return "no bias";
  return it->second.bias_epilogue ? "bias epilogue" : "bias kernel";
}

}  // namespace citadel::cuda
