// Paged attention over the block pool: KV write, decode (GQA-grouped, split-K with log-sum-exp merge) and prefill
// (causal, flash-style on mma.sync bf16 tensor cores with register-resident S/P/O; the older wmma kernel that staged
// S, P and O through shared memory is kept as paged_attention_prefill_wmma for the benchmark and tests).
#include <mma.h>

#include <algorithm>
#include <cfloat>

#include "base/env.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {
namespace {

using namespace dev;

__global__ void kv_write_kernel(const uint16_t* k_src, const uint16_t* v_src, int row_stride, const int32_t* slots,
                                uint16_t* k_pool, uint16_t* v_pool, int row_elems) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x;
  const int slot = slots[t];
  if (slot < 0) return;
  const uint4* ks = reinterpret_cast<const uint4*>(k_src + static_cast<int64_t>(t) * row_stride);
  const uint4* vs = reinterpret_cast<const uint4*>(v_src + static_cast<int64_t>(t) * row_stride);
  uint4* kd = reinterpret_cast<uint4*>(k_pool + static_cast<int64_t>(slot) * row_elems);
  uint4* vd = reinterpret_cast<uint4*>(v_pool + static_cast<int64_t>(slot) * row_elems);
  for (int i = threadIdx.x; i < row_elems / 8; i += blockDim.x) {
    kd[i] = ks[i];
    vd[i] = vs[i];
  }
}


// grid (T, head_blocks): RoPE on the q and k heads of row t of the fused QKV buffer (in place; k heads follow the q
// heads); the rotated K heads and the V heads also go to the pool at slots[t] (skipped when -1). Same arithmetic as
// rope + kv_write (common.cuh's RoPE pieces). A block is `groups` groups of head_dim / 2 threads; thread group
// G = blockIdx.y * groups + g takes heads G, G + stride, ... (stride: groups x head_blocks) kRopeKvBatch at a time,
// every load issued before the first rotation, and its pair i is the same in each, so its angle (powf + sincosf) is
// computed once. The default launch is one block of 256-ish threads per token (head_blocks 1); a block per
// (token, head) of head_dim / 2 threads (head_blocks = all heads, groups 1), the earlier form, spent its time
// launching blocks (16384 for a 512-token step of the 7B shape): CITADEL_ROPE_KV_HEAD_BLOCKS=heads runs it for a
// before / after on one binary. inv_freq null: theta^(-2i/head_dim); else the table's frequencies and mscale.
constexpr int kRopeKvBatch = 8;
__global__ void rope_kv_write_kernel(uint16_t* qkv, int row_stride, int n_heads, int n_kv_heads, int head_dim,
                                     const int32_t* positions, float theta, bool neox, const int32_t* slots,
                                     uint16_t* k_pool, uint16_t* v_pool, const float* inv_freq, float mscale) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x, half = head_dim / 2, groups = static_cast<int>(blockDim.x) / half;
  const int i = static_cast<int>(threadIdx.x) % half;
  const int first = static_cast<int>(blockIdx.y) * groups + static_cast<int>(threadIdx.x) / half;
  const int stride = groups * static_cast<int>(gridDim.y), n_all = n_heads + n_kv_heads;
  const float2 cs = rope_cos_sin(i, head_dim, static_cast<float>(positions[t]), theta, inv_freq, mscale);
  const int2 ab = rope_pair_index(i, head_dim, neox);
  uint16_t* row = qkv + static_cast<int64_t>(t) * row_stride;
  const int slot = slots[t];
  uint16_t* k_dst = slot >= 0 ? k_pool + static_cast<int64_t>(slot) * n_kv_heads * head_dim : nullptr;
  for (int h0 = first; h0 < n_all; h0 += stride * kRopeKvBatch) {
    float x0[kRopeKvBatch], x1[kRopeKvBatch];
#pragma unroll
    for (int j = 0; j < kRopeKvBatch; ++j) {
      const int h = h0 + j * stride;
      if (h < n_all) x0[j] = bf16f(row[h * head_dim + ab.x]), x1[j] = bf16f(row[h * head_dim + ab.y]);
    }
#pragma unroll
    for (int j = 0; j < kRopeKvBatch; ++j) {
      const int h = h0 + j * stride;
      if (h >= n_all) break;
      const ushort2 y = rope_pair(x0[j], x1[j], cs);
      row[h * head_dim + ab.x] = y.x, row[h * head_dim + ab.y] = y.y;
      if (h >= n_heads && k_dst) {
        uint16_t* kd = k_dst + (h - n_heads) * head_dim;
        kd[ab.x] = y.x, kd[ab.y] = y.y;
      }
    }
  }
  if (slot < 0 || blockIdx.y != 0) return;
  // The V heads (the token's first block): head_dim % 16 == 0 and row_stride % 8 == 0, so 16-byte pieces.
  const uint4* vs = reinterpret_cast<const uint4*>(row + n_all * head_dim);
  uint4* vd = reinterpret_cast<uint4*>(v_pool + static_cast<int64_t>(slot) * n_kv_heads * head_dim);
  for (int c = threadIdx.x; c < n_kv_heads * head_dim / 8; c += blockDim.x) vd[c] = vs[c];
}

constexpr int kDecodeThreads = 128;
constexpr int kMaxGroup = 16;

