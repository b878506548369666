// Elementwise and row-wise kernels: embedding, residual-add + RMSNorm, RoPE, SiLU-mul, bias, argmax, gather, fill,
// the in-place bf16 conversion of loaded weights.
#include <algorithm>
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/rows.cuh"

namespace citadel::cuda {
namespace {

using namespace dev;

// dim % 8 == 0 and dim <= 8 * 1024 * CH: thread i owns elements [8i, 8i + 8) (+ 8 * blockDim per further chunk) and
// issues all its loads (residual and delta 2 x 16 B each, weight 16 B per chunk) before using any, so a decode row
// costs one memory round trip plus the block reduction (the generic kernel's strided loop serialises its loads
// behind the residual stores it may alias).
template <int CH>
__global__ void add_rmsnorm_vec8_kernel(float* residual, const float* delta, const uint16_t* weight, uint16_t* out,
                                        int dim, float eps) {
  pdl_trigger_early();
  const int64_t row = blockIdx.x;
  float4* r = reinterpret_cast<float4*>(residual + row * dim);
  const float4* d = delta ? reinterpret_cast<const float4*>(delta + row * dim) : nullptr;
  const uint4* w = reinterpret_cast<const uint4*>(weight);
  const int n8 = dim / 8;
  float v[CH][8];
  uint4 wv[CH];
#pragma unroll
  for (int c = 0; c < CH; ++c) {  // the norm's weights before the wait
    const int i = threadIdx.x + c * blockDim.x;
    wv[c] = i < n8 ? __ldg(w + i) : make_uint4(0, 0, 0, 0);
  }
  pdl_wait();
  pdl_trigger_late();
  float ss = 0.f;
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    const int i = threadIdx.x + c * blockDim.x;
    if (i >= n8) continue;
    const float4 a = r[2 * i], b = r[2 * i + 1];
    const float4 da = d ? d[2 * i] : make_float4(0.f, 0.f, 0.f, 0.f);
    const float4 db = d ? d[2 * i + 1] : make_float4(0.f, 0.f, 0.f, 0.f);
    v[c][0] = a.x, v[c][1] = a.y, v[c][2] = a.z, v[c][3] = a.w, v[c][4] = b.x, v[c][5] = b.y, v[c][6] = b.z,
    v[c][7] = b.w;
    if (d) {
      const float dv[8] = {da.x, da.y, da.z, da.w, db.x, db.y, db.z, db.w};
#pragma unroll
      for (int j = 0; j < 8; ++j) v[c][j] += dv[j];
      r[2 * i] = make_float4(v[c][0], v[c][1], v[c][2], v[c][3]);
      r[2 * i + 1] = make_float4(v[c][4], v[c][5], v[c][6], v[c][7]);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) ss += v[c][j] * v[c][j];
  }
  const float inv = rsqrtf(block_sum(ss) / dim + eps);
  uint4* o = reinterpret_cast<uint4*>(out + row * dim);
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    const int i = threadIdx.x + c * blockDim.x;
    if (i >= n8) continue;
    const uint32_t ww[4] = {wv[c].x, wv[c].y, wv[c].z, wv[c].w};
    uint4 ov;
    ov.x = pack_bf16x2(v[c][0] * inv * bf16_lo(ww[0]), v[c][1] * inv * bf16_hi(ww[0]));
    ov.y = pack_bf16x2(v[c][2] * inv * bf16_lo(ww[1]), v[c][3] * inv * bf16_hi(ww[1]));
    ov.z = pack_bf16x2(v[c][4] * inv * bf16_lo(ww[2]), v[c][5] * inv * bf16_hi(ww[2]));
    ov.w = pack_bf16x2(v[c][6] * inv * bf16_lo(ww[3]), v[c][7] * inv * bf16_hi(ww[3]));
    o[i] = ov;
  }
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

// ffn % 8 == 0: 8 outputs per thread from one 16-byte load of gate and one of up (the scalar rows.cuh kernel moves
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

// One block per row. Vec4 (V % 4 == 0, so every row is 16-byte aligned): each thread keeps kArgmaxUnroll float4
// loads in flight (one block streams a 100k-entry row about ten times faster than with one scalar load in flight per
// thread, which bounded batch-1 decode's argmax at ~40 us). Each thread visits its indices in increasing order, so
// its first hit of a value is its lowest index of it.
constexpr int kArgmaxUnroll = 4;
template <bool Vec4>
__global__ void argmax_kernel(const float* logits, int V, int32_t* out) {
  pdl_wait();
  pdl_trigger();
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * V;
  float best = -FLT_MAX;
  int bi = 0x7fffffff;
  if constexpr (Vec4) {
    const float4* r4 = reinterpret_cast<const float4*>(row);
    const int V4 = V / 4, step = static_cast<int>(blockDim.x);
    for (int base = threadIdx.x; base < V4; base += step * kArgmaxUnroll) {
      float4 v[kArgmaxUnroll];
#pragma unroll
      for (int u = 0; u < kArgmaxUnroll; ++u) {
        const int j = base + u * step;
        v[u] = j < V4 ? r4[j] : make_float4(-FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX);
      }
#pragma unroll
      for (int u = 0; u < kArgmaxUnroll; ++u) {
        const int i = (base + u * step) * 4;
        if (v[u].x > best) best = v[u].x, bi = i;
        if (v[u].y > best) best = v[u].y, bi = i + 1;
        if (v[u].z > best) best = v[u].z, bi = i + 2;
        if (v[u].w > best) best = v[u].w, bi = i + 3;
      }
    }
  } else {
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      const float v = row[i];
      if (v > best) best = v, bi = i;  // strided scan: the first hit per thread is its lowest index
    }
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

// T = uint16_t: bf16 bits; float: the same values unrounded.
template <typename T>
__global__ void fill_random_kernel(T* x, int64_t n, uint32_t seed, float scale) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = hash_uniform(seed, static_cast<uint32_t>(i)) * scale;
    if constexpr (sizeof(T) == 2)
      x[i] = f2bf(v);
    else
      x[i] = v;
  }
}

