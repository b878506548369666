// Weight-only GEMV for small batches (memory-bound): y[M][N] = x[M][K] @ W[N][K]^T, M <= 8 per launch.
// One block (4 warps splitting K) computes ROWS output rows for all M inputs; each thread streams 16-byte weight chunks with U chunks per row
// in flight before use (ld.global.nc, no L1 allocate), activations come through L1 (shared by all warps).
// Formats: bf16, int8 and fp8 (e4m3; one kernel body, see W8 below), int4 (w4a8). Also the device quantizers producing
// the int8 / int4 / fp8 layouts documented in cuda_ops.h (the fp8 one also quantises the fp8 GEMM's activations).
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr int kWarps = 4;  // warps per block; they share the block's ROWS rows and split K between them
constexpr int kThreads = kWarps * 32;

// Weight row of the r-th row of block `block` (blockIdx.x, or its index within one GEMV of a grid of several). SILU
// (fused gate_up + SiLU-mul, W = [2F][K] gate rows then up rows): the first ROWS/2 rows are gate rows f0.., the others
// the matching up rows F + f0..; one output per (f, m).
template <int ROWS, bool SILU>
__device__ __forceinline__ int gemv_row(int r, int N, int block) {
  if (!SILU) return min(block * ROWS + r, N - 1);
  constexpr int H = ROWS / 2;
  const int F = N / 2, f0 = block * H;
  return r < H ? min(f0 + r, F - 1) : F + min(f0 + r - H, F - 1);
}
__device__ __forceinline__ float silu_mul_f(float gate, float up) { return gate / (1.f + __expf(-gate)) * up; }

// Bias of the output that thread r * M + m (< ROWS * M) stores in store_rows. Loaded before the weight stream (biases
// never depend on the previous kernel) so its DRAM round trip is not paid again after the loop.
__device__ __forceinline__ float bias_at(const uint16_t* b, int n) { return bf16f(b[n]); }
__device__ __forceinline__ float bias_at(const float* b, int n) { return b[n]; }
template <int M, int ROWS, typename BT>
__device__ __forceinline__ float preload_bias(const BT* bias, int row0, int N) {
  if (bias == nullptr || threadIdx.x >= ROWS * M) return 0.f;
  const int n = row0 + static_cast<int>(threadIdx.x) / M;
  return n < N ? bias_at(bias, n) : 0.f;
}

template <int M, int ROWS, bool SILU = false>
__device__ __forceinline__ void store_rows(float (&acc)[ROWS][M], int row0, int N, float b, void* y, bool y_f32) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __shared__ float red[kWarps][ROWS][M];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(acc[r][m]);
      if (lane == 0) red[warp][r][m] = v;
    }
  __syncthreads();
  if constexpr (SILU) {  // y [M][F] (bf16, or fp32 with y_f32) = silu(gate) * up; row0 = f0
    constexpr int H = ROWS / 2;
    const int F = N / 2;
    if (threadIdx.x < H * M) {
      const int r = threadIdx.x / M, m = threadIdx.x % M, f = row0 + r;
      if (f < F) {
        float gate = 0.f, up = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) gate += red[w][r][m], up += red[w][r + H][m];
        const int64_t at = static_cast<int64_t>(m) * F + f;
        if (y_f32)
          static_cast<float*>(y)[at] = gate / (1.f + expf(-gate)) * up;  // IEEE expf: the exact path's SiLU
        else
          static_cast<uint16_t*>(y)[at] = f2bf(silu_mul_f(gate, up));
      }
    }
    return;
  }
  if (threadIdx.x < ROWS * M) {
    const int r = threadIdx.x / M, m = threadIdx.x % M;
    const int n = row0 + r;
    if (n < N) {
      float v = b;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) v += red[w][r][m];
      if (y_f32)
        static_cast<float*>(y)[static_cast<int64_t>(m) * N + n] = v;
      else
        static_cast<uint16_t*>(y)[static_cast<int64_t>(m) * N + n] = f2bf(v);
    }
  }
}

// The block's ROWS weight rows as 16-byte chunks (n chunks per row). load() fills the U chunks per row that thread
// tid streams next: chunks base + u * kThreads + tid, zero past the row's end.
template <int ROWS, int U, bool SILU>
struct RowChunks {
  const uint4* row[ROWS];
  int n;
  __device__ __forceinline__ RowChunks(const void* W, int N, int n_chunks, int block) : n(n_chunks) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
      row[r] = static_cast<const uint4*>(W) + static_cast<int64_t>(gemv_row<ROWS, SILU>(r, N, block)) * n_chunks;
  }
  __device__ __forceinline__ void load(uint4 (&w)[ROWS][U], int base) const {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + static_cast<int>(threadIdx.x);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) w[r][u] = i < n ? ld_stream(row[r] + i) : make_uint4(0, 0, 0, 0);
    }
  }
};