// grid (n_kv_heads, B, n_splits). All G = n_heads/n_kv_heads query heads of one KV head share each K/V row load.
// Phase 1: a warp per token computes G dot products; phase 2: per-head softmax stats; phase 3: a thread per dim.
template <int PER_LANE>  // head_dim / 32, a compile-time constant so the K/Q fragments stay in registers
__global__ void __launch_bounds__(kDecodeThreads) paged_decode_kernel(PagedAttention p, const uint16_t* q, int q_stride,
                                                                      uint16_t* out, int n_splits, int partition,
                                                                      float* ws) {
  pdl_wait();
  pdl_trigger();
  if (n_splits > 1) ws += kDecodeCounters;  // partials after the counters
  extern __shared__ float smem[];
  const int kvh = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
  const int G = p.n_heads / p.n_kv_heads;
  const int D = p.head_dim;
  const int ctx = p.seq_lens[b];
  // Sliding window: the query (position ctx - 1) sees the last p.window keys; splits before them are empty.
  const int start = max(split * partition, p.window > 0 ? ctx - p.window : 0);
  const int end = min(ctx, split * partition + partition);
  const int n = end - start;
  float* qs = smem;                 // [G][D]
  float* sc = smem + G * D;         // [G][partition]
  float* stats = sc + G * partition;  // [G][2] max, sum
  const int64_t part_base = (static_cast<int64_t>(b) * p.n_heads + kvh * G) * n_splits + split;  // + g*n_splits
  if (n > 0) {
  const uint16_t* qb = q + static_cast<int64_t>(b) * q_stride + static_cast<int64_t>(kvh) * G * D;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) qs[i] = bf16f(qb[i]) * p.scale;
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nwarps = blockDim.x >> 5;
  const int row_elems = p.n_kv_heads * D;
  const int32_t* bt = p.block_tables + static_cast<int64_t>(b) * p.max_blocks_per_seq;
  // Phase 1: scores. Each lane covers D/32 consecutive dims; a warp takes 4 tokens at a time so that 4 row loads
  // are in flight before the first use.
  constexpr int per_lane = PER_LANE;
  for (int t0 = start + warp * 4; t0 < end; t0 += nwarps * 4) {
    float kf[4][per_lane];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int t = min(t0 + j, end - 1);
      const int64_t slot = static_cast<int64_t>(bt[t / p.block_size]) * p.block_size + t % p.block_size;
      const uint16_t* kr = p.k_pool + slot * row_elems + kvh * D + lane * per_lane;
      if constexpr (per_lane == 4) {
        const uint2 v = *reinterpret_cast<const uint2*>(kr);
        kf[j][0] = bf16_lo(v.x), kf[j][1] = bf16_hi(v.x), kf[j][2] = bf16_lo(v.y), kf[j][3] = bf16_hi(v.y);
      } else {
#pragma unroll
        for (int i = 0; i < per_lane; ++i) kf[j][i] = bf16f(kr[i]);
      }
    }
    for (int g = 0; g < G; ++g) {
      const float* qg = qs + g * D + lane * per_lane;
      float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int i = 0; i < per_lane; ++i) {
        const float qv = qg[i];
#pragma unroll
        for (int j = 0; j < 4; ++j) d[j] = fmaf(qv, kf[j][i], d[j]);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        d[j] = warp_sum(d[j]);
        if (lane == 0 && t0 + j < end) sc[g * partition + (t0 + j - start)] = d[j];
      }
    }
  }
  __syncthreads();
  // Phase 2: softmax numerators in place, per-head max and sum.
  for (int g = warp; g < G; g += nwarps) {
    float* s = sc + g * partition;
    float mx = -FLT_MAX;
    for (int i = lane; i < n; i += 32) mx = fmaxf(mx, s[i]);
    mx = warp_max(mx);
    float sum = 0.f;
    for (int i = lane; i < n; i += 32) {
      const float e = __expf(s[i] - mx);
      s[i] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    if (lane == 0) stats[2 * g] = mx, stats[2 * g + 1] = sum;
  }
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) qs[i] = 0.f;  // phase 1 is done with q: phase 3 sums here
  __syncthreads();
  // Phase 3: out[g][d] = sum_t p[g][t] v[t][d]; a thread per dim pair (bf16x2 loads) and token slice (the block's
  // threads split the tokens when D/2 < blockDim), slices summed with shared atomics into the (free) q area.
  {
    const int pairs = D / 2;
    const int n_slices = max(1, static_cast<int>(blockDim.x) / pairs);
    const int slice = threadIdx.x / pairs;
    for (int d2 = threadIdx.x % pairs; slice < n_slices && d2 < pairs; d2 += blockDim.x) {
      float acc0[kMaxGroup], acc1[kMaxGroup];
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) acc0[g] = 0.f, acc1[g] = 0.f;
      for (int t0 = start + slice * 8; t0 < end; t0 += n_slices * 8) {
        uint32_t vv[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {  // 8 row loads in flight
          const int t = min(t0 + j, end - 1);
          const int64_t slot = static_cast<int64_t>(bt[t / p.block_size]) * p.block_size + t % p.block_size;
          vv[j] = reinterpret_cast<const uint32_t*>(p.v_pool + slot * row_elems + kvh * D)[d2];
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (t0 + j >= end) break;
          const float v0 = bf16_lo(vv[j]), v1 = bf16_hi(vv[j]);
#pragma unroll
          for (int g = 0; g < kMaxGroup; ++g) {
            if (g < G) {
              const float pr = sc[g * partition + (t0 + j - start)];
              acc0[g] = fmaf(pr, v0, acc0[g]);
              acc1[g] = fmaf(pr, v1, acc1[g]);
            }
          }
        }
      }
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= G) break;
        atomicAdd(&qs[g * D + 2 * d2], acc0[g]);
        atomicAdd(&qs[g * D + 2 * d2 + 1], acc1[g]);
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * pairs; i += blockDim.x) {
      const int g = i / pairs, d2 = i % pairs;
      const float a0 = qs[g * D + 2 * d2], a1 = qs[g * D + 2 * d2 + 1];
      if (n_splits == 1) {
        const float inv = 1.f / stats[2 * g + 1];
        reinterpret_cast<uint32_t*>(out + (static_cast<int64_t>(b) * p.n_heads + kvh * G + g) * D)[d2] =
            pack_bf16x2(a0 * inv, a1 * inv);
      } else {
        float* o = ws + (part_base + static_cast<int64_t>(g) * n_splits) * D;
        o[2 * d2] = a0;
        o[2 * d2 + 1] = a1;
      }
    }
  }
  if (n_splits > 1 && threadIdx.x < G) {
    float* ml = ws + (static_cast<int64_t>(gridDim.y) * p.n_heads * n_splits) * D;
    ml[2 * (part_base + threadIdx.x * n_splits)] = stats[2 * threadIdx.x];
    ml[2 * (part_base + threadIdx.x * n_splits) + 1] = stats[2 * threadIdx.x + 1];
  }
  }  // n > 0
  else if (n_splits > 1 && threadIdx.x < G) {  // an empty split (graph replay, shorter context): contributes nothing
    float* ml = ws + (static_cast<int64_t>(gridDim.y) * p.n_heads * n_splits) * D;
    ml[2 * (part_base + threadIdx.x * n_splits)] = -FLT_MAX;
    ml[2 * (part_base + threadIdx.x * n_splits) + 1] = 0.f;
  }
  if (n_splits == 1) return;
  // Fused merge: the last split block of (b, kvh) to finish combines all partitions of its G heads; it resets the
  // counter so that the workspace is ready for the next call (and the next graph replay).
  if (!split_arrived_last(ws, b * p.n_kv_heads + kvh, n_splits)) return;
  const float* ml = ws + (static_cast<int64_t>(gridDim.y) * p.n_heads * n_splits) * D;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  float* wts = smem;                  // [G][n_splits] merge weights e^{m_s - M} / L (0 for empty splits)
  float* mstat = smem + G * n_splits;  // [G][2] M, 1/L
  const int64_t base0 = part_base - split;  // (b, head kvh*G, split 0); head g adds g * n_splits
  for (int g = warp; g < G; g += nwarps) {
    const float* mlg = ml + 2 * (base0 + static_cast<int64_t>(g) * n_splits);
    float mx = -FLT_MAX;
    for (int s2 = lane; s2 < n_splits; s2 += 32) mx = fmaxf(mx, __ldcg(mlg + 2 * s2));
    mx = warp_max(mx);
    float l = 0.f;
    for (int s2 = lane; s2 < n_splits; s2 += 32) {
      const float ls = __ldcg(mlg + 2 * s2 + 1);
      if (ls > 0.f) l += ls * __expf(__ldcg(mlg + 2 * s2) - mx);
    }
    l = warp_sum(l);
    if (lane == 0) mstat[2 * g] = mx, mstat[2 * g + 1] = l > 0.f ? 1.f / l : 0.f;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * n_splits; i += blockDim.x) {
    const int g = i / n_splits, s2 = i % n_splits;
    const float* mlg = ml + 2 * (base0 + static_cast<int64_t>(g) * n_splits);
    const float ls = __ldcg(mlg + 2 * s2 + 1);
    wts[i] = ls > 0.f ? __expf(__ldcg(mlg + 2 * s2) - mstat[2 * g]) * mstat[2 * g + 1] : 0.f;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    const float* o = ws + (base0 + static_cast<int64_t>(g) * n_splits) * D + d;
    const float* w = wts + g * n_splits;
    float acc = 0.f;
#pragma unroll 8
    for (int s2 = 0; s2 < n_splits; ++s2) {
      const float v = __ldcg(o + static_cast<int64_t>(s2) * D);
      if (w[s2] != 0.f) acc = fmaf(v, w[s2], acc);  // empty splits hold no partial (maybe garbage)
    }
    out[(static_cast<int64_t>(b) * p.n_heads + kvh * G + g) * D + d] = f2bf(acc);
  }
}

