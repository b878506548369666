// Mixture-of-experts kernels (moe.h): routing, the counting sort of (token, choice) pairs by expert, the grouped
// expert GEMVs and the weighted combine. Kernels first, launchers after.
#include "kernels/cuda/moe.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe_tiles.cuh"

namespace citadel::cuda {
namespace {

using namespace dev;

// ---- routing: one block per token, thread e owns expert e ----
constexpr int kRouteThreads = kMoeMaxExperts;

// exp(x) rounded once to fp32 (double exp, then one rounding): what a correctly rounded host expf gives, so the
// scores, and with them the choice and its ties, are the CPU reference's.
__device__ __forceinline__ float exp_rn(float x) { return static_cast<float>(exp(static_cast<double>(x))); }

// a ranks before b: higher value, ties to the lower index (model/moe.h).
__device__ __forceinline__ bool ranks_before(float va, int a, float vb, int b) { return va > vb || (va == vb && a < b); }

__global__ void __launch_bounds__(kRouteThreads) moe_route_kernel(const float* __restrict__ logits,
                                                                  const float* __restrict__ bias, MoeRouting r,
                                                                  int32_t* __restrict__ ids,
                                                                  float* __restrict__ weights) {
  __shared__ float score[kMoeMaxExperts], choice[kMoeMaxExperts], group[kMoeMaxExperts];
  __shared__ float red[kRouteThreads / 32];
  __shared__ float sel_w[kMoeMaxUsed];
  __shared__ int sel_id[kMoeMaxUsed];
  __shared__ bool keep[kMoeMaxExperts];
  __shared__ float total;
  const int t = blockIdx.x, e = threadIdx.x, lane = e & 31, warp = e >> 5;
  const int E = r.n_experts, k = r.n_used;
  pdl_wait();
  pdl_trigger();  // not early: the gate|up launch after it could only wait, holding the side stream's SMs
  const float l = e < E ? logits[static_cast<int64_t>(t) * E + e] : -INFINITY;
  if (r.sigmoid) {
    if (e < E) score[e] = 1.0f / (1.0f + exp_rn(-l));
  } else {
    const float m = warp_max(l);
    if (lane == 0) red[warp] = m;
    __syncthreads();
    float mx = red[0];
#pragma unroll
    for (int w = 1; w < kRouteThreads / 32; ++w) mx = fmaxf(mx, red[w]);
    if (e < E) score[e] = exp_rn(l - mx);
    __syncthreads();
    if (e == 0) {  // the reference's summation order, so the scores are its bits
      float sum = 0.f;
      for (int i = 0; i < E; ++i) sum += score[i];
      total = sum;
    }
    __syncthreads();
    if (e < E) score[e] = score[e] / total;
  }
  if (e < E) choice[e] = score[e] + (r.sigmoid && bias != nullptr ? bias[e] : 0.0f);
  __syncthreads();
  const int G = r.n_group;
  if (G > 1 && r.topk_group < G) {
    const int per = E / G;
    if (e < G) {  // group score: best choice (V2), or the sum of the best two (V3)
      float b1 = -INFINITY, b2 = -INFINITY;
      for (int i = e * per; i < (e + 1) * per; ++i) {
        const float v = choice[i];
        if (v > b1) {
          b2 = b1, b1 = v;
        } else if (v > b2) {
          b2 = v;
        }
      }
      group[e] = r.sigmoid && per >= 2 ? b1 + b2 : b1;
    }
    __syncthreads();
    if (e < G) {
      int rank = 0;
      for (int h = 0; h < G; ++h) rank += ranks_before(group[h], h, group[e], e);
      keep[e] = rank < r.topk_group;
    }
    __syncthreads();
    if (e < E && !keep[e / per]) choice[e] = -INFINITY;
    __syncthreads();
  }
  if (e < E) {  // rank in the total order (choice desc, id asc): the first k are the selection, in order
    const float c = choice[e];
    int rank = 0;
    for (int i = 0; i < E; ++i) rank += ranks_before(choice[i], i, c, e);
    if (rank < k) sel_id[rank] = e, sel_w[rank] = score[e];
  }
  __syncthreads();
  if (e == 0) {
    const int64_t row = static_cast<int64_t>(t) * (k + r.n_shared);
    float sum = 0.f;
    for (int i = 0; i < k; ++i) sum += sel_w[i];
    for (int i = 0; i < k; ++i) {
      float w = sel_w[i];
      if (r.norm_topk) w /= sum + 1e-20f;
      w *= r.routed_scale;
      const int id = sel_id[i];
      const bool held = r.expert_end <= r.expert_begin || (id >= r.expert_begin && id < r.expert_end);
      ids[row + i] = held ? id - r.expert_begin : -1;  // expert parallel: another rank's expert
      weights[row + i] = held ? w : 0.f;
    }
    for (int i = 0; i < r.n_shared; ++i) ids[row + k + i] = E + i, weights[row + k + i] = 1.f;
  }
}

// ---- counting sort: one block of 32 warps; warp w owns the contiguous segment w of the pairs ----
constexpr int kSortWarps = 32;

__global__ void __launch_bounds__(kSortWarps * 32) moe_sort_kernel(const int32_t* __restrict__ ids, int N, int E,
                                                                   int32_t* __restrict__ offsets,
                                                                   int32_t* __restrict__ pairs) {
  __shared__ int base[kSortWarps][kMoeMaxSlots];  // counts of (segment, expert), then their first slot
  __shared__ int start[kMoeMaxSlots];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  pdl_wait();
  pdl_trigger();
  for (int i = tid; i < kSortWarps * kMoeMaxSlots; i += kSortWarps * 32) (&base[0][0])[i] = 0;
  __syncthreads();
  const int seg = (N + kSortWarps - 1) / kSortWarps, begin = min(N, warp * seg), end = min(N, begin + seg);
  for (int i = begin + lane; i < end; i += 32)
    if (ids[i] >= 0) atomicAdd(&base[warp][ids[i]], 1);
  __syncthreads();
  if (tid < E) {  // exclusive prefix over the segments; the expert's total
    int s = 0;
    for (int w = 0; w < kSortWarps; ++w) {
      const int c = base[w][tid];
      base[w][tid] = s;
      s += c;
    }
    start[tid] = s;
  }
  __syncthreads();
  if (warp == 0) {  // exclusive scan of the totals over the experts: lane owns experts 8*lane .. 8*lane+7
    constexpr int P = kMoeMaxSlots / 32;
    int v[P], s = 0;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int x = lane * P + j;
      v[j] = x < E ? start[x] : 0;
      s += v[j];
    }
    int ex = warp_inclusive_sum(s) - s;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const int x = lane * P + j;
      if (x < E) start[x] = ex;
      ex += v[j];
    }
    if (lane == 31) offsets[E] = ex;  // the pairs sorted: N less those of no expert (id -1)
  }
  __syncthreads();
  if (tid < E) {
    offsets[tid] = start[tid];
    for (int w = 0; w < kSortWarps; ++w) base[w][tid] += start[tid];
  }
  __syncthreads();
  const unsigned lt = (1u << lane) - 1u;
  for (int i0 = begin; i0 < end; i0 += 32) {  // in order: lanes with one expert take consecutive slots
    const int i = i0 + lane;
    const bool valid = i < end;
    const int x = valid ? ids[i] : -1;
    const bool placed = x >= 0;  // id -1: another rank's expert (moe_route with an expert range)
    const unsigned same = __match_any_sync(0xffffffffu, x);
    const int rank = __popc(same & lt);
    if (placed) pairs[base[warp][x] + rank] = i;
    __syncwarp();
    if (placed && rank == 0) base[warp][x] += __popc(same);
    __syncwarp();
  }
}