// ---- bf16 weights: a 16-byte chunk = 8 weights ----
// x[off .. off + 8) as fp32: bf16 activations (one 16-byte load) or fp32 ones (two).
__device__ __forceinline__ void load_x8(const uint16_t* x, int64_t off, float (&xf)[8]) {
  const uint4 a = __ldg(reinterpret_cast<const uint4*>(x + off));
  const uint32_t v[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) xf[2 * j] = bf16_lo(v[j]), xf[2 * j + 1] = bf16_hi(v[j]);
}
__device__ __forceinline__ void load_x8(const float* x, int64_t off, float (&xf)[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(x + off));
  const float4 b = __ldg(reinterpret_cast<const float4*>(x + off + 4));
  xf[0] = a.x, xf[1] = a.y, xf[2] = a.z, xf[3] = a.w, xf[4] = b.x, xf[5] = b.y, xf[6] = b.z, xf[7] = b.w;
}

// XT: the activation type (uint16_t = bf16, or float); the bias has the same type.
template <typename XT, int M, int ROWS, int U, bool SILU>
__device__ __forceinline__ void gemv_bf16_body(const XT* __restrict__ x, const uint16_t* __restrict__ W,
                                               const XT* __restrict__ bias, void* y, bool y_f32, int N, int K,
                                               int block) {
  const int tid = threadIdx.x;  // K chunks are interleaved over the whole block
  const int row0 = block * (SILU ? ROWS / 2 : ROWS);  // SILU: first output f of the block
  if (row0 >= (SILU ? N / 2 : N)) return;
  const int K8 = K / 8;
  const RowChunks<ROWS, U, SILU> rows(W, N, K8, block);
  float acc[ROWS][M] = {};
  uint4 w[ROWS][U];
  pdl_trigger_early();
  rows.load(w, 0);  // weights do not depend on the previous kernel: their first loads overlap its tail (PDL)
  const float b = SILU ? 0.f : preload_bias<M, ROWS>(bias, row0, N);
  pdl_wait();
  pdl_trigger_late();
  for (int base = 0; base < K8; base += kThreads * U) {
    if (base != 0) rows.load(w, base);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + tid;
      if (i >= K8) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xf[8];
        load_x8(x, static_cast<int64_t>(m) * K + 8 * i, xf);
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          const uint32_t ww[4] = {w[r][u].x, w[r][u].y, w[r][u].z, w[r][u].w};
          float s = acc[r][m];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            s = fmaf(bf16_lo(ww[j]), xf[2 * j], s);
            s = fmaf(bf16_hi(ww[j]), xf[2 * j + 1], s);
          }
          acc[r][m] = s;
        }
      }
    }
  }
  store_rows<M, ROWS, SILU>(acc, row0, N, b, y, y_f32);
}

template <int M, int ROWS, int U, bool SILU>
__global__ void __launch_bounds__(kWarps * 32) gemv_bf16_kernel(const uint16_t* __restrict__ x,
                                                                const uint16_t* __restrict__ W,
                                                                const uint16_t* __restrict__ bias, void* y, bool y_f32,
                                                                int N, int K) {
  gemv_bf16_body<uint16_t, M, ROWS, U, SILU>(x, W, bias, y, y_f32, N, K, blockIdx.x);
}
// Two GEMVs over the same x in one grid: blocks below nb1 take (W1, y1, N1), the others (W2, y2, N2); no bias.
template <int M, int ROWS, int U, bool SILU>
__global__ void __launch_bounds__(kWarps * 32) gemv_bf16_two_kernel(const uint16_t* __restrict__ x,
                                                                    const uint16_t* __restrict__ W1, void* y1,
                                                                    int N1, int nb1, const uint16_t* __restrict__ W2,
                                                                    void* y2, int N2, int K) {
  const int b = blockIdx.x;
  if (b < nb1) gemv_bf16_body<uint16_t, M, ROWS, U, SILU>(x, W1, nullptr, y1, false, N1, K, b);
  else gemv_bf16_body<uint16_t, M, ROWS, U, SILU>(x, W2, nullptr, y2, false, N2, K, b - nb1);
}
template <int M, int ROWS, int U, bool SILU>
__global__ void __launch_bounds__(kWarps * 32) gemv_bf16_xf32_kernel(const float* __restrict__ x,
                                                                     const uint16_t* __restrict__ W,
                                                                     const float* __restrict__ bias, void* y,
                                                                     bool y_f32, int N, int K) {
  gemv_bf16_body<float, M, ROWS, U, SILU>(x, W, bias, y, y_f32, N, K, blockIdx.x);
}

