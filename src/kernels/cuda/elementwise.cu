// Elementwise and row-wise kernels: embedding, residual-add + RMSNorm, RoPE, SiLU-mul, bias, argmax, gather, fill.
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {
namespace {

using namespace dev;

__global__ void embedding_kernel(const uint16_t* table, const int32_t* tokens, float* out, int dim, int vocab) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x;
  const int tok = tokens[t];
  const bool ok = tok >= 0 && tok < vocab;
  const uint16_t* row = table + static_cast<int64_t>(ok ? tok : 0) * dim;
  float* o = out + static_cast<int64_t>(t) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = ok ? bf16f(row[i]) : 0.f;
}

// One block per row; the row is read twice (sum of squares, then scale), the second time from L1/L2.
__global__ void add_rmsnorm_kernel(float* residual, const uint16_t* delta, const uint16_t* weight, uint16_t* out,
                                   int dim, float eps) {
  pdl_wait();
  pdl_trigger();
  const int64_t row = blockIdx.x;
  float* r = residual + row * dim;
  const uint16_t* d = delta ? delta + row * dim : nullptr;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = r[i];
    if (d) {
      v += bf16f(d[i]);
      r[i] = v;
    }
    ss += v * v;
  }
  __shared__ float red[32];
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.f;
    v = warp_sum(v);
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  const float inv = rsqrtf(red[0] / dim + eps);
  uint16_t* o = out + row * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = f2bf(r[i] * inv * bf16f(weight[i]));
}

__global__ void rope_kernel(uint16_t* x, int n_heads, int head_dim, int row_stride, const int32_t* positions,
                            float theta, bool neox) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  uint16_t* row = x + static_cast<int64_t>(t) * row_stride;
  for (int idx = threadIdx.x; idx < n_heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    rope_rotate_pair(row + h * head_dim, i, head_dim, pos, theta, neox);
  }
}

__global__ void silu_mul_kernel(const uint16_t* gu, uint16_t* out, int ffn) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.y;
  const uint16_t* g = gu + t * 2 * ffn;
  const uint16_t* u = g + ffn;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < ffn; i += gridDim.x * blockDim.x) {
    const float a = bf16f(g[i]);
    out[t * ffn + i] = f2bf(a / (1.f + __expf(-a)) * bf16f(u[i]));
  }
}

// ffn % 8 == 0: 8 outputs per thread from one 16-byte load of gate and one of up (the scalar kernel above moves
// 2 bytes per load, which left this pass well under copy bandwidth at prefill sizes).
__global__ void silu_mul_vec8_kernel(const uint4* gu, uint4* out, int ffn8) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.y;
  const uint4* g = gu + t * 2 * ffn8;
  const uint4* u = g + ffn8;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < ffn8; i += gridDim.x * blockDim.x) {
    const uint4 gv = g[i], uv = u[i];
    const uint32_t* gw = reinterpret_cast<const uint32_t*>(&gv);
    const uint32_t* uw = reinterpret_cast<const uint32_t*>(&uv);
    uint4 ov;
    uint32_t* ow = reinterpret_cast<uint32_t*>(&ov);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float a0 = bf16f(static_cast<uint16_t>(gw[j] & 0xffffu)), a1 = bf16f(static_cast<uint16_t>(gw[j] >> 16));
      const float u0 = bf16f(static_cast<uint16_t>(uw[j] & 0xffffu)), u1 = bf16f(static_cast<uint16_t>(uw[j] >> 16));
      ow[j] = static_cast<uint32_t>(f2bf(a0 / (1.f + __expf(-a0)) * u0)) |
              (static_cast<uint32_t>(f2bf(a1 / (1.f + __expf(-a1)) * u1)) << 16);
    }
    out[t * ffn8 + i] = ov;
  }
}

__global__ void add_bias_kernel(uint16_t* y, const uint16_t* bias, int N) {
  pdl_wait();
  pdl_trigger();
  const int64_t m = blockIdx.y;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N; i += gridDim.x * blockDim.x)
    y[m * N + i] = f2bf(bf16f(y[m * N + i]) + bf16f(bias[i]));
}