// ---- grouped expert GEMV: grid (row tiles, E), kGroupWarps warps of R output rows each ----
// out[p][n] = in[p / in_div] . W[e][n] for the pairs p of expert e (NMAT 1), or silu(gate) * up over the two
// matrices W0 = gate, W1 = up (NMAT 2, bf16 output). in [*][K] bf16, W [E][N][K] in format F (moe.h MoeMatrix).
constexpr int kGroupWarps = 8;
constexpr int kGroupThreads = kGroupWarps * 32;
constexpr int kChunk = 8;     // pairs per chunk: each weight row is read once per chunk
constexpr int kTileK = 2048;  // reduction elements per shared-memory tile of the chunk's activations (32 KiB)
constexpr int kGateUpRows = 2, kDownRows = 4;  // rows per warp

// 8 bf16 values at p (16-byte aligned shared memory) as floats.
__device__ __forceinline__ void smem_bf16x8(const uint16_t* p, float (&f)[8]) {
  bf16x8_to_f32(*reinterpret_cast<const uint4*>(p), f);
}

// The 8 weights k .. k+7 of one row in registers (k % 8 == 0), in the row's format (cuda_ops.h layouts):
//  - bf16: as loaded, converted in dot;
//  - int8: code - 128 as exact floats (0x4B0000xx is 2^23 + xx: one byte permute and one subtraction a weight); the
//    row's scale applies to the finished sum (scaled(), in the kernel's epilogue);
//  - int4: nibble - 8 likewise, and the scale of their 128-group is kept: dot() adds scale * (8-term sum). The
//    nibbles of k + b and k + 4 + b sit in byte b of one 32-bit word.
// Dequantised weights are shared by every pair of the chunk.
__device__ __forceinline__ float magic_byte(uint32_t word, int b) {  // byte b of word, as a float 2^23 + byte
  return __uint_as_float(__byte_perm(word, 0x4B000000u, static_cast<uint32_t>(b) | 0x7440u));
}
template <MoeWeightFormat F>
struct WeightRegs {
  static_assert(F == MoeWeightFormat::kInt8 || F == MoeWeightFormat::kInt4, "quantised formats");
  float w[8];
  float scale;  // int4: the group's scale (int8: unused, see scaled())
  __device__ __forceinline__ void load(const uint8_t* row, const float* srow, int k) {
    if constexpr (F == MoeWeightFormat::kInt8) {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(row + k));
      constexpr float kBias = 8388608.f + 128.f;
#pragma unroll
      for (int b = 0; b < 4; ++b) w[b] = magic_byte(v.x, b) - kBias, w[4 + b] = magic_byte(v.y, b) - kBias;
    } else {
      const uint32_t v = __ldg(reinterpret_cast<const uint32_t*>(row + k / 2));
      const uint32_t lo = v & 0x0F0F0F0Fu, hi = (v >> 4) & 0x0F0F0F0Fu;
      constexpr float kBias = 8388608.f + 8.f;
#pragma unroll
      for (int b = 0; b < 4; ++b) w[b] = magic_byte(lo, b) - kBias, w[4 + b] = magic_byte(hi, b) - kBias;
      scale = __ldg(srow + k / 128);
    }
  }
  __device__ __forceinline__ float dot(const float (&x)[8], float s) const {
    if constexpr (F == MoeWeightFormat::kInt8) {
#pragma unroll
      for (int t = 0; t < 8; ++t) s = fmaf(w[t], x[t], s);
      return s;
    } else {
      float d = 0.f;
#pragma unroll
      for (int t = 0; t < 8; ++t) d = fmaf(w[t], x[t], d);
      return fmaf(d, scale, s);
    }
  }
  // The finished sum of a row (srow: its scales) in weight units.
  static __device__ __forceinline__ float scaled(float sum, const float* srow) {
    return F == MoeWeightFormat::kInt8 ? sum * __ldg(srow) : sum;
  }
};
template <>
struct WeightRegs<MoeWeightFormat::kBf16> {
  uint4 v;
  __device__ __forceinline__ void load(const uint8_t* row, const float*, int k) { v = ld_stream(row + 2 * k); }
  __device__ __forceinline__ float dot(const float (&x)[8], float s) const { return dot8(v, x, s); }
  static __device__ __forceinline__ float scaled(float sum, const float*) { return sum; }
};

