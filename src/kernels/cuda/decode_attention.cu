// Decode attention on tensor cores (one query per sequence, paged KV, GQA): the latency-bound batch-1 case.
//
// Grid (n_kv_heads, B, n_splits), 4 or 8 warps per block. A warp owns chunks of 16 tokens of the block's partition and
// keeps its own online softmax; per chunk it issues all K and V loads at once (16-byte loads straight into mma
// fragments), then
//   S[16 heads][16 tokens] = Q K^T   with mma m16n8k16 (the G query heads of the KV head are the A rows, zero-padded),
//   O[16 heads][D]        += P V     with the probabilities repacked from the S accumulators into A fragments.
// No shared memory and no block barrier until the end: the warps' partials are combined once through shared memory,
// then either written out (one split) or written as a split partial; the last block of each (sequence, KV head) to
// arrive merges the splits (arrival counter at the start of the workspace, reset by that block).
//
// Fragment bookkeeping (lane = 4g + t). The dot product over head dims is order-free, so Q and K use the same
// permutation: in k-chunk c (16 logical k) the lane's pairs {2t, 2t+1} and {2t+8, 2t+9} are the physical dims
// 32(c/2) + 8t + 4(c%2) + {0,1} and {2,3}; one 16-byte load at dims 32j + 8t then holds the B (K) or A (Q) words of
// chunks 2j and 2j+1. S tile nt (tokens base + 8nt + n): c0/c1 = head g, tokens 2t/2t+1; c2/c3 = head g+8. Those are
// exactly the A fragment layout of P with k = token - base. For P V the output dims are permuted too: n-tile j,
// column n is dim DPG*n + j (DPG = D/8), so lane (g, t) needs dims [DPG*g, DPG*(g+1)) of tokens 2t, 2t+1, 2t+8,
// 2t+9: contiguous 16-byte loads, two bf16 of different tokens paired per B word by a byte permute.
#include <algorithm>
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr float kLog2e = 1.4426950408889634f;