// ---- 8-bit weights, one fp32 scale per row: a 16-byte chunk = 16 weights. The formats differ only in how a 32-bit
// word of 4 weights becomes fp32 (W8::dot4); the kernel body, launch shapes and register use are shared. ----
// int8 (stored q+128): byte -> fp32 via the 2^23 magic number.
__device__ __forceinline__ float u8_magic(uint32_t w, uint32_t sel) {
  return __uint_as_float(__byte_perm(w, 0x4B000000u, sel)) - 8388736.0f;  // (2^23 + u) - (2^23 + 128) = q
}
// s + sum_b w_b * x_b over the 4 weights of word w (byte b = weight b) and their activations, bf16 pairs
// xa0 = (x0, x1), xa1 = (x2, x3).
struct Int8W {
  static __device__ __forceinline__ float dot4(uint32_t w, uint32_t xa0, uint32_t xa1, float s) {
    s = fmaf(u8_magic(w, 0x7440), bf16_lo(xa0), s);
    s = fmaf(u8_magic(w, 0x7441), bf16_hi(xa0), s);
    s = fmaf(u8_magic(w, 0x7442), bf16_lo(xa1), s);
    return fmaf(u8_magic(w, 0x7443), bf16_hi(xa1), s);
  }
};
// fp8 e4m3: one cvt.rn.f16x2.e4m3x2 per byte pair (exact: e4m3 is a subset of fp16), fp16 -> fp32 exact.
struct Fp8W {
  static __device__ __forceinline__ float2 pair(uint32_t w16) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w16), __NV_E4M3);
    return __half22float2(__half2(h));
  }
  static __device__ __forceinline__ float dot4(uint32_t w, uint32_t xa0, uint32_t xa1, float s) {
    const float2 a = pair(w & 0xffffu), b = pair(w >> 16);
    s = fmaf(a.x, bf16_lo(xa0), s);
    s = fmaf(a.y, bf16_hi(xa0), s);
    s = fmaf(b.x, bf16_lo(xa1), s);
    return fmaf(b.y, bf16_hi(xa1), s);
  }
};