// Bytes of a row of K weights in format F (int4: K % 128 == 0) and scales per row.
__host__ __device__ constexpr int64_t row_bytes(MoeWeightFormat f, int K) {
  return f == MoeWeightFormat::kBf16 ? 2 * int64_t{K} : f == MoeWeightFormat::kInt8 ? K : K / 2;
}
__host__ __device__ constexpr int scales_per_row(MoeWeightFormat f, int K) {
  return f == MoeWeightFormat::kInt4 ? K / 128 : 1;
}

template <int NMAT, int R, MoeWeightFormat F>
__global__ void __launch_bounds__(kGroupThreads) moe_grouped_kernel(const uint16_t* __restrict__ in, int in_div,
                                                                    int E, const int32_t* __restrict__ offsets,
                                                                    const int32_t* __restrict__ pairs,
                                                                    MoeMatrix m0, MoeMatrix m1, int N, int K,
                                                                    void* __restrict__ out) {
  constexpr bool kQuant = F != MoeWeightFormat::kBf16;
  __shared__ __align__(16) uint16_t xs[kChunk][kTileK];
  __shared__ int prow[kChunk];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  pdl_wait();
  pdl_trigger();
  int begin = 0;
  const int e = moe_tile_of_slot(offsets, E, INT_MAX, static_cast<int>(blockIdx.y), &begin);
  if (e < 0) return;
  const int end = offsets[e + 1];
  const int n0 = (blockIdx.x * kGroupWarps + warp) * R;
  const uint8_t* wrow[NMAT * R];
  const float* srow[NMAT * R];
#pragma unroll
  for (int m = 0; m < NMAT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const MoeMatrix& mat = m == 0 ? m0 : m1;
      const int64_t row = static_cast<int64_t>(e) * N + min(n0 + r, N - 1);
      wrow[m * R + r] = static_cast<const uint8_t*>(mat.w) + row * row_bytes(F, K);
      srow[m * R + r] = kQuant ? mat.scales + row * scales_per_row(F, K) : nullptr;
    }
  for (int c0 = begin; c0 < end; c0 += kChunk) {
    const int nc = min(kChunk, end - c0);
    float acc[NMAT * R][kChunk] = {};
    for (int k0 = 0; k0 < K; k0 += kTileK) {
      const int kt = min(kTileK, K - k0), kv = kt / 8;
      __syncthreads();  // the previous tile (and chunk) is consumed
      if (threadIdx.x < nc) prow[threadIdx.x] = pairs[c0 + threadIdx.x];
      for (int idx = threadIdx.x; idx < nc * kv; idx += kGroupThreads) {
        const int c = idx / kv, v = idx - c * kv;
        const int64_t row = pairs[c0 + c] / in_div;
        *reinterpret_cast<uint4*>(&xs[c][v * 8]) = *reinterpret_cast<const uint4*>(in + row * K + k0 + v * 8);
      }
      __syncthreads();
      if (n0 >= N) continue;
#pragma unroll 2
      for (int i = lane * 8; i < kt; i += 32 * 8) {
        WeightRegs<F> w[NMAT * R];
#pragma unroll
        for (int j = 0; j < NMAT * R; ++j) w[j].load(wrow[j], srow[j], k0 + i);
#pragma unroll
        for (int c = 0; c < kChunk; ++c) {
          if (c >= nc) break;
          float xf[8];
          smem_bf16x8(&xs[c][i], xf);
#pragma unroll
          for (int j = 0; j < NMAT * R; ++j) acc[j][c] = w[j].dot(xf, acc[j][c]);
        }
      }
    }
    if (n0 >= N) continue;
#pragma unroll
    for (int c = 0; c < kChunk; ++c) {
      if (c >= nc) break;
#pragma unroll
      for (int j = 0; j < NMAT * R; ++j) acc[j][c] = warp_sum(acc[j][c]);
      if (lane != 0) continue;
      const int64_t p = prow[c];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (n0 + r >= N) break;
        if constexpr (NMAT == 2) {
          const float g = WeightRegs<F>::scaled(acc[r][c], srow[r]);
          const float u = WeightRegs<F>::scaled(acc[R + r][c], srow[R + r]);
          static_cast<uint16_t*>(out)[p * N + n0 + r] = f2bf(g / (1.f + expf(-g)) * u);
        } else {
          static_cast<float*>(out)[p * N + n0 + r] = WeightRegs<F>::scaled(acc[r][c], srow[r]);
        }
      }
    }
  }
}

