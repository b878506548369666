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

// Weight row of the block's r-th row. SILU (fused gate_up + SiLU-mul, W = [2F][K] gate rows then up rows): the
// first ROWS/2 rows are gate rows f0.., the others the matching up rows F + f0..; one output per (f, m).
template <int ROWS, bool SILU>
__device__ __forceinline__ int gemv_row(int r, int N) {
  if (!SILU) return min(static_cast<int>(blockIdx.x) * ROWS + r, N - 1);
  constexpr int H = ROWS / 2;
  const int F = N / 2, f0 = blockIdx.x * H;
  return r < H ? min(f0 + r, F - 1) : F + min(f0 + r - H, F - 1);
}
__device__ __forceinline__ float silu_mul_f(float gate, float up) { return gate / (1.f + __expf(-gate)) * up; }

// Bias of the output that thread r * M + m (< ROWS * M) stores in store_rows. Loaded before the weight stream (biases
// never depend on the previous kernel) so its DRAM round trip is not paid again after the loop.
template <int M, int ROWS>
__device__ __forceinline__ float preload_bias(const uint16_t* bias, int row0, int N) {
  if (bias == nullptr || threadIdx.x >= ROWS * M) return 0.f;
  const int n = row0 + static_cast<int>(threadIdx.x) / M;
  return n < N ? bf16f(bias[n]) : 0.f;
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
  if constexpr (SILU) {  // y [M][F] bf16 = silu(gate) * up; row0 = f0
    constexpr int H = ROWS / 2;
    const int F = N / 2;
    if (threadIdx.x < H * M) {
      const int r = threadIdx.x / M, m = threadIdx.x % M, f = row0 + r;
      if (f < F) {
        float gate = 0.f, up = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) gate += red[w][r][m], up += red[w][r + H][m];
        static_cast<uint16_t*>(y)[static_cast<int64_t>(m) * F + f] = f2bf(silu_mul_f(gate, up));
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
  __device__ __forceinline__ RowChunks(const void* W, int N, int n_chunks) : n(n_chunks) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
      row[r] = static_cast<const uint4*>(W) + static_cast<int64_t>(gemv_row<ROWS, SILU>(r, N)) * n_chunks;
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
template <int M, int ROWS, int U, bool SILU>
__global__ void __launch_bounds__(kWarps * 32) gemv_bf16_kernel(const uint16_t* __restrict__ x,
                                                                const uint16_t* __restrict__ W,
                                                                const uint16_t* __restrict__ bias, void* y, bool y_f32,
                                                                int N, int K) {
  const int tid = threadIdx.x;  // K chunks are interleaved over the whole block
  const int row0 = blockIdx.x * (SILU ? ROWS / 2 : ROWS);  // SILU: first output f of the block
  if (row0 >= (SILU ? N / 2 : N)) return;
  const int K8 = K / 8;
  const RowChunks<ROWS, U, SILU> rows(W, N, K8);
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  float acc[ROWS][M] = {};
  uint4 w[ROWS][U];
  rows.load(w, 0);  // weights do not depend on the previous kernel: their first loads overlap its tail (PDL)
  const float b = SILU ? 0.f : preload_bias<M, ROWS>(bias, row0, N);
  pdl_wait();
  pdl_trigger();
  for (int base = 0; base < K8; base += kThreads * U) {
    if (base != 0) rows.load(w, base);
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
  store_rows<M, ROWS, SILU>(acc, row0, N, b, y, y_f32);
}

// ---- int8 weights (stored q+128): a 16-byte chunk = 16 weights. Byte -> fp32 via the 2^23 magic number. ----
__device__ __forceinline__ float u8_magic(uint32_t w, uint32_t sel) {
  return __uint_as_float(__byte_perm(w, 0x4B000000u, sel)) - 8388736.0f;  // (2^23 + u) - (2^23 + 128) = q
}

template <int M, int ROWS, int U, bool SILU>
__global__ void __launch_bounds__(kWarps * 32, M == 1 ? 9 : 1) gemv_int8_kernel(const uint16_t* __restrict__ x,
                                                                const uint8_t* __restrict__ W,
                                                                const float* __restrict__ scales,
                                                                const uint16_t* __restrict__ bias, void* y, bool y_f32,
                                                                int N, int K) {
  const int tid = threadIdx.x;  // K chunks are interleaved over the whole block
  const int row0 = blockIdx.x * (SILU ? ROWS / 2 : ROWS);  // SILU: first output f of the block
  if (row0 >= (SILU ? N / 2 : N)) return;
  const int K16 = K / 16;
  const RowChunks<ROWS, U, SILU> rows(W, N, K16);
  const uint4* xv = reinterpret_cast<const uint4*>(x);  // K/8 chunks per row
  float acc[ROWS][M] = {};
  uint4 w[ROWS][U];
  rows.load(w, 0);  // before the PDL wait, as in the bf16 kernel
  float sc[ROWS];  // row scales and bias up front too: after the loop their DRAM round trip would add to every block
#pragma unroll
  for (int r = 0; r < ROWS; ++r) sc[r] = __ldg(scales + gemv_row<ROWS, SILU>(r, N));
  const float b = SILU ? 0.f : preload_bias<M, ROWS>(bias, row0, N);
  pdl_wait();
  pdl_trigger();
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
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] *= sc[r];
  store_rows<M, ROWS, SILU>(acc, row0, N, b, y, y_f32);
}

// ---- int4 weights, group 128, tensor cores: one block of 8 warps per 16-row tile, warps split the K groups. ----
// Per lane and 64-K chunk: one 16-byte weight load = 4 A fragments (rows g, g+8), 32 bytes of x = 4 B fragments
// (batch column g; the k order inside a chunk is permuted identically for A and B, see int4_position). A nibble
// pair becomes an exact bf16x2 q with a shift, a LOP3 and a bf16x2 FMA (debias_i4); the mma accumulates q * x in
// fp32 over the group and the group scale is applied once per group. (A second "all-ones" mma for sum(x) instead of
// the FMA saturated the tensor pipe: M=1 uses 1/8 of each m16n8k16.)
constexpr int kI4Warps = 8;

// Two nibbles (bits 0-3 and 16-19, the rest zero) -> bf16x2 q = nibble - 8, exactly: OR in the exponent of 128
// (bf16 128 + n), then one bf16x2 FMA: (128 + n) * 1 - 136.
__device__ __forceinline__ uint32_t debias_i4(uint32_t nibbles) {
  uint32_t r;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(nibbles | 0x43004300u), "r"(0x3F803F80u), "r"(0xC308C308u));
  return r;
}

// SILU: W = [2F][K] (gate rows, then up rows), y [M][F] bf16 = silu(gate) * up; warps 0-3 take gate tile R, warps
// 4-7 the up tile R + F/16 (F % 16 == 0).
// Each warp keeps the next U groups' weights in flight while it works on the current ones (round 6: bs1 int4
// 354 -> 362 tok/s). Splitting K over blocks was measured and dropped: slower at every split count (H100, M=1:
// qkv 1264 GB/s unsplit vs 799 at 2 splits, down 1933 vs 1719).
template <int U, bool SILU>  // groups of 128 in flight per warp
__global__ void __launch_bounds__(kI4Warps * 32) gemv_int4_mma_kernel(const uint16_t* __restrict__ x,
                                                                      const uint8_t* __restrict__ W,
                                                                      const float* __restrict__ scales,
                                                                      const uint16_t* __restrict__ bias, void* y,
                                                                      bool y_f32, int M, int N, int K) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int R = blockIdx.x + (SILU && warp >= 4 ? N / 32 : 0);  // SILU: N / 32 = F / 16 gate tiles
  const int wk = SILU ? (warp & 3) : warp, nwk = SILU ? 4 : kI4Warps;  // this warp's K share
  const int G = K / 128;
  const uint4* Wt = reinterpret_cast<const uint4*>(W) + static_cast<int64_t>(R) * (K / 64) * 32 + lane;
  const float* s_lo = scales + static_cast<int64_t>(min(R * 16 + g, N - 1)) * G;
  const float* s_hi = scales + static_cast<int64_t>(min(R * 16 + g + 8, N - 1)) * G;
  const bool has_x = g < M;
  const uint4* xr = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(min(g, M - 1)) * K) + 2 * t;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  // Weights and their group scales travel together: the scales are DRAM reads too, and loading them where they are
  // used put one DRAM round trip into every iteration.
  uint4 w[U][2], wn[U][2];
  float sc[U][2], scn[U][2];  // [group][row g, row g + 8]
  auto load_w = [&](uint4(&dst)[U][2], float(&dsc)[U][2], int gi0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const bool ok = gi0 + u < G;
#pragma unroll
      for (int q = 0; q < 2; ++q) dst[u][q] = ok ? ld_stream(Wt + (2 * (gi0 + u) + q) * 32) : make_uint4(0, 0, 0, 0);
      dsc[u][0] = ok ? __ldg(s_lo + gi0 + u) : 0.f;
      dsc[u][1] = ok ? __ldg(s_hi + gi0 + u) : 0.f;
    }
  };
  const int step = nwk * U;
  load_w(w, sc, wk * U);  // weights before the PDL wait: they overlap the previous kernel's tail
  // The epilogue's thread r * 8 + m (< 128) stores tile row r: the same mapping as store_rows with M = 8, ROWS = 16.
  const float bias_v = preload_bias<8, 16>(SILU ? nullptr : bias, blockIdx.x * 16, N);
  pdl_wait();
  pdl_trigger();
  for (int gi0 = wk * U; gi0 < G; gi0 += step) {
    uint4 xv[U][4];
    if (gi0 + step < G) load_w(wn, scn, gi0 + step);  // next groups in flight during this iteration
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const bool ok = gi0 + u < G && has_x;
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int gi = gi0 + u;
        xv[u][2 * q] = ok ? __ldg(xr + (2 * gi + q) * 8) : make_uint4(0, 0, 0, 0);
        xv[u][2 * q + 1] = ok ? __ldg(xr + (2 * gi + q) * 8 + 1) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (gi0 + u >= G) break;
      float tw[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const uint32_t ww[4] = {w[u][q].x, w[u][q].y, w[u][q].z, w[u][q].w};
        const uint32_t xx[8] = {xv[u][2 * q].x,     xv[u][2 * q].y,     xv[u][2 * q].z,     xv[u][2 * q].w,
                                xv[u][2 * q + 1].x, xv[u][2 * q + 1].y, xv[u][2 * q + 1].z, xv[u][2 * q + 1].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint32_t a0 = debias_i4(ww[j] & 0x000F000Fu);
          const uint32_t a1 = debias_i4((ww[j] >> 4) & 0x000F000Fu);
          const uint32_t a2 = debias_i4((ww[j] >> 8) & 0x000F000Fu);
          const uint32_t a3 = debias_i4((ww[j] >> 12) & 0x000F000Fu);
          mma_bf16_16816(tw, a0, a1, a2, a3, xx[2 * j], xx[2 * j + 1]);
        }
      }
      acc[0] = fmaf(sc[u][0], tw[0], acc[0]);
      acc[1] = fmaf(sc[u][0], tw[1], acc[1]);
      acc[2] = fmaf(sc[u][1], tw[2], acc[2]);
      acc[3] = fmaf(sc[u][1], tw[3], acc[3]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) w[u][0] = wn[u][0], w[u][1] = wn[u][1], sc[u][0] = scn[u][0], sc[u][1] = scn[u][1];
  }
  // acc: [0] (row g, batch 2t), [1] (row g, batch 2t+1), [2] (row g+8, batch 2t), [3] (row g+8, batch 2t+1).
  __shared__ float red[kI4Warps][4][33];