// Word i of a 16-byte register vector (i a compile-time constant after unrolling: no local-memory array).
__device__ __forceinline__ uint32_t u4w(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// Physical slot of token t of sequence b (t clamped into [0, ctx)).
__device__ __forceinline__ int64_t slot_of(const int32_t* bt, int block_size, int t) {
  return static_cast<int64_t>(__ldg(bt + t / block_size)) * block_size + t % block_size;
}

template <int D, bool BIG_G, int kWarps>  // BIG_G: G > 8, the A rows g+8 carry heads too; kWarps: 4 or 8
__global__ void __launch_bounds__(kWarps * 32) decode_mma_kernel(PagedAttention p, const uint16_t* q, int q_stride,
                                                                 uint16_t* out, int n_splits, int partition,
                                                                 float* ws) {
  constexpr int NJ = D / 32;   // 16-byte K loads per token per lane (dims 32j + 8t)
  constexpr int DPG = D / 8;   // output dims per lane group = P V n-tiles
  constexpr int VL = DPG / 8;  // 16-byte V loads per token per lane
  const int kvh = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int G = p.n_heads / p.n_kv_heads;
  // Everything here comes from the host-written step inputs, not from the previous kernel: before the PDL wait.
  const int ctx = __ldg(p.seq_lens + b);
  // Sliding window: the query (position ctx - 1) sees the last p.window keys; splits before them are empty.
  const int start = max(split * partition, p.window > 0 ? ctx - p.window : 0);
  const int end = min(ctx, split * partition + partition);
  const int n = end - start;
  const int n_chunks = n > 0 ? (n + 15) / 16 : 0;
  const int row_elems = p.n_kv_heads * D;
  const int32_t* bt = p.block_tables + static_cast<int64_t>(b) * p.max_blocks_per_seq;
  const uint16_t* kbase = p.k_pool + kvh * D + 8 * t;
  const uint16_t* vbase = p.v_pool + kvh * D + DPG * g;
  pdl_wait();
  pdl_trigger();

  // Q fragments: qa[c][0..3] for k-chunk c (a1/a3 = heads g+8, zero unless BIG_G).
  uint32_t qa[2 * NJ][4];
  {
    const uint16_t* qb = q + static_cast<int64_t>(b) * q_stride + static_cast<int64_t>(kvh) * G * D + 8 * t;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      uint4 lo = make_uint4(0, 0, 0, 0), hi = make_uint4(0, 0, 0, 0);
      if (g < G) lo = *reinterpret_cast<const uint4*>(qb + g * D + 32 * j);
      if (BIG_G && g + 8 < G) hi = *reinterpret_cast<const uint4*>(qb + (g + 8) * D + 32 * j);
      qa[2 * j][0] = lo.x, qa[2 * j][2] = lo.y, qa[2 * j + 1][0] = lo.z, qa[2 * j + 1][2] = lo.w;
      qa[2 * j][1] = hi.x, qa[2 * j][3] = hi.y, qa[2 * j + 1][1] = hi.z, qa[2 * j + 1][3] = hi.w;
    }
  }
  const float sl2 = p.scale * kLog2e;  // scores in log2 units: exp2f below
  float o[DPG][4];
#pragma unroll
  for (int j = 0; j < DPG; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m0 = -FLT_MAX, m1 = -FLT_MAX, l0 = 0.f, l1 = 0.f;  // heads g, g+8 (this lane's share of l)

  for (int c = warp; c < n_chunks; c += kWarps) {
    const int base = start + 16 * c;
    uint4 kr[2][NJ], vr[4][VL];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const uint16_t* kp = kbase + slot_of(bt, p.block_size, min(base + 8 * nt + g, end - 1)) * row_elems;
#pragma unroll
      for (int j = 0; j < NJ; ++j) kr[nt][j] = *reinterpret_cast<const uint4*>(kp + 32 * j);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int tok = base + 2 * t + (i & 1) + 8 * (i >> 1);
      const uint16_t* vp = vbase + slot_of(bt, p.block_size, min(tok, end - 1)) * row_elems;
#pragma unroll
      for (int v = 0; v < VL; ++v) vr[i][v] = *reinterpret_cast<const uint4*>(vp + 8 * v);
    }
    float s[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        mma_bf16_16816(s[nt], qa[2 * j][0], qa[2 * j][1], qa[2 * j][2], qa[2 * j][3], kr[nt][j].x, kr[nt][j].y);
        mma_bf16_16816(s[nt], qa[2 * j + 1][0], qa[2 * j + 1][1], qa[2 * j + 1][2], qa[2 * j + 1][3], kr[nt][j].z,
                       kr[nt][j].w);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool ok = base + 8 * nt + 2 * t + (e & 1) < end;
        s[nt][e] = ok ? s[nt][e] * sl2 : -INFINITY;
      }
    }
    // Online softmax per head row; the row's 16 scores live in the 4 lanes of group g.
    float mx0 = fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1]));
    float mx1 = fmaxf(fmaxf(s[0][2], s[0][3]), fmaxf(s[1][2], s[1][3]));
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);  // finite: every chunk holds a real token
    const float a0 = exp2f(m0 - mn0), a1 = exp2f(m1 - mn1);
    m0 = mn0, m1 = mn1;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - mn0), s[nt][1] = exp2f(s[nt][1] - mn0);
      s[nt][2] = exp2f(s[nt][2] - mn1), s[nt][3] = exp2f(s[nt][3] - mn1);
    }
    l0 = l0 * a0 + (s[0][0] + s[0][1] + s[1][0] + s[1][1]);
    l1 = l1 * a1 + (s[0][2] + s[0][3] + s[1][2] + s[1][3]);
    const uint32_t pa0 = pack_bf16x2(s[0][0], s[0][1]), pa1 = pack_bf16x2(s[0][2], s[0][3]);
    const uint32_t pa2 = pack_bf16x2(s[1][0], s[1][1]), pa3 = pack_bf16x2(s[1][2], s[1][3]);
