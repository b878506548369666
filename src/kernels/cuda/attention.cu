// Paged attention over the block pool: the KV write (alone and fused with RoPE) and decode (GQA-grouped, split-K with
// log-sum-exp merge; the SIMT kernel here, the tensor-core one in decode_attention.cu). Prompts: prefill_attention.cu.
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

}  // namespace citadel::cuda