// ---- per-pair GEMV for steps of few tokens: grid (row tiles, T*n pairs), W warps splitting K ----
// Grid row y is choice first + y % n of token y / n: pair (y / n) * k + first + y % n.
// A block takes RB output rows of one pair's expert (ids[pair]): no sort, no expert lookup, and every thread's share
// of the block's weight rows (RB rows per matrix, U 16-byte chunks each) is in flight at once, as in the dense
// GEMV (gemv.cu). An expert chosen by several tokens of the step is streamed once per pair (the later ones mostly
// from L2).
template <int NMAT, int RB, int U, int W>
__global__ void __launch_bounds__(W * 32) moe_pair_kernel(const uint16_t* __restrict__ in, int in_div,
                                                          const int32_t* __restrict__ ids,
                                                          const uint16_t* __restrict__ w0,
                                                          const uint16_t* __restrict__ w1, int N, int K, int k,
                                                          MoePairLaunch ch, void* __restrict__ out) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int y = blockIdx.y, pair = (y / ch.count) * k + ch.first + y % ch.count;
  const int n0 = blockIdx.x * RB, K8 = K / 8;
  const uint4* rows[NMAT * RB];
  uint4 w[NMAT * RB][U];
  auto load = [&](int base) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * (W * 32) + tid;
#pragma unroll
      for (int j = 0; j < NMAT * RB; ++j) w[j][u] = i < K8 ? ld_stream(rows[j] + i) : make_uint4(0, 0, 0, 0);
    }
  };
  int64_t e = -1;
  auto first_loads = [&] {
    e = ids[pair];
    if (e < 0) return;  // another rank's expert (moe_route with an expert range): no work
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
#pragma unroll
      for (int r = 0; r < RB; ++r)
        rows[m * RB + r] = reinterpret_cast<const uint4*>(m == 0 ? w0 : w1) + (e * N + min(n0 + r, N - 1)) * K8;
    load(0);
  };
  if (ch.early_ids) first_loads();
  pdl_wait();
  pdl_trigger();  // after the wait, not early: the down launch after a gate|up one reads the ids before its wait
  if (!ch.early_ids) first_loads();
  if (e < 0) return;  // the whole block: one pair
  const uint4* x = reinterpret_cast<const uint4*>(in + static_cast<int64_t>(pair / in_div) * K);
  float acc[NMAT * RB] = {};
  for (int base = 0; base < K8; base += (W * 32) * U) {
    if (base != 0) load(base);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * (W * 32) + tid;
      if (i >= K8) break;
      float xf[8];
      bf16x8_to_f32(__ldg(x + i), xf);
#pragma unroll
      for (int j = 0; j < NMAT * RB; ++j) acc[j] = dot8(w[j][u], xf, acc[j]);
    }
  }
  __shared__ float red[W][NMAT * RB];