// base/half.h's f32_to_bf16(f16_to_f32(h)) in integers (bit-identical, NaN payloads included): f16 -> f32 bits
// exactly (subnormals normalised), then round to nearest even with signalling NaNs quieted.
__device__ __forceinline__ uint32_t f16_bits_to_f32_bits(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return sign;
    const int shift = __clz(mant) - 21;  // brings the leading one to bit 10
    return sign | (static_cast<uint32_t>(127 - 15 + 1 - shift) << 23) | (((mant << shift) & 0x3ffu) << 13);
  }
  if (exp == 31) return sign | 0x7f800000u | (mant << 13);
  return sign | ((exp + 127 - 15) << 23) | (mant << 13);
}
__device__ __forceinline__ uint16_t f32_bits_to_bf16(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// x [n] in place: f16 bits -> bf16 (kF16), or bf16 bits through f32 and back (signalling NaNs quieted).
template <bool kF16>
__global__ void bf16_inplace_kernel(uint16_t* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t h = x[i];
    x[i] = f32_bits_to_bf16(kF16 ? f16_bits_to_f32_bits(h) : h << 16);
  }
}

}  // namespace

void embedding(const bf16_t* table, const int32_t* tokens, float* out, int T, int dim, int vocab, cudaStream_t s,
               int first) {
  if (T <= 0) return;
  launch_pdl(embedding_rows_kernel<uint16_t>, dim3(T), dim3(256), 0, s, table, tokens, out, dim, vocab, first);
  CUDA_LAUNCH_CHECK();
}

