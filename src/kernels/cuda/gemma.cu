// The row kernels Gemma-3 adds (model/arch/gemma3.cc): a scale, per-head RMSNorm of q and k (q/k norms), GeGLU
// (gelu_tanh(gate) * up) and an in-place RMSNorm of fp32 rows (the post-attention / post-FFN norms of the delta).
// One template per kernel for bf16 bits and fp32 storage: the bf16 path and the fp32 exact path share the arithmetic
// (fp32 sums of squares in a fixed order, IEEE 1 / sqrtf; GeGLU in double as the CPU twin: rows.cuh), so the exact
// path differs from the CPU reference only by fp32 summation order.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/rows.cuh"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr int kThreads = 256;

// x[i] *= s (rounded to the storage type; fp32: one IEEE multiply, as the CPU's x *= s).
template <typename T>
__global__ void scale_kernel(T* x, int64_t n, float s) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store_f(x + i, __fmul_rn(load_f(x[i]), s));
}

// grid (T, n_heads + n_kv_heads), kHeadThreads threads: head h of row t (q heads first, then k heads) in place =
// rmsnorm(head) * (h < n_heads ? q_w : k_w). Each element is read and written by one thread: in place is safe.
constexpr int kHeadThreads = 128;
template <typename T, typename W>
__global__ void __launch_bounds__(kHeadThreads) head_rmsnorm_kernel(T* x, int row_stride, int n_heads, int head_dim,
                                                                    const W* q_w, const W* k_w, float eps) {
  pdl_wait();
  pdl_trigger();
  const int h = blockIdx.y;
  T* hp = x + static_cast<int64_t>(blockIdx.x) * row_stride + static_cast<int64_t>(h) * head_dim;
  const W* w = h < n_heads ? q_w : k_w;
  float ss = 0.f;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
    const float v = load_f(hp[i]);
    ss = fmaf(v, v, ss);
  }
  const float inv = 1.f / sqrtf(block_sum(ss) / static_cast<float>(head_dim) + eps);
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) store_f(hp + i, load_f(hp[i]) * inv * load_f(w[i]));
}

template <typename T>
void scale_any(T* x, int64_t n, float s, cudaStream_t st) {
  if (n <= 0) return;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 4096);
  launch_pdl(scale_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, st, x, n, s);
  CUDA_LAUNCH_CHECK();
}

template <typename T, typename W>
void head_rmsnorm_any(T* x, int T_, int row_stride, int n_heads, int n_kv_heads, int head_dim, const W* q_w,
                      const W* k_w, float eps, cudaStream_t s) {
  if (T_ <= 0 || n_heads + n_kv_heads <= 0) return;
  CHECK(head_dim > 0 && row_stride >= (n_heads + n_kv_heads) * head_dim && n_heads + n_kv_heads <= 65535);
  launch_pdl(head_rmsnorm_kernel<T, W>, dim3(T_, n_heads + n_kv_heads), dim3(kHeadThreads), 0, s, x, row_stride,
             n_heads, head_dim, q_w, k_w, eps);
  CUDA_LAUNCH_CHECK();
}

template <typename T>
void gelu_mul_any(const T* gate_up, T* out, int T_, int ffn, cudaStream_t s) {
  if (T_ <= 0 || ffn <= 0) return;
  CHECK(T_ <= 65535);
  launch_pdl(gated_mul_rows_kernel<T, GeluTanhMul>, dim3((ffn + kThreads - 1) / kThreads, T_), dim3(kThreads), 0, s,
             gate_up, out, ffn);
  CUDA_LAUNCH_CHECK();
}

template <typename W>
void rmsnorm_f32_any(float* x, int T, int dim, const W* w, float eps, cudaStream_t s) {
  if (T <= 0 || dim <= 0) return;
  // The fused add + RMSNorm row kernel without the add, out = residual: pass 2 rewrites the elements each thread
  // itself read, after the block's sum.
  launch_pdl(add_rmsnorm_rows_kernel<W, float>, dim3(T), dim3(2 * kThreads), 0, s, x, static_cast<const float*>(nullptr),
             w, x, dim, eps);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void scale_f32(float* x, int64_t n, float s, cudaStream_t st) { scale_any(x, n, s, st); }
void scale_bf16(bf16_t* x, int64_t n, float s, cudaStream_t st) { scale_any(x, n, s, st); }

void head_rmsnorm(bf16_t* x, int T, int row_stride, int n_heads, int n_kv_heads, int head_dim, const bf16_t* q_w,
                  const bf16_t* k_w, float eps, cudaStream_t s) {
  head_rmsnorm_any(x, T, row_stride, n_heads, n_kv_heads, head_dim, q_w, k_w, eps, s);
}
void head_rmsnorm_f32(float* x, int T, int row_stride, int n_heads, int n_kv_heads, int head_dim, const float* q_w,
                      const float* k_w, float eps, cudaStream_t s) {
  head_rmsnorm_any(x, T, row_stride, n_heads, n_kv_heads, head_dim, q_w, k_w, eps, s);
}

void gelu_mul(const bf16_t* gate_up, bf16_t* out, int T, int ffn, cudaStream_t s) { gelu_mul_any(gate_up, out, T, ffn, s); }
void gelu_mul_f32(const float* gate_up, float* out, int T, int ffn, cudaStream_t s) {
  gelu_mul_any(gate_up, out, T, ffn, s);
}

void rmsnorm_f32(float* x, int T, int dim, const bf16_t* w, float eps, cudaStream_t s) {
  rmsnorm_f32_any(x, T, dim, w, eps, s);
}
void rmsnorm_f32(float* x, int T, int dim, const float* w, float eps, cudaStream_t s) {
  rmsnorm_f32_any(x, T, dim, w, eps, s);
}

}  // namespace citadel::cuda