#pragma unroll
  for (int j = 0; j < NMAT * RB; ++j) {
    const float v = warp_sum(acc[j]);
    if (lane == 0) red[warp][j] = v;
  }
  __syncthreads();
  if (tid >= RB || n0 + tid >= N) return;
  float s[NMAT];
#pragma unroll
  for (int m = 0; m < NMAT; ++m) {
    s[m] = 0.f;
#pragma unroll
    for (int wp = 0; wp < W; ++wp) s[m] += red[wp][m * RB + tid];
  }
  const int64_t at = static_cast<int64_t>(pair) * N + n0 + tid;
  if constexpr (NMAT == 2)
    static_cast<uint16_t*>(out)[at] = f2bf(s[0] / (1.f + expf(-s[0])) * s[1]);
  else
    static_cast<float*>(out)[at] = s[0];
}

// ---- combine: thread = 4 consecutive outputs of one token ----
constexpr int kCombineThreads = 256;

// SKIP: choices of weight 0 are left out (their y rows may be unwritten); without it every y load is issued at once.
template <bool SKIP>
__global__ void __launch_bounds__(kCombineThreads) moe_combine_kernel(const float* __restrict__ y,
                                                                      const float* __restrict__ weights, int k, int D,
                                                                      float* __restrict__ out, bool accumulate) {
  const int t = blockIdx.y, n = (blockIdx.x * kCombineThreads + threadIdx.x) * 4;
  pdl_trigger_early();
  pdl_wait();
  pdl_trigger_late();
  if (n >= D) return;
  float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int j = 0; j < k; ++j) {
    const float w = weights[static_cast<int64_t>(t) * k + j];
    if (SKIP && w == 0.f) continue;  // another rank's expert: its y row was not written
    const float4 v = *reinterpret_cast<const float4*>(y + (static_cast<int64_t>(t) * k + j) * D + n);
    s.x = fmaf(w, v.x, s.x), s.y = fmaf(w, v.y, s.y), s.z = fmaf(w, v.z, s.z), s.w = fmaf(w, v.w, s.w);
  }
  float4* o = reinterpret_cast<float4*>(out + static_cast<int64_t>(t) * D + n);
  if (accumulate) {
    const float4 a = *o;
    s.x += a.x, s.y += a.y, s.z += a.z, s.w += a.w;
  }
  *o = s;
}

}  // namespace