__global__ void argmax_kernel(const float* logits, int V, int32_t* out) {
  pdl_wait();
  pdl_trigger();
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * V;
  float best = -FLT_MAX;
  int bi = 0x7fffffff;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = row[i];
    if (v > best) best = v, bi = i;  // strided scan: the first hit per thread is its lowest index
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
  }
  __shared__ float sv[32];
  __shared__ int si[32];
  if ((threadIdx.x & 31) == 0) sv[threadIdx.x >> 5] = best, si[threadIdx.x >> 5] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w)
      if (sv[w] > best || (sv[w] == best && si[w] < bi)) best = sv[w], bi = si[w];
    out[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
  }
}

__global__ void gather_rows_kernel(const uint16_t* src, const int32_t* index, uint16_t* dst, int cols) {
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.x;
  const uint16_t* s = src + static_cast<int64_t>(index[r]) * cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[r * cols + i] = s[i];
}

__global__ void fill_random_kernel(uint16_t* x, int64_t n, uint32_t seed, float scale) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = f2bf(hash_uniform(seed, static_cast<uint32_t>(i)) * scale);
}

}  // namespace

void embedding(const bf16_t* table, const int32_t* tokens, float* out, int T, int dim, int vocab, cudaStream_t s) {
  if (T <= 0) return;
  launch_pdl(embedding_kernel, dim3(T), dim3(256), 0, s, table, tokens, out, dim, vocab);
  CUDA_LAUNCH_CHECK();
}

void add_rmsnorm(float* residual, const bf16_t* delta, const bf16_t* weight, bf16_t* out, int T, int dim, float eps,
                 cudaStream_t s) {
  if (T <= 0) return;
  launch_pdl(add_rmsnorm_kernel, dim3(T), dim3(512), 0, s, residual, delta, weight, out, dim, eps);
  CUDA_LAUNCH_CHECK();
}

void rope(bf16_t* x, int T, int n_heads, int head_dim, int row_stride, const int32_t* positions, float theta,
          RopeLayout layout, cudaStream_t s) {
  if (T <= 0) return;
  launch_pdl(rope_kernel, dim3(T), dim3(256), 0, s, x, n_heads, head_dim, row_stride, positions, theta, layout == RopeLayout::kNeox);
  CUDA_LAUNCH_CHECK();
}

void silu_mul(const bf16_t* gate_up, bf16_t* out, int T, int ffn, cudaStream_t s) {
  if (T <= 0) return;
  if (ffn % 8 == 0 && reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0) {
    const int ffn8 = ffn / 8;
    dim3 grid((ffn8 + 255) / 256, T);
    launch_pdl(silu_mul_vec8_kernel, grid, dim3(256), 0, s, reinterpret_cast<const uint4*>(gate_up),
               reinterpret_cast<uint4*>(out), ffn8);
    CUDA_LAUNCH_CHECK();
    return;
  }
  dim3 grid((ffn + 255) / 256, T);
  launch_pdl(silu_mul_kernel, dim3(grid), dim3(256), 0, s, gate_up, out, ffn);
  CUDA_LAUNCH_CHECK();
}

void add_bias(bf16_t* y, const bf16_t* bias, int M, int N, cudaStream_t s) {
  if (M <= 0) return;
  dim3 grid((N + 255) / 256, M);
  launch_pdl(add_bias_kernel, dim3(grid), dim3(256), 0, s, y, bias, N);
  CUDA_LAUNCH_CHECK();
}

void argmax(const float* logits, int M, int V, int32_t* out, cudaStream_t s) {
  if (M <= 0) return;
  launch_pdl(argmax_kernel, dim3(M), dim3(1024), 0, s, logits, V, out);
  CUDA_LAUNCH_CHECK();
}

void gather_rows(const bf16_t* src, const int32_t* index, bf16_t* dst, int rows, int cols, cudaStream_t s) {
  if (rows <= 0) return;
  launch_pdl(gather_rows_kernel, dim3(rows), dim3(256), 0, s, src, index, dst, cols);
  CUDA_LAUNCH_CHECK();
}

void fill_random_bf16(bf16_t* x, int64_t n, uint32_t seed, float scale, cudaStream_t s) {
  if (n <= 0) return;
  launch_pdl(fill_random_kernel, dim3(1024), dim3(256), 0, s, x, n, seed, scale);
  CUDA_LAUNCH_CHECK();
}

}  // namespace citadel::cuda