template <typename W8, int M, int ROWS, int U, bool SILU>
__device__ __forceinline__ void gemv_w8_body(const uint16_t* __restrict__ x, const uint8_t* __restrict__ W,
                                             const float* __restrict__ scales, const uint16_t* __restrict__ bias,
                                             void* y, bool y_f32, int N, int K) {
  const int tid = threadIdx.x;  // K chunks are interleaved over the whole block
  const int row0 = blockIdx.x * (SILU ? ROWS / 2 : ROWS);  // SILU: first output f of the block
  if (row0 >= (SILU ? N / 2 : N)) return;
  const int K16 = K / 16;
  const RowChunks<ROWS, U, SILU> rows(W, N, K16, blockIdx.x);
  const uint4* xv = reinterpret_cast<const uint4*>(x);  // K/8 chunks per row
  float acc[ROWS][M] = {};
  uint4 w[ROWS][U];
  pdl_trigger_early();
  rows.load(w, 0);  // before the PDL wait, as in the bf16 kernel
  float sc[ROWS];  // row scales and bias up front too: after the loop their DRAM round trip would add to every block
#pragma unroll
  for (int r = 0; r < ROWS; ++r) sc[r] = __ldg(scales + gemv_row<ROWS, SILU>(r, N, blockIdx.x));
  const float b = SILU ? 0.f : preload_bias<M, ROWS>(bias, row0, N);
  pdl_wait();
  pdl_trigger_late();
  for (int base = 0; base < K16; base += kThreads * U) {
    if (base != 0) rows.load(w, base);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + tid;
      if (i >= K16) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4 a0 = __ldg(xv + static_cast<int64_t>(m) * (K / 8) + 2 * i);
        const uint4 a1 = __ldg(xv + static_cast<int64_t>(m) * (K / 8) + 2 * i + 1);
        const uint32_t xa[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          const uint32_t ww[4] = {w[r][u].x, w[r][u].y, w[r][u].z, w[r][u].w};
          float s = acc[r][m];
#pragma unroll
          for (int j = 0; j < 4; ++j) s = W8::dot4(ww[j], xa[2 * j], xa[2 * j + 1], s);
          acc[r][m] = s;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] *= sc[r];
  store_rows<M, ROWS, SILU>(acc, row0, N, b, y, y_f32);
}

// M = 1: at most 56 registers (9 blocks of 128 threads per SM), see gemv_int8().
#define CITADEL_W8_KERNEL(NAME, W8)                                                                               \
  template <int M, int ROWS, int U, bool SILU>                                                                    \
  __global__ void __launch_bounds__(kWarps * 32, M == 1 ? 9 : 1)                                                 \
      NAME(const uint16_t* __restrict__ x, const uint8_t* __restrict__ W, const float* __restrict__ scales,       \
           const uint16_t* __restrict__ bias, void* y, bool y_f32, int N, int K) {                                \
    gemv_w8_body<W8, M, ROWS, U, SILU>(x, W, scales, bias, y, y_f32, N, K);                                       \
  }
CITADEL_W8_KERNEL(gemv_int8_kernel, Int8W)
CITADEL_W8_KERNEL(gemv_fp8_kernel, Fp8W)

// ---- int4 weights x int8 activations (w4a8): a 16-byte chunk = 32 weights of one row = one activation group. ----
// Word j of a chunk holds k = 8j + b in the low nibble of byte b and k = 8j + 4 + b in the high nibble, each the
// nibble q + 8 (q in [-8, 7], scale per group of 128 along K). The thread streaming chunk i quantizes the matching
// 32 activations once for all its ROWS rows (scale amax/127, round to nearest even), so that a chunk costs one LOP3,
// one SHF, one LOP3 and two dp4a per word: sum_k (q_k + 8) xq_k, and the -8 comes back as 8 * sum(xq).
// Round 7 (tensor-core kernel, bf16 activations): 117 instructions per chunk and 16 warps per SM, 2.1 TB/s.
struct XGroup {
  uint32_t q[8];  // int8 xq, k order
  float scale;    // x = xq * scale
  int corr;       // 8 * sum(xq)
};

// max(|a|, |b|) per bf16 half (the sign bits come out as a ^ b; callers drop them).
__device__ __forceinline__ uint32_t amax_bf16x2(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("max.xorsign.abs.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

// The 32 bf16 activations at xv[0..3] as an XGroup (the CPU twin in tests/gpu/kernels_test.cc does the same math).
__device__ __forceinline__ XGroup quantize_x32(const uint4* xv) {
  uint32_t v[16];  // bf16 pairs, k order
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint4 a = __ldg(xv + i);
    v[4 * i] = a.x, v[4 * i + 1] = a.y, v[4 * i + 2] = a.z, v[4 * i + 3] = a.w;
  }
  uint32_t m2 = v[0];
#pragma unroll
  for (int i = 1; i < 16; ++i) m2 = amax_bf16x2(m2, v[i]);
  const float amax = fmaxf(fabsf(bf16_lo(m2)), fabsf(bf16_hi(m2)));
  XGroup g;
  g.scale = amax / 127.f;
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  int sum = 0;
#pragma unroll
  for (int w = 0; w < 8; ++w) {
    // fma(x, inv, 1.5 * 2^23): the low byte of the result is round(x * inv) (nearest even) in two's complement.
    const uint32_t b0 = __float_as_uint(fmaf(bf16_lo(v[2 * w]), inv, 12582912.f));
    const uint32_t b1 = __float_as_uint(fmaf(bf16_hi(v[2 * w]), inv, 12582912.f));
    const uint32_t b2 = __float_as_uint(fmaf(bf16_lo(v[2 * w + 1]), inv, 12582912.f));
    const uint32_t b3 = __float_as_uint(fmaf(bf16_hi(v[2 * w + 1]), inv, 12582912.f));
    g.q[w] = __byte_perm(__byte_perm(b0, b1, 0x0040), __byte_perm(b2, b3, 0x0040), 0x5410);
    sum = __dp4a(static_cast<int>(g.q[w]), 0x01010101, sum);
  }
  g.corr = 8 * sum;
  return g;
}

// sum over the chunk of (q + 8) * xq for one row's 16-byte chunk.
__device__ __forceinline__ int dot_w4a8(const uint4& w, const XGroup& g) {
  const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
  int d = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    d = __dp4a(static_cast<int>(ws[j] & 0x0F0F0F0Fu), static_cast<int>(g.q[2 * j]), d);
    d = __dp4a(static_cast<int>((ws[j] >> 4) & 0x0F0F0F0Fu), static_cast<int>(g.q[2 * j + 1]), d);
  }
  return d;
}

template <int M, int ROWS, int U, bool SILU>
__global__ void __launch_bounds__(kWarps * 32, M == 1 ? 6 : 1) gemv_w4a8_kernel(const uint16_t* __restrict__ x,
                                                                const uint8_t* __restrict__ W,
                                                                const float* __restrict__ scales,
                                                                const uint16_t* __restrict__ bias, void* y, bool y_f32,
                                                                int N, int K) {
  const int tid = threadIdx.x;  // K chunks are interleaved over the whole block
  const int row0 = blockIdx.x * (SILU ? ROWS / 2 : ROWS);  // SILU: first output f of the block
  if (row0 >= (SILU ? N / 2 : N)) return;
  const int K32 = K / 32, G = K / 128;
  const RowChunks<ROWS, U, SILU> rows(W, N, K32, blockIdx.x);
  const uint4* xv = reinterpret_cast<const uint4*>(x);  // K/8 chunks per row
  float acc[ROWS][M] = {};
  uint4 w[ROWS][U];
  float sw[ROWS][U];  // group scale of each chunk in flight; loaded with it
  auto load = [&](int base) {
    rows.load(w, base);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + tid;
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
        sw[r][u] = i < K32 ? __ldg(scales + int64_t{gemv_row<ROWS, SILU>(r, N, blockIdx.x)} * G + i / 4) : 0.f;
    }
  };
  pdl_trigger_early();
  load(0);  // weights and scales before the PDL wait: they overlap the previous kernel's tail
  const float b = SILU ? 0.f : preload_bias<M, ROWS>(bias, row0, N);
  pdl_wait();
  pdl_trigger_late();
  for (int base = 0; base < K32; base += kThreads * U) {
    if (base != 0) load(base);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + tid;
      if (i >= K32) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const XGroup g = quantize_x32(xv + static_cast<int64_t>(m) * (K / 8) + 4 * i);
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
          acc[r][m] = fmaf(sw[r][u] * g.scale, static_cast<float>(dot_w4a8(w[r][u], g) - g.corr), acc[r][m]);
      }
    }
  }
  store_rows<M, ROWS, SILU>(acc, row0, N, b, y, y_f32);
}
template <int ROWS>
int blocks_for(int N) {
  return (N + ROWS - 1) / ROWS;
}