#pragma unroll
    for (int j = 0; j < DPG; ++j) {
      o[j][0] *= a0, o[j][1] *= a0, o[j][2] *= a1, o[j][3] *= a1;
      const uint32_t sel = (j & 1) ? 0x7632u : 0x5410u;
      const int w = j >> 1;  // the lane's 32-bit word holding dims DPG*g + 2w, +1
      const uint32_t b0 = __byte_perm(u4w(vr[0][w >> 2], w & 3), u4w(vr[1][w >> 2], w & 3), sel);
      const uint32_t b1 = __byte_perm(u4w(vr[2][w >> 2], w & 3), u4w(vr[3][w >> 2], w & 3), sel);
      mma_bf16_16816(o[j], pa0, pa1, pa2, pa3, b0, b1);
    }
  }
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }

  // Combine the 4 warps: stats, then each warp rescales its rows to the block max and parks them in shared memory.
  extern __shared__ float smem[];
  constexpr int kPitch = D + 4;
  float* ms = smem;                         // [kWarps][16] row max (log2 units)
  float* ls = ms + kWarps * 16;             // [kWarps][16] row sum
  float* os = ls + kWarps * 16;             // [kWarps][G][kPitch]
  if (t == 0) {
    ms[warp * 16 + g] = m0, ls[warp * 16 + g] = l0;
    ms[warp * 16 + g + 8] = m1, ls[warp * 16 + g + 8] = l1;
  }
  __syncthreads();
  {
    float M0 = -FLT_MAX, M1 = -FLT_MAX;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M0 = fmaxf(M0, ms[w * 16 + g]), M1 = fmaxf(M1, ms[w * 16 + g + 8]);
    const float f0 = l0 > 0.f ? exp2f(m0 - M0) : 0.f, f1 = l1 > 0.f ? exp2f(m1 - M1) : 0.f;
    float* r0 = os + (warp * G + g) * kPitch + DPG * 2 * t;
    float* r1 = os + (warp * G + g + 8) * kPitch + DPG * 2 * t;
#pragma unroll
    for (int j = 0; j < DPG; ++j) {
      if (g < G) r0[j] = o[j][0] * f0, r0[DPG + j] = o[j][1] * f0;
      if (BIG_G && g + 8 < G) r1[j] = o[j][2] * f1, r1[DPG + j] = o[j][3] * f1;
    }
  }
  __syncthreads();
  if (n_splits > 1) ws += kDecodeCounters;  // partials after the counters
  const int64_t part_base = (static_cast<int64_t>(b) * p.n_heads + kvh * G) * n_splits + split;  // + h*n_splits
  float* ml = ws + static_cast<int64_t>(gridDim.y) * p.n_heads * n_splits * D;
  for (int i = threadIdx.x; i < G * (D / 2); i += blockDim.x) {
    const int h = i / (D / 2), d = 2 * (i % (D / 2));
    float M = -FLT_MAX, L = 0.f, x0 = 0.f, x1 = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, ms[w * 16 + h]);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float lw = ls[w * 16 + h];
      if (lw > 0.f) L += lw * exp2f(ms[w * 16 + h] - M);
      x0 += os[(w * G + h) * kPitch + d], x1 += os[(w * G + h) * kPitch + d + 1];
    }
    if (n_splits == 1) {
      const float inv = L > 0.f ? 1.f / L : 0.f;
      reinterpret_cast<uint32_t*>(out + (static_cast<int64_t>(b) * p.n_heads + kvh * G + h) * D)[d / 2] =
          pack_bf16x2(x0 * inv, x1 * inv);
    } else {
      *reinterpret_cast<float2*>(ws + (part_base + static_cast<int64_t>(h) * n_splits) * D + d) = make_float2(x0, x1);
      if (d == 0) {
        ml[2 * (part_base + h * n_splits)] = L > 0.f ? M : -FLT_MAX;
        ml[2 * (part_base + h * n_splits) + 1] = L;
      }
    }
  }
  if (n_splits == 1) return;

  // Merge by the last block of (b, kvh) to arrive.
  if (!split_arrived_last(ws, b * p.n_kv_heads + kvh, n_splits)) return;
  const int64_t base0 = part_base - split;  // (b, head kvh*G, split 0)
  float* wts = os;                          // [G][n_splits] weights e^(m_s - M) / L (0 for empty splits)
  for (int h = warp; h < G; h += kWarps) {
    const float* mlh = ml + 2 * (base0 + static_cast<int64_t>(h) * n_splits);
    float mx = -FLT_MAX;
    for (int s2 = lane; s2 < n_splits; s2 += 32) mx = fmaxf(mx, __ldcg(mlh + 2 * s2));
    mx = warp_max(mx);
    float l = 0.f;
    for (int s2 = lane; s2 < n_splits; s2 += 32) {
      const float lsv = __ldcg(mlh + 2 * s2 + 1);
      const float e = lsv > 0.f ? exp2f(__ldcg(mlh + 2 * s2) - mx) : 0.f;
      wts[h * n_splits + s2] = e;
      l += lsv * e;
    }
    l = warp_sum(l);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    __syncwarp();
    for (int s2 = lane; s2 < n_splits; s2 += 32) wts[h * n_splits + s2] *= inv;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * (D / 2); i += blockDim.x) {
    const int h = i / (D / 2), d = 2 * (i % (D / 2));
    const float* src = ws + (base0 + static_cast<int64_t>(h) * n_splits) * D + d;
    const float* w = wts + h * n_splits;
    float x0 = 0.f, x1 = 0.f;
#pragma unroll 4
    for (int s2 = 0; s2 < n_splits; ++s2) {
      if (w[s2] == 0.f) continue;  // empty splits hold no partial (maybe garbage)
      const float2 v = __ldcg(reinterpret_cast<const float2*>(src + static_cast<int64_t>(s2) * D));
      x0 = fmaf(v.x, w[s2], x0), x1 = fmaf(v.y, w[s2], x1);
    }
    reinterpret_cast<uint32_t*>(out + (static_cast<int64_t>(b) * p.n_heads + kvh * G + h) * D)[d / 2] =
        pack_bf16x2(x0, x1);
  }
}