// ---- prefill: block = 4 warps, 64 query rows (16 per warp) of one head, KV tiles of 64 keys, head_dim kD ----
namespace wmma = nvcuda::wmma;
constexpr int kBQ = 64, kBK = 64;
constexpr int kLdS = kBK + 4;   // fp32 pitch of the per-warp score tile
constexpr int kLdP = kBK + 8;   // bf16 pitch of the per-warp probability tile
template <int kD>
__host__ __device__ constexpr int prefill_ldq() { return kD + 8; }  // bf16 row pitch of Q/K/V tiles (multiple of 8, breaks bank alignment)
template <int kD>
__host__ __device__ constexpr int prefill_ldo() { return kD + 4; }  // fp32 pitch of the output accumulator
template <int kD>
constexpr size_t prefill_smem() {
  return sizeof(uint16_t) * (3 * kBQ * prefill_ldq<kD>() + kBQ * kLdP) +
         sizeof(float) * (kBQ * kLdS + kBQ * prefill_ldo<kD>() + 2 * kBQ);
}

template <int kD>  // head_dim: 64 or 128
__global__ void __launch_bounds__(128) paged_prefill_kernel(PagedAttention p, int seq, const uint16_t* q, int q_stride,
                                                            int n_q, uint16_t* out) {
  constexpr int kLdQ = prefill_ldq<kD>(), kLdO = prefill_ldo<kD>();
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* Ks = Qs + kBQ * kLdQ;
  __nv_bfloat16* Vs = Ks + kBK * kLdQ;
  __nv_bfloat16* Ps = Vs + kBK * kLdQ;  // [64][kLdP]
  float* Ss = reinterpret_cast<float*>(Ps + kBQ * kLdP);  // [64][kLdS]
  float* Os = Ss + kBQ * kLdS;                            // [64][kLdO]
  float* row_m = Os + kBQ * kLdO;
  float* row_l = row_m + kBQ;

  const int h = blockIdx.y;
  const int G = p.n_heads / p.n_kv_heads;
  const int kvh = h / G;
  // Heaviest (last) query tiles first: with causal masking they see the most keys, so they set the tail.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBQ;
  const int ctx = p.seq_lens[seq];
  const int first_pos = ctx - n_q;  // absolute position of query 0
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int row_elems = p.n_kv_heads * kD;
  const int32_t* bt = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  // Load the Q tile (zero rows past n_q), clear O, init stats.
  for (int i = tid; i < kBQ * (kD / 8); i += blockDim.x) {
    const int r = i / (kD / 8), c = i % (kD / 8);
    uint4 v = make_uint4(0, 0, 0, 0);
    if (q0 + r < n_q) v = *reinterpret_cast<const uint4*>(q + static_cast<int64_t>(q0 + r) * q_stride + h * kD + c * 8);
    *reinterpret_cast<uint4*>(Qs + r * kLdQ + c * 8) = v;
  }
  for (int i = tid; i < kBQ * kLdO; i += blockDim.x) Os[i] = 0.f;
  for (int i = tid; i < kBQ; i += blockDim.x) row_m[i] = -1e30f, row_l[i] = 0.f;

  const int last_q = min(q0 + kBQ, n_q) - 1;
  const int kv_end = first_pos + last_q + 1;  // keys [0, kv_end) can be visible to this tile
  for (int k0 = 0; k0 < kv_end; k0 += kBK) {
    __syncthreads();  // previous tile fully consumed (and Q/O init visible on the first pass)
    for (int i = tid; i < kBK * (kD / 8); i += blockDim.x) {
      const int r = i / (kD / 8), c = i % (kD / 8);
      const int t = k0 + r;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (t < ctx) {
        const int64_t slot = static_cast<int64_t>(bt[t / p.block_size]) * p.block_size + t % p.block_size;
        kv = *reinterpret_cast<const uint4*>(p.k_pool + slot * row_elems + kvh * kD + c * 8);
        vv = *reinterpret_cast<const uint4*>(p.v_pool + slot * row_elems + kvh * kD + c * 8);
      }
      *reinterpret_cast<uint4*>(Ks + r * kLdQ + c * 8) = kv;
      *reinterpret_cast<uint4*>(Vs + r * kLdQ + c * 8) = vv;
    }
    __syncthreads();
    // S (16 x 64 per warp) = Q_w K^T
    float* Sw = Ss + warp * 16 * kLdS;
#pragma unroll
    for (int nt = 0; nt < kBK / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kt = 0; kt < kD / 16; ++kt) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> bk;
        wmma::load_matrix_sync(a, Qs + warp * 16 * kLdQ + kt * 16, kLdQ);
        wmma::load_matrix_sync(bk, Ks + nt * 16 * kLdQ + kt * 16, kLdQ);
        wmma::mma_sync(acc, a, bk, acc);
      }
      wmma::store_matrix_sync(Sw + nt * 16, acc, kLdS, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax: 2 lanes per row, 32 columns each.
    {
      const int r = lane >> 1, half = lane & 1;
      const int qrow = warp * 16 + r;
      const int qpos = first_pos + q0 + qrow;
      const bool qvalid = q0 + qrow < n_q;
      float* srow = Sw + r * kLdS + half * 32;
      float mx = -1e30f;
      for (int c = 0; c < 32; ++c) {
        const int kpos = k0 + half * 32 + c;
        const float v = (qvalid && kpos <= qpos && kpos < ctx) ? srow[c] * p.scale : -INFINITY;
        srow[c] = v;
        mx = fmaxf(mx, v);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_old = row_m[qrow];
      const float m_new = fmaxf(m_old, mx);
      const float alpha = __expf(m_old - m_new);
      float sum = 0.f;
      __nv_bfloat16* prow = Ps + qrow * kLdP + half * 32;
      for (int c = 0; c < 32; ++c) {
        const float e = __expf(srow[c] - m_new);
        sum += e;
        prow[c] = __float2bfloat16_rn(e);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      float* orow = Os + qrow * kLdO + half * (kD / 2);
      for (int c = 0; c < kD / 2; ++c) orow[c] *= alpha;
      __syncwarp();
      if (half == 0) row_m[qrow] = m_new, row_l[qrow] = row_l[qrow] * alpha + sum;
    }
    __syncwarp();
    // O_w (16 x 128) += P_w (16 x 64) V (64 x 128)
#pragma unroll
    for (int nt = 0; nt < kD / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      float* optr = Os + warp * 16 * kLdO + nt * 16;
      wmma::load_matrix_sync(acc, optr, kLdO, wmma::mem_row_major);
#pragma unroll
      for (int kt = 0; kt < kBK / 16; ++kt) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> bv;
        wmma::load_matrix_sync(a, Ps + warp * 16 * kLdP + kt * 16, kLdP);
        wmma::load_matrix_sync(bv, Vs + kt * 16 * kLdQ + nt * 16, kLdQ);
        wmma::mma_sync(acc, a, bv, acc);
      }
      wmma::store_matrix_sync(optr, acc, kLdO, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int i = tid; i < kBQ * (kD / 2); i += blockDim.x) {
    const int r = i / (kD / 2), c2 = i % (kD / 2);
    if (q0 + r >= n_q) continue;
    const float l = row_l[r];
    const float inv = l > 0.f ? 1.f / l : 0.f;
    reinterpret_cast<uint32_t*>(out + static_cast<int64_t>(q0 + r) * p.n_heads * kD + h * kD)[c2] =
        pack_bf16x2(Os[r * kLdO + 2 * c2] * inv, Os[r * kLdO + 2 * c2 + 1] * inv);
  }
}

// ---- prefill on mma.sync (flash-attention-2 style): block = 4 warps = 64 query rows of one head, KV tiles of 64
// keys staged in shared memory (double-buffered with cp.async). Per warp: 16 query rows; Q stays in registers as
// m16n8k16 A fragments, S = Q K^T lives in the accumulators, P goes from the S accumulators straight into A
// fragments (bf16), V B-fragments come from ldmatrix.trans, O (16 x kD) accumulates in registers. Only the K/V tiles
// touch shared memory.
constexpr int kMmaBQ = 64;
// Keys per KV tile: 64, or 32 at head_dim 256 (the O accumulators and Q fragments take 192 registers per thread).
template <int kD>
__host__ __device__ constexpr int mma_bk() { return kD > 128 ? 32 : 64; }
template <int kD>
__host__ __device__ constexpr int mma_ld() { return kD + 8; }  // bf16 pitch of a K/V tile row: 16-byte aligned, rows 16 bytes apart mod 128
template <int kD>
constexpr size_t prefill_mma_smem() {  // K, V x 2 stages
  return sizeof(uint16_t) * 2 * 2 * mma_bk<kD>() * mma_ld<kD>();
}

// Split-KV (paged_attention_prefill with a workspace). A query tile qt (queries qt*kMmaBQ .. of n_q, the last n_q of
// a context whose first query sits at first_pos) reads KV tiles [0, kv_tiles); with `split` tiles a chunk it is
// prefill_chunks blocks. The tiles a chunk: the context's tiles over kPrefillMaxChunks, at least 4 (fewer made more
// partial outputs to merge than critical path saved, by the estimate that chose them).
__host__ __device__ inline int prefill_kv_tiles(int qt, int n_q, int first_pos, int bk) {
  const int q_end = min((qt + 1) * kMmaBQ, n_q);
  return (first_pos + q_end + bk - 1) / bk;
}
__host__ __device__ inline int prefill_chunks(int qt, int n_q, int first_pos, int bk, int split) {
  return split > 0 ? (prefill_kv_tiles(qt, n_q, first_pos, bk) + split - 1) / split : 1;
}
__host__ __device__ inline int prefill_split_tiles(int ctx, int bk) {
  const int tiles = (ctx + bk - 1) / bk;
  return max(4, (tiles + kPrefillMaxChunks - 1) / kPrefillMaxChunks);
}
// Workspace layout: partial outputs [kPrefillMaxChunks][n_heads][n_q][kD] fp32 (unnormalised), then per row (max in
// the log2 domain, sum) [kPrefillMaxChunks][n_heads][n_q][2].
__host__ __device__ inline int64_t prefill_ml_offset(int n_heads, int n_q, int kD) {
  return int64_t{kPrefillMaxChunks} * n_heads * n_q * kD;
}

// grid.x: query tiles, heaviest first (split 0), or (query tile, chunk) items, the heaviest tile's chunks first;
// grid.y: heads.
template <int kD>
__global__ void __launch_bounds__(128) paged_prefill_mma_kernel(PagedAttention p, int seq, const uint16_t* q,
                                                                int q_stride, int n_q, uint16_t* out, int split,
                                                                int split_first_pos, float* ws) {
  constexpr int kLd = mma_ld<kD>();
  constexpr int kMmaBK = mma_bk<kD>();
  constexpr int kKC = kD / 16;  // k-chunks of Q K^T
  constexpr int kNT = kD / 8;   // n-tiles of O
  extern __shared__ __align__(128) unsigned char smem_raw[];
  uint16_t* tiles = reinterpret_cast<uint16_t*>(smem_raw);  // [stage][K|V][kMmaBK][kLd]

  const int h = blockIdx.y;
  const int kvh = h / (p.n_heads / p.n_kv_heads);
  const int ctx = p.seq_lens[seq];
  const int first_pos = ctx - n_q;
  int qt = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x), chunk = 0, n_chunks = 1;
  if (split > 0) {
    int item = static_cast<int>(blockIdx.x);
    for (qt = (n_q + kMmaBQ - 1) / kMmaBQ - 1; qt >= 0; --qt) {
      n_chunks = prefill_chunks(qt, n_q, split_first_pos, kMmaBK, split);  // the launcher's count (host ctx)
      if (item < n_chunks) break;
      item -= n_chunks;
    }
    if (qt < 0) return;
    chunk = item;
  }
  const int q0 = qt * kMmaBQ;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int row_elems = p.n_kv_heads * kD;
  const int32_t* bt = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  // Q A-fragments: rows r0 = q0 + 16 warp + g and r0 + 8; zero past n_q.
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
  uint32_t qa[kKC][4];
  {
    const uint16_t* q0p = q + static_cast<int64_t>(r0) * q_stride + h * kD + 2 * t4;
    const uint16_t* q1p = q + static_cast<int64_t>(r1) * q_stride + h * kD + 2 * t4;
#pragma unroll
    for (int kc = 0; kc < kKC; ++kc) {
      qa[kc][0] = r0 < n_q ? *reinterpret_cast<const uint32_t*>(q0p + kc * 16) : 0u;
      qa[kc][1] = r1 < n_q ? *reinterpret_cast<const uint32_t*>(q1p + kc * 16) : 0u;
      qa[kc][2] = r0 < n_q ? *reinterpret_cast<const uint32_t*>(q0p + kc * 16 + 8) : 0u;
      qa[kc][3] = r1 < n_q ? *reinterpret_cast<const uint32_t*>(q1p + kc * 16 + 8) : 0u;
    }
  }
  float o[kNT][4];
#pragma unroll
  for (int j = 0; j < kNT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m0 = -1e30f, m1 = -1e30f, l0 = 0.f, l1 = 0.f;
  const int qpos0 = first_pos + r0, qpos1 = first_pos + r1;
  const float sl2 = p.scale * 1.4426950408889634f;  // exp(x) = exp2(x log2 e)

  const int last_q = min(q0 + kMmaBQ, n_q) - 1;
  const int kv_end = first_pos + last_q + 1;
  const int n_tiles = (kv_end + kMmaBK - 1) / kMmaBK;
  // Sliding window: query at position qp sees keys (qp - win, qp]; tiles wholly before the block's first query's
  // window are skipped.
  const int win = p.window > 0 ? p.window : (1 << 30);
  const int first_tile = split > 0 ? chunk * split : p.window > 0 ? max(0, first_pos + q0 - win + 1) / kMmaBK : 0;
  const int end_tile = split > 0 ? min(n_tiles, first_tile + split) : n_tiles;
  auto load_tile = [&](int tile, int stage) {
    uint16_t* ks = tiles + stage * 2 * kMmaBK * kLd;
    uint16_t* vs = ks + kMmaBK * kLd;
    for (int i = tid; i < kMmaBK * (kD / 8); i += 128) {
      const int r = i / (kD / 8), c = i % (kD / 8);
      const int t = tile * kMmaBK + r;
      const bool ok = t < ctx;
      const int64_t slot = ok ? static_cast<int64_t>(bt[t / p.block_size]) * p.block_size + t % p.block_size : 0;
      const int64_t off = slot * row_elems + kvh * kD + c * 8;
      cp_async16(ks + r * kLd + c * 8, p.k_pool + off, ok);
      cp_async16(vs + r * kLd + c * 8, p.v_pool + off, ok);
    }
    cp_async_commit();
  };
  load_tile(first_tile, first_tile & 1);
  for (int tile = first_tile; tile < end_tile; ++tile) {
    const int stage = tile & 1;
    if (tile + 1 < end_tile) {
      load_tile(tile + 1, stage ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint16_t* ks = tiles + stage * 2 * kMmaBK * kLd;
    const uint16_t* vs = ks + kMmaBK * kLd;
    const int k0 = tile * kMmaBK;
    // S [16 x 64] = Q K^T: n-tile j covers keys k0 + 8j .. +7; B fragment words from K row (8j + g).
    float s[kMmaBK / 8][4];
#pragma unroll
    for (int j = 0; j < kMmaBK / 8; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
      const uint16_t* krow = ks + (8 * j + g) * kLd + 2 * t4;
#pragma unroll
      for (int kc = 0; kc < kKC; ++kc) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + kc * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + kc * 16 + 8);
        mma_bf16_16816(s[j], qa[kc][0], qa[kc][1], qa[kc][2], qa[kc][3], b0, b1);
      }
    }
    // Mask, scale (log2 domain), online softmax over the two rows this thread holds (quad = one row).
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < kMmaBK / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int kpos = k0 + 8 * j + 2 * t4 + e;
        const bool kin = kpos < ctx;
        s[j][e] = (kin && kpos <= qpos0 && kpos > qpos0 - win && r0 < n_q) ? s[j][e] * sl2 : -INFINITY;
        s[j][2 + e] = (kin && kpos <= qpos1 && kpos > qpos1 - win && r1 < n_q) ? s[j][2 + e] * sl2 : -INFINITY;
        mx0 = fmaxf(mx0, s[j][e]);
        mx1 = fmaxf(mx1, s[j][2 + e]);
      }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    const float a0 = exp2f(m0 - mn0), a1 = exp2f(m1 - mn1);
    m0 = mn0, m1 = mn1;
    l0 *= a0, l1 *= a1;
#pragma unroll
    for (int j = 0; j < kNT; ++j) o[j][0] *= a0, o[j][1] *= a0, o[j][2] *= a1, o[j][3] *= a1;
    uint32_t pa[kMmaBK / 8][2];  // bf16x2 probabilities: [n-tile][row g | row g+8]
#pragma unroll
    for (int j = 0; j < kMmaBK / 8; ++j) {
      const float p00 = exp2f(s[j][0] - mn0), p01 = exp2f(s[j][1] - mn0);
      const float p10 = exp2f(s[j][2] - mn1), p11 = exp2f(s[j][3] - mn1);
      pa[j][0] = pack_bf16x2(p00, p01);
      pa[j][1] = pack_bf16x2(p10, p11);
      // The normalizer sums the bf16-rounded probabilities that P V uses.
      l0 += bf16f(static_cast<uint16_t>(pa[j][0] & 0xffffu)) + bf16f(static_cast<uint16_t>(pa[j][0] >> 16));
      l1 += bf16f(static_cast<uint16_t>(pa[j][1] & 0xffffu)) + bf16f(static_cast<uint16_t>(pa[j][1] >> 16));
    }
    // O += P V: k-chunk kc = keys 16kc..16kc+15 (S n-tiles 2kc, 2kc+1); V B-fragments for dims 16 n2 .. +15.
#pragma unroll
    for (int kc = 0; kc < kMmaBK / 16; ++kc) {
      const uint16_t* vrow = vs + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd + (lane >> 4) * 8;
#pragma unroll
      for (int n2 = 0; n2 < kD / 16; ++n2) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4_trans(b0, b1, b2, b3, vrow + n2 * 16);
        mma_bf16_16816(o[2 * n2], pa[2 * kc][0], pa[2 * kc][1], pa[2 * kc + 1][0], pa[2 * kc + 1][1], b0, b1);
        mma_bf16_16816(o[2 * n2 + 1], pa[2 * kc][0], pa[2 * kc][1], pa[2 * kc + 1][0], pa[2 * kc + 1][1], b2, b3);
      }
    }
    __syncthreads();  // this stage is overwritten by the load issued in the next iteration
  }
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  if (n_chunks > 1) {  // this chunk's unnormalised output, row max and sum, for prefill_merge_kernel
    float* po = ws + (static_cast<int64_t>(chunk) * p.n_heads + h) * n_q * kD;
    float* pml = ws + prefill_ml_offset(p.n_heads, n_q, kD) + (static_cast<int64_t>(chunk) * p.n_heads + h) * n_q * 2;
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
      const int col = 8 * j + 2 * t4;
      if (r0 < n_q) *reinterpret_cast<float2*>(po + int64_t{r0} * kD + col) = make_float2(o[j][0], o[j][1]);
      if (r1 < n_q) *reinterpret_cast<float2*>(po + int64_t{r1} * kD + col) = make_float2(o[j][2], o[j][3]);
    }
    if (t4 == 0 && r0 < n_q) pml[2 * r0] = m0, pml[2 * r0 + 1] = l0;
    if (t4 == 0 && r1 < n_q) pml[2 * r1] = m1, pml[2 * r1 + 1] = l1;
    return;
  }
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  const int64_t ostride = static_cast<int64_t>(p.n_heads) * kD;
#pragma unroll
  for (int j = 0; j < kNT; ++j) {
    const int col = h * kD + 8 * j + 2 * t4;
    if (r0 < n_q) *reinterpret_cast<uint32_t*>(out + r0 * ostride + col) = pack_bf16x2(o[j][0] * inv0, o[j][1] * inv0);
    if (r1 < n_q) *reinterpret_cast<uint32_t*>(out + r1 * ostride + col) = pack_bf16x2(o[j][2] * inv1, o[j][3] * inv1);
  }
}