#define CITADEL_GEMV_DISPATCH(KERNEL, ROWS, U, SILU, GRID, ...)                                                  \
  switch (m) {                                                                                                   \
    case 1: launch_pdl(KERNEL<1, ROWS, U, SILU>, dim3(GRID), dim3(kWarps * 32), 0, s, __VA_ARGS__); break;       \
    case 2: launch_pdl(KERNEL<2, ROWS, U, SILU>, dim3(GRID), dim3(kWarps * 32), 0, s, __VA_ARGS__); break;       \
    case 3: launch_pdl(KERNEL<3, ROWS, U, SILU>, dim3(GRID), dim3(kWarps * 32), 0, s, __VA_ARGS__); break;       \
    case 4: launch_pdl(KERNEL<4, ROWS, U, SILU>, dim3(GRID), dim3(kWarps * 32), 0, s, __VA_ARGS__); break;       \
    case 5: launch_pdl(KERNEL<5, ROWS, U, SILU>, dim3(GRID), dim3(kWarps * 32), 0, s, __VA_ARGS__); break;       \
    case 6: launch_pdl(KERNEL<6, ROWS, U, SILU>, dim3(GRID), dim3(kWarps * 32), 0, s, __VA_ARGS__); break;       \
    case 7: launch_pdl(KERNEL<7, ROWS, U, SILU>, dim3(GRID), dim3(kWarps * 32), 0, s, __VA_ARGS__); break;       \
    default: launch_pdl(KERNEL<8, ROWS, U, SILU>, dim3(GRID), dim3(kWarps * 32), 0, s, __VA_ARGS__); break;      \
  }

// The kernels take at most 8 batch rows: run f(x rows, y rows, m) on each chunk of <= 8 rows, y_row_bytes apart.
template <typename XT, typename Fn>
void for_m_chunks(const XT* x, int K, void* y, int64_t y_row_bytes, int M, Fn&& f) {
  for (int m0 = 0; m0 < M; m0 += 8) {
    f(x + static_cast<int64_t>(m0) * K, static_cast<void*>(static_cast<char*>(y) + m0 * y_row_bytes), std::min(8, M - m0));
    CUDA_LAUNCH_CHECK();
  }
}
// ---- quantizers: one warp per row (int8) or per group (int4) ----
__global__ void quantize_int8_kernel(const uint16_t* W, uint8_t* q, float* scales, int N, int K) {
  const int n = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const uint16_t* w = W + static_cast<int64_t>(n) * K;
  float amax = 0.f;
  for (int k = lane; k < K; k += 32) amax = fmaxf(amax, fabsf(bf16f(w[k])));
  amax = warp_max(amax);
  const float scale = amax / 127.f;
  const float inv = scale > 0.f ? 1.f / scale : 0.f;
  for (int k = lane; k < K; k += 32) {
    const float v = fminf(fmaxf(roundf(bf16f(w[k]) * inv), -127.f), 127.f);
    q[static_cast<int64_t>(n) * K + k] = static_cast<uint8_t>(static_cast<int>(v) + 128);
  }
  if (lane == 0) scales[n] = scale;
}