namespace {
// grid (rows, ceil(vocab / 256)): out[r][v] = gathered[v / per][r][v % per].
__global__ void vocab_unshard_kernel(const float* __restrict__ gathered, float* __restrict__ out, int rows, int per,
                                     int vocab) {
  const int r = blockIdx.x, v = blockIdx.y * blockDim.x + threadIdx.x;
  if (v >= vocab) return;
  const int q = v / per;
  out[static_cast<int64_t>(r) * vocab + v] = gathered[(static_cast<int64_t>(q) * rows + r) * per + (v - q * per)];
}
}  // namespace

void vocab_unshard(const float* gathered, float* out, int rows, int per, int vocab, int n, cudaStream_t s) {
  if (rows <= 0 || vocab <= 0) return;
  CHECK_MSG(static_cast<int64_t>(per) * n >= vocab, "vocab_unshard: the slices do not cover the vocabulary");
  vocab_unshard_kernel<<<dim3(rows, (vocab + 255) / 256), dim3(256), 0, s>>>(gathered, out, rows, per, vocab);
  CUDA_LAUNCH_CHECK();
}

void add_rmsnorm(float* residual, const float* delta, const bf16_t* weight, bf16_t* out, int T, int dim, float eps,
                 cudaStream_t s) {
  if (T <= 0) return;
  const bool aligned = reinterpret_cast<uintptr_t>(residual) % 16 == 0 && reinterpret_cast<uintptr_t>(delta) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(weight) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int n8 = dim / 8;
  if (dim % 8 == 0 && aligned && n8 <= 2048) {
    const int ch = n8 <= 1024 ? 1 : 2;
    const int threads = ((n8 + ch - 1) / ch + 31) / 32 * 32;
    if (ch == 1)
      launch_pdl(add_rmsnorm_vec8_kernel<1>, dim3(T), dim3(threads), 0, s, residual, delta, weight, out, dim, eps);
    else
      launch_pdl(add_rmsnorm_vec8_kernel<2>, dim3(T), dim3(threads), 0, s, residual, delta, weight, out, dim, eps);
  } else {
    launch_pdl(add_rmsnorm_rows_kernel<uint16_t, uint16_t>, dim3(T), dim3(512), 0, s, residual, delta, weight, out,
               dim, eps);
  }
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
  launch_pdl(gated_mul_rows_kernel<uint16_t>, dim3(grid), dim3(256), 0, s, gate_up, out, ffn);
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
  if (V % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0)
    launch_pdl(argmax_kernel<true>, dim3(M), dim3(1024), 0, s, logits, V, out);
  else
    launch_pdl(argmax_kernel<false>, dim3(M), dim3(1024), 0, s, logits, V, out);
  CUDA_LAUNCH_CHECK();
}

void gather_rows(const bf16_t* src, const int32_t* index, bf16_t* dst, int rows, int cols, cudaStream_t s) {
  if (rows <= 0) return;
  launch_pdl(gather_rows_kernel, dim3(rows), dim3(256), 0, s, src, index, dst, cols);
  CUDA_LAUNCH_CHECK();
}

void fill_random_bf16(bf16_t* x, int64_t n, uint32_t seed, float scale, cudaStream_t s) {
  if (n <= 0) return;
  launch_pdl(fill_random_kernel<uint16_t>, dim3(1024), dim3(256), 0, s, x, n, seed, scale);
  CUDA_LAUNCH_CHECK();
}

void fill_random_f32(float* x, int64_t n, uint32_t seed, float scale, cudaStream_t s) {
  if (n <= 0) return;
  launch_pdl(fill_random_kernel<float>, dim3(1024), dim3(256), 0, s, x, n, seed, scale);
  CUDA_LAUNCH_CHECK();
}

void bf16_inplace(bf16_t* x, int64_t n, bool from_f16, cudaStream_t s) {
  if (n <= 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((n + 255) / 256, 8192));
  if (from_f16)
    bf16_inplace_kernel<true><<<blocks, 256, 0, s>>>(x, n);
  else
    bf16_inplace_kernel<false><<<blocks, 256, 0, s>>>(x, n);
  CUDA_LAUNCH_CHECK();
}

}  // namespace citadel::cuda