// grid n_q (a block per query row), 256 threads: the rows of split query tiles get out = sum_c 2^(m_c - M) O_c /
// sum_c 2^(m_c - M) l_c over their chunks (M the largest m_c), every head; rows of unsplit tiles were written by
// the prefill kernel and are left alone.
template <int kD>
__global__ void __launch_bounds__(256) prefill_merge_kernel(int first_pos, int n_q, int n_heads, int split,
                                                            const float* ws, uint16_t* out) {
  constexpr int kMmaBK = mma_bk<kD>();
  __shared__ float w[kPrefillMaxChunks][64];  // per chunk and head: 2^(m_c - M) / L (heads <= 64, checked)
  const int r = blockIdx.x;
  const int nc = prefill_chunks(r / kMmaBQ, n_q, first_pos, kMmaBK, split);
  if (nc <= 1) return;
  const float* ml = ws + prefill_ml_offset(n_heads, n_q, kD);
  for (int h = threadIdx.x; h < n_heads; h += blockDim.x) {
    float M = -INFINITY, L = 0.f;
    for (int c = 0; c < nc; ++c) M = fmaxf(M, ml[((int64_t{c} * n_heads + h) * n_q + r) * 2]);
    for (int c = 0; c < nc; ++c) {
      const int64_t i = ((int64_t{c} * n_heads + h) * n_q + r) * 2;
      w[c][h] = exp2f(ml[i] - M);
      L += w[c][h] * ml[i + 1];
    }
    const float inv = L > 0.f ? 1.f / L : 0.f;
    for (int c = 0; c < nc; ++c) w[c][h] *= inv;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n_heads * kD / 2; e += blockDim.x) {  // pairs of dims
    const int h = e / (kD / 2), d = 2 * (e % (kD / 2));
    float a0 = 0.f, a1 = 0.f;
    for (int c = 0; c < nc; ++c) {
      const float2 o = *reinterpret_cast<const float2*>(ws + ((int64_t{c} * n_heads + h) * n_q + r) * kD + d);
      a0 += w[c][h] * o.x, a1 += w[c][h] * o.y;
    }
    *reinterpret_cast<uint32_t*>(out + int64_t{r} * n_heads * kD + h * kD + d) = pack_bf16x2(a0, a1);
  }
}

}  // namespace