// One warp per (row, group of 128); lane l holds k = 128*gi + 4l + e (e = 0..3): byte e of word (l%8)/2 of chunk
// 4*gi + l/8, low nibbles for even l, high for odd l; the even lane writes the pair's word.
__global__ void quantize_int4_kernel(const uint16_t* W, uint8_t* q, float* scales, int N, int K) {
  const int G = K / 128;
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (gid >= static_cast<int64_t>(N) * G) return;
  const int lane = threadIdx.x & 31;
  const int n = static_cast<int>(gid / G);
  const int gi = static_cast<int>(gid % G);
  const uint16_t* w = W + static_cast<int64_t>(n) * K + gi * 128;
  float v[4];
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = bf16f(w[4 * lane + i]);
    amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = warp_max(amax);
  const float scale = amax / 7.f;
  const float inv = scale > 0.f ? 1.f / scale : 0.f;
  uint32_t part = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const uint32_t nib = static_cast<uint32_t>(static_cast<int>(fminf(fmaxf(roundf(v[e] * inv), -8.f), 7.f)) + 8);
    part |= nib << (8 * e + 4 * (lane & 1));
  }
  part |= __shfl_xor_sync(0xffffffffu, part, 1);
  if ((lane & 1) == 0) {
    const int64_t word_byte = static_cast<int64_t>(n) * (K / 2) + (4 * gi + lane / 8) * 16 + ((lane % 8) / 2) * 4;
    *reinterpret_cast<uint32_t*>(q + word_byte) = part;
  }
  if (lane == 0) scales[static_cast<int64_t>(n) * G + gi] = scale;
}

// fp8: one block per row (activations: up to 18944 bf16 per row, M rows). Pass 1: amax over 16-byte chunks; pass 2
// (the row again, from L1/L2): q = e4m3(v / scale) two values per cvt.rn.satfinite.e4m3x2.f32, 8 bytes per chunk.
// IEEE division (__fdiv_rn) so that the host twin in the tests can match it bit for bit.
constexpr int kQuantFp8Threads = 256;
__global__ void __launch_bounds__(kQuantFp8Threads) quantize_rows_fp8_kernel(const uint16_t* x, uint8_t* q,
                                                                              float* scales, int K) {
  const int64_t row = blockIdx.x;
  const uint4* xr = reinterpret_cast<const uint4*>(x + row * K);
  uint2* qr = reinterpret_cast<uint2*>(q + row * K);
  const int K8 = K / 8;
  pdl_wait();
  float amax = 0.f;
  for (int i = threadIdx.x; i < K8; i += kQuantFp8Threads) {
    const uint4 v = __ldg(xr + i);
    for (uint32_t p : {v.x, v.y, v.z, v.w}) amax = fmaxf(amax, fmaxf(fabsf(bf16_lo(p)), fabsf(bf16_hi(p))));
  }
  __shared__ float red[kQuantFp8Threads / 32];
  amax = warp_max(amax);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = amax;
  __syncthreads();
  amax = red[0];
#pragma unroll
  for (int w = 1; w < kQuantFp8Threads / 32; ++w) amax = fmaxf(amax, red[w]);
  pdl_trigger();
  const float scale = __fdiv_rn(amax, 448.f);
  if (threadIdx.x == 0) scales[row] = scale;
  for (int i = threadIdx.x; i < K8; i += kQuantFp8Threads) {
    const uint4 v = __ldg(xr + i);
    uint32_t out[2] = {0u, 0u};
    if (scale > 0.f) {
      const uint32_t in[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = make_float2(__fdiv_rn(bf16_lo(in[j]), scale), __fdiv_rn(bf16_hi(in[j]), scale));
        out[j / 2] |= static_cast<uint32_t>(__nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3)) << (16 * (j % 2));
      }
    }
    qr[i] = make_uint2(out[0], out[1]);
  }
}

}  // namespace