// Warps per block: 8 when the grid cannot fill the GPU (batch 1: a warp's chunks are sequential round trips to
// memory, so more warps per block = shorter chains), else 4 (more resident blocks per SM at 168 registers).
template <int D, bool BIG_G>
void launch_decode_mma(const PagedAttention& p, const bf16_t* q, int q_stride, bf16_t* out, int B, int n_splits,
                       int partition, float* ws, cudaStream_t s) {
  const int G = p.n_heads / p.n_kv_heads;
  const bool wide = int64_t{B} * p.n_kv_heads * n_splits < 132;
  const size_t warps = wide ? 8 : 4;
  const size_t stats = 2 * warps * 16;
  const size_t smem = sizeof(float) * (stats + std::max(warps * static_cast<size_t>(G) * (D + 4),
                                                        static_cast<size_t>(G) * static_cast<size_t>(n_splits)));
  static bool configured = false;  // idempotent attributes; the flag only skips the calls
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(decode_mma_kernel<D, BIG_G, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    96 * 1024));
    CUDA_CHECK(cudaFuncSetAttribute(decode_mma_kernel<D, BIG_G, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    96 * 1024));
    configured = true;
  }
  CHECK(smem <= 96 * 1024);
  const dim3 grid(p.n_kv_heads, B, n_splits);
  if (wide)
    launch_pdl(decode_mma_kernel<D, BIG_G, 8>, grid, dim3(8 * 32), smem, s, p, q, q_stride, out, n_splits, partition,
               ws);
  else
    launch_pdl(decode_mma_kernel<D, BIG_G, 4>, grid, dim3(4 * 32), smem, s, p, q, q_stride, out, n_splits, partition,
               ws);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

bool decode_mma_supported(const PagedAttention& p, int partition) {
  return (p.head_dim == 64 || p.head_dim == 128) && partition % 16 == 0 && partition > 0;
}

void paged_attention_decode_mma(const PagedAttention& p, const bf16_t* q, int q_stride, bf16_t* out, int B,
                                int n_splits, int partition, float* workspace, cudaStream_t s) {
  if (B <= 0) return;
  const int G = p.n_heads / p.n_kv_heads;
  CHECK(G >= 1 && G <= 16 && p.n_heads % p.n_kv_heads == 0);
  CHECK(decode_mma_supported(p, partition));
  CHECK(n_splits == 1 || (workspace != nullptr && B * p.n_kv_heads <= kDecodeCounters));
  if (p.head_dim == 128) {
    if (G > 8) launch_decode_mma<128, true>(p, q, q_stride, out, B, n_splits, partition, workspace, s);
    else launch_decode_mma<128, false>(p, q, q_stride, out, B, n_splits, partition, workspace, s);
  } else {
    if (G > 8) launch_decode_mma<64, true>(p, q, q_stride, out, B, n_splits, partition, workspace, s);
    else launch_decode_mma<64, false>(p, q, q_stride, out, B, n_splits, partition, workspace, s);
  }
}

}  // namespace citadel::cuda