void kv_write(const bf16_t* k_src, const bf16_t* v_src, int row_stride, const int32_t* slots, bf16_t* k_pool,
              bf16_t* v_pool, int T, int n_kv_heads, int head_dim, cudaStream_t s) {
  if (T <= 0) return;
  CHECK((n_kv_heads * head_dim) % 8 == 0 && row_stride % 8 == 0);
  launch_pdl(kv_write_kernel, dim3(T), dim3(128), 0, s, k_src, v_src, row_stride, slots, k_pool, v_pool, n_kv_heads * head_dim);
  CUDA_LAUNCH_CHECK();
}

int64_t decode_workspace_counters() { return kDecodeCounters; }

int64_t decode_workspace_floats(int B, int n_heads, int head_dim, int n_splits) {
  if (n_splits <= 1) return 0;
  return kDecodeCounters + static_cast<int64_t>(B) * n_heads * n_splits * (head_dim + 2);
}

void rope_kv_write(bf16_t* qkv, int T, int row_stride, int n_heads, int n_kv_heads, int head_dim,
                   const int32_t* positions, float theta, RopeLayout layout, const int32_t* slots, bf16_t* k_pool,
                   bf16_t* v_pool, cudaStream_t s, const float* inv_freq, float mscale) {
  if (T <= 0) return;
  CHECK(head_dim % 16 == 0 && head_dim <= 2048 && row_stride % 8 == 0);
  static const int head_blocks = std::max(1, env_int("CITADEL_ROPE_KV_HEAD_BLOCKS", 1));
  const int n_all = n_heads + n_kv_heads, blocks = std::min(head_blocks, n_all), half = head_dim / 2;
  const int threads = blocks > 1 ? half : half * std::max(1, 256 / half);  // whole groups of head_dim / 2
  launch_pdl(rope_kv_write_kernel, dim3(T, blocks), dim3(threads), 0, s, qkv, row_stride, n_heads, n_kv_heads, head_dim,
             positions, theta, layout == RopeLayout::kNeox, slots, k_pool, v_pool, inv_freq, mscale);
  CUDA_LAUNCH_CHECK();
}