void gemv_bf16(const bf16_t* x, const bf16_t* W, const bf16_t* bias, void* y, bool y_f32, int M, int N, int K,
               cudaStream_t s) {
  CHECK(K % 8 == 0);
  for_m_chunks(x, K, y, int64_t{N} * (y_f32 ? 4 : 2), M, [&](const bf16_t* xm, void* ym, int m) {
    if (m <= 2) {
      CITADEL_GEMV_DISPATCH(gemv_bf16_kernel, 2, 4, false, blocks_for<2>(N), xm, W, bias, ym, y_f32, N, K);
    } else {
      CITADEL_GEMV_DISPATCH(gemv_bf16_kernel, 2, 2, false, blocks_for<2>(N), xm, W, bias, ym, y_f32, N, K);
    }
  });
}

void gemv_bf16_two(const bf16_t* x, const bf16_t* W1, bf16_t* y1, int N1, const bf16_t* W2, bf16_t* y2, int N2, int M,
                   int K, cudaStream_t s) {
  CHECK(K % 8 == 0 && M >= 1 && M <= 2 && N1 >= 1 && N2 >= 1);
  const int nb1 = blocks_for<2>(N1);
  const dim3 grid(static_cast<unsigned>(nb1 + blocks_for<2>(N2)));
  if (M == 1)
    launch_pdl(gemv_bf16_two_kernel<1, 2, 4, false>, grid, dim3(kWarps * 32), 0, s, x, W1, y1, N1, nb1, W2, y2, N2, K);
  else
    launch_pdl(gemv_bf16_two_kernel<2, 2, 4, false>, grid, dim3(kWarps * 32), 0, s, x, W1, y1, N1, nb1, W2, y2, N2, K);
  CUDA_LAUNCH_CHECK();
}

void gemv_bf16_xf32(const float* x, const bf16_t* W, const float* bias, float* y, int M, int N, int K, cudaStream_t s) {
  CHECK(K % 8 == 0);
  for_m_chunks(x, K, y, int64_t{N} * 4, M, [&](const float* xm, void* ym, int m) {
    CITADEL_GEMV_DISPATCH(gemv_bf16_xf32_kernel, 2, 4, false, blocks_for<2>(N), xm, W, bias, ym, true, N, K);
  });
}

// 8-bit weight launch shapes, shared by int8 and fp8 (same kernel body, same registers). 4 rows per block: at M = 1
// (56 registers, 9 blocks per SM) the 7B qkv (1152 blocks), o and down (896) grids are one wave each; down with 2 rows
// per block (1792 blocks) left a half-full second wave.
#define CITADEL_W8_GEMV(KERNEL)                                                                                  \
  CHECK(K % 16 == 0);                                                                                            \
  for_m_chunks(x, K, y, int64_t{N} * (y_f32 ? 4 : 2), M, [&](const bf16_t* xm, void* ym, int m) {               \
    if (K <= 4096 || N <= 4096) {                                                                                \
      CITADEL_GEMV_DISPATCH(KERNEL, 4, 2, false, blocks_for<4>(N), xm, W, scales, bias, ym, y_f32, N, K);        \
    } else {                                                                                                     \
      CITADEL_GEMV_DISPATCH(KERNEL, 2, 4, false, blocks_for<2>(N), xm, W, scales, bias, ym, y_f32, N, K);        \
    }                                                                                                            \
  })
#define CITADEL_W8_GEMV_SILU(KERNEL)                                                                             \
  CHECK(K % 16 == 0);                                                                                            \
  const int N = 2 * F;                                                                                           \
  for_m_chunks(x, K, act, int64_t{F} * 2, M, [&](const bf16_t* xm, void* ym, int m) {                            \
    if (K <= 4096) {                                                                                             \
      CITADEL_GEMV_DISPATCH(KERNEL, 4, 2, true, (F + 1) / 2, xm, W, scales, nullptr, ym, false, N, K);           \
    } else {                                                                                                     \
      CITADEL_GEMV_DISPATCH(KERNEL, 2, 4, true, F, xm, W, scales, nullptr, ym, false, N, K);                     \
    }                                                                                                            \
  })

void gemv_int8(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
               int N, int K, cudaStream_t s) {
  CITADEL_W8_GEMV(gemv_int8_kernel);
}
void gemv_fp8(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
              int N, int K, cudaStream_t s) {
  CITADEL_W8_GEMV(gemv_fp8_kernel);
}