void moe_route(const float* logits, const float* bias, const MoeRouting& r, int T, int32_t* ids, float* weights,
               cudaStream_t s) {
  CHECK(r.n_experts >= 1 && r.n_experts <= kMoeMaxExperts);
  CHECK(r.n_used >= 1 && r.n_used <= kMoeMaxUsed && r.n_used <= r.n_experts);
  CHECK(r.n_shared >= 0 && r.n_experts + r.n_shared <= kMoeMaxSlots);
  if (r.n_group > 1 && r.topk_group < r.n_group) CHECK(r.topk_group >= 1 && r.n_experts % r.n_group == 0);
  if (T <= 0) return;
  launch_pdl(moe_route_kernel, dim3(T), dim3(kRouteThreads), 0, s, logits, bias, r, ids, weights);
  CUDA_LAUNCH_CHECK();
}

void moe_sort(const int32_t* ids, int T, int k, int E, int32_t* offsets, int32_t* pairs, cudaStream_t s) {
  CHECK(T >= 0 && k >= 1 && E >= 1 && E <= kMoeMaxSlots);
  CHECK(static_cast<int64_t>(T) * k <= kMoeMaxPairs);
  launch_pdl(moe_sort_kernel, dim3(1), dim3(kSortWarps * 32), 0, s, ids, T * k, E, offsets, pairs);
  CUDA_LAUNCH_CHECK();
}

// Expert slots of the GEMV grids: at most one per expert, and no more than there are pairs.
unsigned expert_slots(int T, int k, int E) {
  return static_cast<unsigned>(std::max(1, static_cast<int>(std::min<int64_t>(E, int64_t{T} * k))));
}