void paged_attention_decode(const PagedAttention& p, const bf16_t* q, int q_stride, bf16_t* out, int B, int n_splits,
                            int partition, float* workspace, cudaStream_t s) {
  if (decode_mma_supported(p, partition))
    paged_attention_decode_mma(p, q, q_stride, out, B, n_splits, partition, workspace, s);
  else
    paged_attention_decode_simt(p, q, q_stride, out, B, n_splits, partition, workspace, s);
}

void paged_attention_decode_simt(const PagedAttention& p, const bf16_t* q, int q_stride, bf16_t* out, int B,
                                 int n_splits, int partition, float* workspace, cudaStream_t s) {
  if (B <= 0) return;
  const int G = p.n_heads / p.n_kv_heads;
  CHECK(G >= 1 && G <= kMaxGroup && p.n_heads % p.n_kv_heads == 0);
  CHECK(p.head_dim == 64 || p.head_dim == 128 || p.head_dim == 256);
  CHECK(n_splits == 1 || workspace != nullptr);
  const size_t smem = sizeof(float) * std::max(G * p.head_dim + G * partition + 2 * G, G * n_splits + 2 * G);
  CHECK(smem <= 48 * 1024);
  CHECK(n_splits == 1 || B * p.n_kv_heads <= kDecodeCounters);
  dim3 grid(p.n_kv_heads, B, n_splits);
  switch (p.head_dim / 32) {
    case 2: launch_pdl(paged_decode_kernel<2>, grid, dim3(kDecodeThreads), smem, s, p, q, q_stride, out, n_splits, partition, workspace); break;
    case 4: launch_pdl(paged_decode_kernel<4>, grid, dim3(kDecodeThreads), smem, s, p, q, q_stride, out, n_splits, partition, workspace); break;
    case 8: launch_pdl(paged_decode_kernel<8>, grid, dim3(kDecodeThreads), smem, s, p, q, q_stride, out, n_splits, partition, workspace); break;
    default: CHECK_MSG(false, "decode attention: head_dim must be 64, 128 or 256");
  }
  CUDA_LAUNCH_CHECK();
}