#pragma unroll
  for (int i = 0; i < 4; ++i) red[warp][i][lane] = acc[i];
  __syncthreads();
  // Thread (r, m) of the first 128 sums the warps for tile row r and batch m: v0 (SILU: gate), v1 (SILU: up).
  const int r = threadIdx.x >> 3, m = threadIdx.x & 7;
  const int n0 = blockIdx.x * 16 + r;  // output row (SILU: f)
  const int Nout = SILU ? N / 2 : N;
  const bool mine = threadIdx.x < 128 && m < M && n0 < Nout;
  float v0 = 0.f, v1 = 0.f;
  if (mine) {
    const int src_lane = (r & 7) * 4 + (m >> 1), idx = (r >> 3) * 2 + (m & 1);
#pragma unroll
    for (int w4 = 0; w4 < 4; ++w4) {
      v0 += red[w4][idx][src_lane];
      if (SILU)
        v1 += red[w4 + 4][idx][src_lane];
      else
        v0 += red[w4 + 4][idx][src_lane];
    }
  }
  if (!mine) return;
  if (SILU) {
    static_cast<uint16_t*>(y)[static_cast<int64_t>(m) * Nout + n0] = f2bf(silu_mul_f(v0, v1));
    return;
  }
  const float v = v0 + bias_v;
  if (y_f32)
    static_cast<float*>(y)[static_cast<int64_t>(m) * N + n0] = v;
  else
    static_cast<uint16_t*>(y)[static_cast<int64_t>(m) * N + n0] = f2bf(v);
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
template <typename Fn>
void for_m_chunks(const bf16_t* x, int K, void* y, int64_t y_row_bytes, int M, Fn&& f) {
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

// One warp per (row, group of 128); lane holds k = 128*gi + 4*lane + i (i = 0..3): one (t, j) word half of the
// tiled layout, shared with row n^8, hence atomicOr into a zeroed buffer.
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
  const int k0 = gi * 128 + 4 * lane;
  const int r = n % 16, g = r % 8, hi = r / 8, kk = k0 % 64, t = kk / 16, j = (kk % 16) / 4;
  const int64_t word_byte = ((static_cast<int64_t>(n / 16) * (K / 64) + k0 / 64) * 32 + (g * 4 + t)) * 16 + j * 4;
  uint32_t part = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const uint32_t nib = static_cast<uint32_t>(static_cast<int>(fminf(fmaxf(roundf(v[e] * inv), -8.f), 7.f)) + 8);
    part |= nib << (4 * (hi + 2 * (e / 2)) + 16 * (e % 2));
  }
  atomicOr(reinterpret_cast<unsigned int*>(q + word_byte), part);
  if (lane == 0) scales[static_cast<int64_t>(n) * G + gi] = scale;
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