namespace {

// One grouped GEMV launch: NMAT matrices of N rows over K, R rows per warp, the kernel of the matrices' format.
template <int NMAT, int R>
void launch_grouped(const bf16_t* in, int in_div, int T, int k, int E, const int32_t* offsets, const int32_t* pairs,
                    const MoeMatrix& m0, const MoeMatrix& m1, int N, int K, void* out, cudaStream_t s) {
  CHECK(T >= 0 && k >= 1 && E >= 1 && E <= kMoeMaxSlots && N >= 8 && K >= 8 && N % 8 == 0 && K % 8 == 0);
  CHECK(m0.fmt == m1.fmt && aligned16(in) && aligned16(m0.w) && aligned16(m1.w));
  CHECK(m0.fmt == MoeWeightFormat::kBf16 || (m0.scales && m1.scales));
  CHECK(m0.fmt != MoeWeightFormat::kInt4 || K % 128 == 0);
  if (T == 0) return;
  constexpr int rows = kGroupWarps * R;
  const dim3 grid((N + rows - 1) / rows, expert_slots(T, k, E));
  auto* kernel = m0.fmt == MoeWeightFormat::kInt8   ? moe_grouped_kernel<NMAT, R, MoeWeightFormat::kInt8>
                 : m0.fmt == MoeWeightFormat::kInt4 ? moe_grouped_kernel<NMAT, R, MoeWeightFormat::kInt4>
                                                    : moe_grouped_kernel<NMAT, R, MoeWeightFormat::kBf16>;
  launch_pdl(kernel, grid, dim3(kGroupThreads), 0, s, in, in_div, E, offsets, pairs, m0, m1, N, K, out);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void moe_gate_up_silu(const bf16_t* x, const int32_t* offsets, const int32_t* pairs, int T, int k,
                      const MoeMatrix& gate, const MoeMatrix& up, int E, int Fe, int D, bf16_t* act, cudaStream_t s) {
  launch_grouped<2, kGateUpRows>(x, k, T, k, E, offsets, pairs, gate, up, Fe, D, act, s);
}

void moe_down(const bf16_t* act, const int32_t* offsets, const int32_t* pairs, int T, int k, const MoeMatrix& down,
              int E, int D, int Fe, float* y, cudaStream_t s) {
  launch_grouped<1, kDownRows>(act, 1, T, k, E, offsets, pairs, down, down, D, Fe, y, s);
}

void moe_gate_up_silu(const bf16_t* x, const int32_t* offsets, const int32_t* pairs, int T, int k,
                      const bf16_t* gate, const bf16_t* up, int E, int Fe, int D, bf16_t* act, cudaStream_t s) {
  moe_gate_up_silu(x, offsets, pairs, T, k, MoeMatrix{gate}, MoeMatrix{up}, E, Fe, D, act, s);
}

void moe_down(const bf16_t* act, const int32_t* offsets, const int32_t* pairs, int T, int k, const bf16_t* down, int E,
              int D, int Fe, float* y, cudaStream_t s) {
  moe_down(act, offsets, pairs, T, k, MoeMatrix{down}, E, D, Fe, y, s);
}

namespace {
// Shapes of the per-pair kernels (rows per block, chunks per thread, warps), the defaults first (H100, V2-Lite, T 1:
// gate_up 23.8 us at 1 row x 2 chunks x 4 warps against 24.6 at 2 rows; down 13.0 at 4 rows x 3 chunks x 2 warps
// against 13.3 at 4 x 2 x 4); the benchmark times every one (moe_pair_*_variant).
struct PairShape {
  const char* name;
  void (*gate_up)(const bf16_t*, int, const int32_t*, const bf16_t*, const bf16_t*, int, int, int, MoePairLaunch,
                  void*, dim3, cudaStream_t);
  void (*down)(const bf16_t*, int, const int32_t*, const bf16_t*, const bf16_t*, int, int, int, MoePairLaunch, void*,
               dim3, cudaStream_t);
};
template <int NMAT, int RB, int U, int W>
void launch_pair(const bf16_t* in, int in_div, const int32_t* ids, const bf16_t* w0, const bf16_t* w1, int N, int K,
                 int k, MoePairLaunch ch, void* out, dim3 grid, cudaStream_t s) {
  grid.x = static_cast<unsigned>((N + RB - 1) / RB);
  launch_pdl(moe_pair_kernel<NMAT, RB, U, W>, grid, dim3(W * 32), 0, s, in, in_div, ids, w0, w1, N, K, k, ch, out);
  CUDA_LAUNCH_CHECK();
}
constexpr PairShape kPairShapes[] = {
    {"gu r1u2w4 dn r4u3w2", launch_pair<2, 1, 2, 4>, launch_pair<1, 4, 3, 2>},
    {"gu r2u2w4 dn r4u2w4", launch_pair<2, 2, 2, 4>, launch_pair<1, 4, 2, 4>},
    {"gu r1u2w4 dn r2u2w4", launch_pair<2, 1, 2, 4>, launch_pair<1, 2, 2, 4>},
    {"gu r4u2w4 dn r8u2w4", launch_pair<2, 4, 2, 4>, launch_pair<1, 8, 2, 4>},
    {"gu r2u1w8 dn r4u3w2", launch_pair<2, 2, 1, 8>, launch_pair<1, 4, 3, 2>},
    {"gu r4u1w8 dn r8u3w2", launch_pair<2, 4, 1, 8>, launch_pair<1, 8, 3, 2>},
    {"gu r2u4w2 dn r4u1w8", launch_pair<2, 2, 4, 2>, launch_pair<1, 4, 1, 8>},
};
constexpr int kNumPairShapes = sizeof(kPairShapes) / sizeof(kPairShapes[0]);

// The choices a per-pair launch runs (count 0: all k of them); checked against k.
MoePairLaunch pair_choices(int k, MoePairLaunch ch) {
  if (ch.count == 0) ch.first = 0, ch.count = k;
  CHECK(ch.first >= 0 && ch.count >= 1 && ch.first + ch.count <= k);
  return ch;
}
void check_pair(int T, int k, int K, const void* in, const void* w0, const void* w1) {
  CHECK(T >= 0 && k >= 1 && int64_t{T} * k <= kMoePairMaxPairs && K % 8 == 0);
  CHECK(aligned16(in) && aligned16(w0) && aligned16(w1));
}
}  // namespace

int moe_pair_variant_count() { return kNumPairShapes; }
const char* moe_pair_variant_name(int v) { return v >= 0 && v < kNumPairShapes ? kPairShapes[v].name : ""; }

void moe_pair_gate_up_silu_variant(int v, const bf16_t* x, const int32_t* ids, int T, int k, const bf16_t* gate,
                                   const bf16_t* up, int Fe, int D, bf16_t* act, cudaStream_t s, MoePairLaunch ch) {
  CHECK(v >= 0 && v < kNumPairShapes && Fe >= 1);
  check_pair(T, k, D, x, gate, up);
  ch = pair_choices(k, ch);
  if (T > 0) kPairShapes[v].gate_up(x, k, ids, gate, up, Fe, D, k, ch, act, dim3(1, T * ch.count), s);
}

void moe_pair_down_variant(int v, const bf16_t* act, const int32_t* ids, int T, int k, const bf16_t* down, int D,
                           int Fe, float* y, cudaStream_t s, MoePairLaunch ch) {
  CHECK(v >= 0 && v < kNumPairShapes && D >= 1);
  check_pair(T, k, Fe, act, down, down);
  ch = pair_choices(k, ch);
  if (T > 0) kPairShapes[v].down(act, 1, ids, down, down, D, Fe, k, ch, y, dim3(1, T * ch.count), s);
}

void moe_pair_gate_up_silu(const bf16_t* x, const int32_t* ids, int T, int k, const bf16_t* gate, const bf16_t* up,
                           int Fe, int D, bf16_t* act, cudaStream_t s, MoePairLaunch ch) {
  moe_pair_gate_up_silu_variant(0, x, ids, T, k, gate, up, Fe, D, act, s, ch);
}

void moe_pair_down(const bf16_t* act, const int32_t* ids, int T, int k, const bf16_t* down, int D, int Fe, float* y,
                   cudaStream_t s, MoePairLaunch ch) {
  moe_pair_down_variant(0, act, ids, T, k, down, D, Fe, y, s, ch);
}

void moe_combine(const float* y, const float* weights, int T, int k, int D, float* out, bool accumulate,
                 cudaStream_t s, bool skip_zero_weights) {
  CHECK(k >= 1 && D % 4 == 0 && aligned16(y) && aligned16(out));
  if (T <= 0) return;
  const int per_block = kCombineThreads * 4;
  const dim3 grid((D + per_block - 1) / per_block, T);
  if (skip_zero_weights)
    launch_pdl(moe_combine_kernel<true>, grid, dim3(kCombineThreads), 0, s, y, weights, k, D, out, accumulate);
  else
    launch_pdl(moe_combine_kernel<false>, grid, dim3(kCombineThreads), 0, s, y, weights, k, D, out, accumulate);
  CUDA_LAUNCH_CHECK();
}

}  // namespace citadel::cuda