void paged_attention_prefill(const PagedAttention& p, int seq, const bf16_t* q, int q_stride, int n_q, bf16_t* out,
                             cudaStream_t s, int ctx, float* workspace, int64_t workspace_floats) {
  if (n_q <= 0) return;
  CHECK_MSG(p.head_dim == 64 || p.head_dim == 128 || p.head_dim == 256,
            "prefill attention: head_dim must be 64, 128 or 256");
  CHECK(q_stride % 2 == 0 && p.window >= 0);
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(paged_prefill_mma_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(prefill_mma_smem<64>())));
    CUDA_CHECK(cudaFuncSetAttribute(paged_prefill_mma_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(prefill_mma_smem<128>())));
    CUDA_CHECK(cudaFuncSetAttribute(paged_prefill_mma_kernel<256>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(prefill_mma_smem<256>())));
    configured = true;
  }
  const int n_qt = (n_q + kMmaBQ - 1) / kMmaBQ, bk = p.head_dim > 128 ? mma_bk<256>() : mma_bk<128>();
  // Split-KV when asked for and worth it (more than one chunk for the heaviest tile): grid.x = every tile's chunks.
  static const bool split_on = !env_is("CITADEL_PREFILL_SPLIT", "0");
  CHECK(ctx == 0 || ctx >= n_q);
  int split = 0, items = n_qt;
  // Only while the plain grid leaves SMs idle: on an H100, 28 heads, 7-8 query tiles (196-224 blocks) ran 3-7 %
  // slower split (the merge and the partials' traffic), one tile (28 blocks) at context 4096 4.4x faster.
  if (split_on && ctx > 0 && workspace && p.window == 0 && n_q <= kPrefillSplitMaxQ && p.n_heads <= 64 &&
      n_qt * p.n_heads < device_sms() && workspace_floats >= prefill_workspace_floats(n_q, p.n_heads, p.head_dim)) {
    split = prefill_split_tiles(ctx, bk);
    items = 0;
    for (int qt = 0; qt < n_qt; ++qt) items += prefill_chunks(qt, n_q, ctx - n_q, bk, split);
    if (items == n_qt) split = 0;  // one chunk per tile: the plain launch
  }
  const dim3 grid(static_cast<unsigned>(items), static_cast<unsigned>(p.n_heads));
  if (p.head_dim == 64) {
    paged_prefill_mma_kernel<64><<<grid, 128, prefill_mma_smem<64>(), s>>>(p, seq, q, q_stride, n_q, out, split,
                                                                            ctx - n_q, workspace);
    if (split) prefill_merge_kernel<64><<<n_q, 256, 0, s>>>(ctx - n_q, n_q, p.n_heads, split, workspace, out);
  } else if (p.head_dim == 128) {
    paged_prefill_mma_kernel<128><<<grid, 128, prefill_mma_smem<128>(), s>>>(p, seq, q, q_stride, n_q, out, split,
                                                                              ctx - n_q, workspace);
    if (split) prefill_merge_kernel<128><<<n_q, 256, 0, s>>>(ctx - n_q, n_q, p.n_heads, split, workspace, out);
  } else {
    paged_prefill_mma_kernel<256><<<grid, 128, prefill_mma_smem<256>(), s>>>(p, seq, q, q_stride, n_q, out, split,
                                                                              ctx - n_q, workspace);
    if (split) prefill_merge_kernel<256><<<n_q, 256, 0, s>>>(ctx - n_q, n_q, p.n_heads, split, workspace, out);
  }
  CUDA_LAUNCH_CHECK();
}

