// Weight-only GEMV for small batches (memory-bound): y[M][N] = x[M][K] @ W[N][K]^T, M <= 8 per launch.
// One block (4 warps splitting K) computes ROWS output rows for all M inputs; each thread streams 16-byte weight chunks with U chunks per row
// in flight before use (ld.global.nc, no L1 allocate), activations come through L1 (shared by all warps).
// Also the device quantizers producing the int8 / int4 layouts documented in cuda_ops.h.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr int kWarps = 4;  // warps per block; they share the block's ROWS rows and split K between them
constexpr int kThreads = kWarps * 32;

template <int M, int ROWS>
__device__ __forceinline__ void store_rows(float (&acc)[ROWS][M], int row0, int N, const uint16_t* bias, void* y,
                                           bool y_f32) {
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
  if (threadIdx.x < ROWS * M) {
    const int r = threadIdx.x / M, m = threadIdx.x % M;
    const int n = row0 + r;
    if (n < N) {
      const float b = bias ? bf16f(bias[n]) : 0.f;
      {
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
}

// ---- bf16 weights: a 16-byte chunk = 8 weights ----
template <int M, int ROWS, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_bf16_kernel(const uint16_t* __restrict__ x,
                                                                const uint16_t* __restrict__ W,
                                                                const uint16_t* __restrict__ bias, void* y, bool y_f32,
                                                                int N, int K) {
  const int tid = threadIdx.x;  // K chunks are interleaved over the whole block
  const int row0 = blockIdx.x * ROWS;
  if (row0 >= N) return;
  const int K8 = K / 8;
  const uint4* Wv[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) Wv[r] = reinterpret_cast<const uint4*>(W) + static_cast<int64_t>(min(row0 + r, N - 1)) * K8;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  float acc[ROWS][M] = {};
  for (int base = 0; base < K8; base += kThreads * U) {
    uint4 w[ROWS][U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + tid;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) w[r][u] = i < K8 ? ld_stream(Wv[r] + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + tid;
      if (i >= K8) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4 a = __ldg(xv + static_cast<int64_t>(m) * K8 + i);
        const float xf[8] = {bf16_lo(a.x), bf16_hi(a.x), bf16_lo(a.y), bf16_hi(a.y),
                             bf16_lo(a.z), bf16_hi(a.z), bf16_lo(a.w), bf16_hi(a.w)};
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
  store_rows<M, ROWS>(acc, row0, N, bias, y, y_f32);
}

// ---- int8 weights (stored q+128): a 16-byte chunk = 16 weights. Byte -> fp32 via the 2^23 magic number. ----
__device__ __forceinline__ float u8_magic(uint32_t w, uint32_t sel) {
  return __uint_as_float(__byte_perm(w, 0x4B000000u, sel)) - 8388736.0f;  // (2^23 + u) - (2^23 + 128) = q
}

template <int M, int ROWS, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_int8_kernel(const uint16_t* __restrict__ x,
                                                                const uint8_t* __restrict__ W,
                                                                const float* __restrict__ scales,
                                                                const uint16_t* __restrict__ bias, void* y, bool y_f32,
                                                                int N, int K) {
  const int tid = threadIdx.x;  // K chunks are interleaved over the whole block
  const int row0 = blockIdx.x * ROWS;
  if (row0 >= N) return;
  const int K16 = K / 16;
  const uint4* Wv[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) Wv[r] = reinterpret_cast<const uint4*>(W) + static_cast<int64_t>(min(row0 + r, N - 1)) * K16;
  const uint4* xv = reinterpret_cast<const uint4*>(x);  // K/8 chunks per row
  float acc[ROWS][M] = {};
  for (int base = 0; base < K16; base += kThreads * U) {
    uint4 w[ROWS][U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + tid;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) w[r][u] = i < K16 ? ld_stream(Wv[r] + i) : make_uint4(0, 0, 0, 0);
    }
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
          for (int j = 0; j < 4; ++j) {
            s = fmaf(u8_magic(ww[j], 0x7440), bf16_lo(xa[2 * j]), s);
            s = fmaf(u8_magic(ww[j], 0x7441), bf16_hi(xa[2 * j]), s);
            s = fmaf(u8_magic(ww[j], 0x7442), bf16_lo(xa[2 * j + 1]), s);
            s = fmaf(u8_magic(ww[j], 0x7443), bf16_hi(xa[2 * j + 1]), s);
          }
          acc[r][m] = s;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const float sc = scales[min(row0 + r, N - 1)];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] *= sc;
  }
  store_rows<M, ROWS>(acc, row0, N, bias, y, y_f32);
}

// ---- int4 weights, group 128: a 16-byte chunk = 32 weights of one group (4 chunks per group). ----
// Each nibble pair is lifted to a bf16x2 (128 + n) with one LOP3, then to fp32 by a shift or mask; the +136 bias
// (128 + the stored +8) is removed once per chunk through the chunk's activation sum.
template <int M, int ROWS, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_int4_kernel(const uint16_t* __restrict__ x,
                                                                const uint8_t* __restrict__ W,
                                                                const float* __restrict__ scales,
                                                                const uint16_t* __restrict__ bias, void* y, bool y_f32,
                                                                int N, int K) {
  const int tid = threadIdx.x;  // K chunks are interleaved over the whole block
  const int row0 = blockIdx.x * ROWS;
  if (row0 >= N) return;
  const int K32 = K / 32;  // 16-byte chunks per row
  const int G = K / 128;
  const uint4* Wv[ROWS];
  const float* Sv[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int n = min(row0 + r, N - 1);
    Wv[r] = reinterpret_cast<const uint4*>(W) + static_cast<int64_t>(n) * K32;
    Sv[r] = scales + static_cast<int64_t>(n) * G;
  }
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  float acc[ROWS][M] = {};
  for (int base = 0; base < K32; base += kThreads * U) {
    uint4 w[ROWS][U];
    float sc[ROWS][U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + tid;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        w[r][u] = i < K32 ? ld_stream(Wv[r] + i) : make_uint4(0, 0, 0, 0);
        sc[r][u] = i < K32 ? __ldg(Sv[r] + i / 4) : 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * kThreads + tid;
      if (i >= K32) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4* xp = xv + static_cast<int64_t>(m) * (K / 8) + 4 * i;
        float xf[32];
        float xsum = 0.f;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const uint4 a = __ldg(xp + c);
          const uint32_t aa[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            xf[8 * c + 2 * j] = bf16_lo(aa[j]);
            xf[8 * c + 2 * j + 1] = bf16_hi(aa[j]);
            xsum += xf[8 * c + 2 * j] + xf[8 * c + 2 * j + 1];
          }
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          const uint32_t ww[4] = {w[r][u].x, w[r][u].y, w[r][u].z, w[r][u].w};
          float s = 0.f;
#pragma unroll
          for (int c = 0; c < 4; ++c) {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const uint32_t t = ((ww[c] >> (4 * j)) & 0x000F000Fu) | 0x43004300u;
              s = fmaf(bf16_lo(t), xf[8 * c + 2 * j], s);
              s = fmaf(bf16_hi(t), xf[8 * c + 2 * j + 1], s);
            }
          }
          acc[r][m] = fmaf(sc[r][u], s - 136.f * xsum, acc[r][m]);
        }
      }
    }
  }
  store_rows<M, ROWS>(acc, row0, N, bias, y, y_f32);
}