void gemv_int8(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
               int N, int K, cudaStream_t s) {
  CHECK(K % 16 == 0);
  for_m_chunks(x, K, y, int64_t{N} * (y_f32 ? 4 : 2), M, [&](const bf16_t* xm, void* ym, int m) {
    // 4 rows per block: at M = 1 (56 registers, 9 blocks per SM) the 7B qkv (1152 blocks), o and down (896) grids
    // are one wave each; down with 2 rows per block (1792 blocks) left a half-full second wave.
    if (K <= 4096 || N <= 4096) {
      CITADEL_GEMV_DISPATCH(gemv_int8_kernel, 4, 2, false, blocks_for<4>(N), xm, W, scales, bias, ym, y_f32, N, K);
    } else {
      CITADEL_GEMV_DISPATCH(gemv_int8_kernel, 2, 4, false, blocks_for<2>(N), xm, W, scales, bias, ym, y_f32, N, K);
    }
  });
}

void gemv_int4(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
               int N, int K, cudaStream_t s) {
  CHECK(K % 128 == 0);
  for_m_chunks(x, K, y, int64_t{N} * (y_f32 ? 4 : 2), M, [&](const bf16_t* xm, void* ym, int m) {
    launch_pdl(gemv_int4_mma_kernel<2, false>, dim3((N + 15) / 16), dim3(kI4Warps * 32), 0, s, xm, W, scales, bias,
               ym, y_f32, m, N, K);
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

void gemv_silu_int8(const bf16_t* x, const uint8_t* W, const float* scales, bf16_t* act, int M, int F, int K,
                    cudaStream_t s) {
  CHECK(K % 16 == 0);
  const int N = 2 * F;
  for_m_chunks(x, K, act, int64_t{F} * 2, M, [&](const bf16_t* xm, void* ym, int m) {
    if (K <= 4096) {
      CITADEL_GEMV_DISPATCH(gemv_int8_kernel, 4, 2, true, (F + 1) / 2, xm, W, scales, nullptr, ym, false, N, K);
    } else {
      CITADEL_GEMV_DISPATCH(gemv_int8_kernel, 2, 4, true, F, xm, W, scales, nullptr, ym, false, N, K);
    }
  });
}

void gemv_silu_int4(const bf16_t* x, const uint8_t* W, const float* scales, bf16_t* act, int M, int F, int K,
                    cudaStream_t s) {
  CHECK(K % 128 == 0 && F % 16 == 0);
  for_m_chunks(x, K, act, int64_t{F} * 2, M, [&](const bf16_t* xm, void* ym, int m) {
    launch_pdl(gemv_int4_mma_kernel<2, true>, dim3(F / 16), dim3(kI4Warps * 32), 0, s, xm, W, scales,
               static_cast<const bf16_t*>(nullptr), ym, false, m, 2 * F, K);
  });
}

void quantize_int8(const bf16_t* W, uint8_t* q, float* scales, int N, int K, cudaStream_t s) {
  quantize_int8_kernel<<<(N + 7) / 8, 256, 0, s>>>(W, q, scales, N, K);
  CUDA_LAUNCH_CHECK();
}

void quantize_int4(const bf16_t* W, uint8_t* q, float* scales, int N, int K, cudaStream_t s) {
  CHECK(K % 128 == 0);
  const int64_t groups = static_cast<int64_t>(N) * (K / 128);
  CUDA_CHECK(cudaMemsetAsync(q, 0, static_cast<size_t>(int4_weight_bytes(N, K)), s));
  quantize_int4_kernel<<<static_cast<unsigned>((groups + 7) / 8), 256, 0, s>>>(W, q, scales, N, K);
  CUDA_LAUNCH_CHECK();
}

}  // namespace citadel::cuda