int64_t prefill_workspace_floats(int n_q, int n_heads, int head_dim) {
  return int64_t{kPrefillMaxChunks} * n_heads * std::min(n_q, kPrefillSplitMaxQ) * (head_dim + 2);
}

void paged_attention_prefill_wmma(const PagedAttention& p, int seq, const bf16_t* q, int q_stride, int n_q, bf16_t* out,
                             cudaStream_t s) {
  if (n_q <= 0) return;
  CHECK_MSG(p.head_dim == 64 || p.head_dim == 128, "prefill attention: head_dim must be 64 or 128");
  CHECK_MSG(p.window == 0, "paged_attention_prefill_wmma: no sliding window");
  static bool configured = false;  // attribute setting is idempotent; the flag only skips the calls
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(paged_prefill_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(prefill_smem<64>())));
    CUDA_CHECK(cudaFuncSetAttribute(paged_prefill_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(prefill_smem<128>())));
    configured = true;
  }
  dim3 grid((n_q + kBQ - 1) / kBQ, p.n_heads);
  if (p.head_dim == 64)
    paged_prefill_kernel<64><<<grid, 128, prefill_smem<64>(), s>>>(p, seq, q, q_stride, n_q, out);
  else
    paged_prefill_kernel<128><<<grid, 128, prefill_smem<128>(), s>>>(p, seq, q, q_stride, n_q, out);
  CUDA_LAUNCH_CHECK();
}

}  // namespace citadel::cuda