template <int ROWS>
int blocks_for(int N) {
  return (N + ROWS - 1) / ROWS;
}

#define CITADEL_GEMV_DISPATCH(KERNEL, ROWS, U, ...)                                          \
  switch (m) {                                                                               \
    case 1: KERNEL<1, ROWS, U><<<blocks_for<ROWS>(N), kWarps * 32, 0, s>>>(__VA_ARGS__); break; \
    case 2: KERNEL<2, ROWS, U><<<blocks_for<ROWS>(N), kWarps * 32, 0, s>>>(__VA_ARGS__); break; \
    case 3: KERNEL<3, ROWS, U><<<blocks_for<ROWS>(N), kWarps * 32, 0, s>>>(__VA_ARGS__); break; \
    case 4: KERNEL<4, ROWS, U><<<blocks_for<ROWS>(N), kWarps * 32, 0, s>>>(__VA_ARGS__); break; \
    case 5: KERNEL<5, ROWS, U><<<blocks_for<ROWS>(N), kWarps * 32, 0, s>>>(__VA_ARGS__); break; \
    case 6: KERNEL<6, ROWS, U><<<blocks_for<ROWS>(N), kWarps * 32, 0, s>>>(__VA_ARGS__); break; \
    case 7: KERNEL<7, ROWS, U><<<blocks_for<ROWS>(N), kWarps * 32, 0, s>>>(__VA_ARGS__); break; \
    default: KERNEL<8, ROWS, U><<<blocks_for<ROWS>(N), kWarps * 32, 0, s>>>(__VA_ARGS__); break; \
  }