// int4 launch shapes. M = 1: 8 rows per block share each activation group's quantisation, one chunk per row in
// flight per thread (80 registers, 6 blocks per SM); the 7B down (448 blocks) and qkv (576) grids are one wave
// (down with 4 rows x 2 chunks: 896 blocks, a second wave of 104, 514 us per bs1 step in place against 404).
// M > 1: 4 rows.
#define CITADEL_W4A8_LAUNCH(SILU, GRID_M1, GRID, ...)                                                            \
  if (m == 1) {                                                                                                  \
    launch_pdl(gemv_w4a8_kernel<1, 8, 1, SILU>, dim3(GRID_M1), dim3(kWarps * 32), 0, s, __VA_ARGS__);            \
  } else {                                                                                                       \
    CITADEL_GEMV_DISPATCH(gemv_w4a8_kernel, 4, 1, SILU, GRID, __VA_ARGS__);                                      \
  }

void gemv_int4(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
               int N, int K, cudaStream_t s) {
  CHECK(K % 128 == 0);
  for_m_chunks(x, K, y, int64_t{N} * (y_f32 ? 4 : 2), M, [&](const bf16_t* xm, void* ym, int m) {
    CITADEL_W4A8_LAUNCH(false, blocks_for<8>(N), blocks_for<4>(N), xm, W, scales, bias, ym, y_f32, N, K);
  });
}

void gemv_silu_bf16(const bf16_t* x, const bf16_t* W, bf16_t* act, int M, int F, int K, cudaStream_t s) {
  CHECK(K % 8 == 0);
  const int N = 2 * F;
  for_m_chunks(x, K, act, int64_t{F} * 2, M, [&](const bf16_t* xm, void* ym, int m) {
    if (m <= 2) {
      CITADEL_GEMV_DISPATCH(gemv_bf16_kernel, 2, 4, true, F, xm, W, nullptr, ym, false, N, K);
    } else {
      CITADEL_GEMV_DISPATCH(gemv_bf16_kernel, 2, 2, true, F, xm, W, nullptr, ym, false, N, K);
    }
  });
}

void gemv_silu_bf16_xf32(const float* x, const bf16_t* W, float* act, int M, int F, int K, cudaStream_t s) {
  CHECK(K % 8 == 0);
  const int N = 2 * F;
  for_m_chunks(x, K, act, int64_t{F} * 4, M, [&](const float* xm, void* ym, int m) {
    CITADEL_GEMV_DISPATCH(gemv_bf16_xf32_kernel, 2, 4, true, F, xm, W, nullptr, ym, true, N, K);
  });
}

void gemv_silu_int8(const bf16_t* x, const uint8_t* W, const float* scales, bf16_t* act, int M, int F, int K,
                    cudaStream_t s) {
  CITADEL_W8_GEMV_SILU(gemv_int8_kernel);
}
void gemv_silu_fp8(const bf16_t* x, const uint8_t* W, const float* scales, bf16_t* act, int M, int F, int K,
                   cudaStream_t s) {
  CITADEL_W8_GEMV_SILU(gemv_fp8_kernel);
}

void gemv_silu_int4(const bf16_t* x, const uint8_t* W, const float* scales, bf16_t* act, int M, int F, int K,
                    cudaStream_t s) {
  CHECK(K % 128 == 0);
  const int N = 2 * F;
  for_m_chunks(x, K, act, int64_t{F} * 2, M, [&](const bf16_t* xm, void* ym, int m) {
    CITADEL_W4A8_LAUNCH(true, (F + 3) / 4, (F + 1) / 2, xm, W, scales, nullptr, ym, false, N, K);
  });
}

void quantize_int8(const bf16_t* W, uint8_t* q, float* scales, int N, int K, cudaStream_t s) {
  quantize_int8_kernel<<<(N + 7) / 8, 256, 0, s>>>(W, q, scales, N, K);
  CUDA_LAUNCH_CHECK();
}

void quantize_int4(const bf16_t* W, uint8_t* q, float* scales, int N, int K, cudaStream_t s) {
  CHECK(K % 128 == 0);
  const int64_t groups = static_cast<int64_t>(N) * (K / 128);
  quantize_int4_kernel<<<static_cast<unsigned>((groups + 7) / 8), 256, 0, s>>>(W, q, scales, N, K);
  CUDA_LAUNCH_CHECK();
}

void quantize_rows_fp8(const bf16_t* x, uint8_t* xq, float* xscale, int M, int K, cudaStream_t s) {
  CHECK(K % 8 == 0);
  if (M <= 0) return;
  launch_pdl(quantize_rows_fp8_kernel, dim3(M), dim3(kQuantFp8Threads), 0, s, x, xq, xscale, K);
  CUDA_LAUNCH_CHECK();
}

void quantize_fp8(const bf16_t* W, uint8_t* q, float* scales, int N, int K, cudaStream_t s) {
  quantize_rows_fp8(W, q, scales, N, K, s);
}

}  // namespace citadel::cuda