inline void* row_offset(void* y, bool y_f32, int64_t elems) {
  return y_f32 ? static_cast<void*>(static_cast<float*>(y) + elems) : static_cast<void*>(static_cast<uint16_t*>(y) + elems);
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

__global__ void quantize_int4_kernel(const uint16_t* W, uint8_t* q, float* scales, int N, int K) {
  const int G = K / 128;
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (gid >= static_cast<int64_t>(N) * G) return;
  const int lane = threadIdx.x & 31;
  const int64_t n = gid / G;
  const int g = static_cast<int>(gid % G);
  const uint16_t* w = W + n * K + g * 128;
  float v[4];
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // lane owns weights 4*lane .. 4*lane+3 (half of one 32-bit word)
    v[i] = bf16f(w[4 * lane + i]);
    amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = warp_max(amax);
  const float scale = amax / 7.f;
  const float inv = scale > 0.f ? 1.f / scale : 0.f;
  // Word j8 = lane/2 holds weights 8*j8 .. 8*j8+7; this lane holds offsets o = 4*(lane&1) .. +3 within it.
  uint32_t part = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int o = 4 * (lane & 1) + i;
    const uint32_t nib = static_cast<uint32_t>(static_cast<int>(fminf(fmaxf(roundf(v[i] * inv), -8.f), 7.f)) + 8);
    const int shift = (o & 1) ? 16 + 4 * (o >> 1) : 4 * (o >> 1);
    part |= nib << shift;
  }
  part |= __shfl_xor_sync(0xffffffffu, part, 1);
  if ((lane & 1) == 0) reinterpret_cast<uint32_t*>(q + n * (K / 2) + g * 64)[lane / 2] = part;
  if (lane == 0) scales[n * G + g] = scale;
}

}  // namespace

void gemv_bf16(const bf16_t* x, const bf16_t* W, const bf16_t* bias, void* y, bool y_f32, int M, int N, int K,
               cudaStream_t s) {
  CHECK(K % 8 == 0);
  for (int m0 = 0; m0 < M; m0 += 8) {
    const int m = std::min(8, M - m0);
    const bf16_t* xm = x + static_cast<int64_t>(m0) * K;
    void* ym = row_offset(y, y_f32, static_cast<int64_t>(m0) * N);
    if (m <= 2) {
      CITADEL_GEMV_DISPATCH(gemv_bf16_kernel, 2, 4, xm, W, bias, ym, y_f32, N, K);
    } else {
      CITADEL_GEMV_DISPATCH(gemv_bf16_kernel, 2, 2, xm, W, bias, ym, y_f32, N, K);
    }
    CUDA_LAUNCH_CHECK();
  }
}

void gemv_int8(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
               int N, int K, cudaStream_t s) {
  CHECK(K % 16 == 0);
  for (int m0 = 0; m0 < M; m0 += 8) {
    const int m = std::min(8, M - m0);
    const bf16_t* xm = x + static_cast<int64_t>(m0) * K;
    void* ym = row_offset(y, y_f32, static_cast<int64_t>(m0) * N);
    CITADEL_GEMV_DISPATCH(gemv_int8_kernel, 2, 4, xm, W, scales, bias, ym, y_f32, N, K);
    CUDA_LAUNCH_CHECK();
  }
}

void gemv_int4(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
               int N, int K, cudaStream_t s) {
  CHECK(K % 128 == 0);
  for (int m0 = 0; m0 < M; m0 += 8) {
    const int m = std::min(8, M - m0);
    const bf16_t* xm = x + static_cast<int64_t>(m0) * K;
    void* ym = row_offset(y, y_f32, static_cast<int64_t>(m0) * N);
    CITADEL_GEMV_DISPATCH(gemv_int4_kernel, 4, 2, xm, W, scales, bias, ym, y_f32, N, K);
    CUDA_LAUNCH_CHECK();
  }
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

}  // namespace citadel::cuda
