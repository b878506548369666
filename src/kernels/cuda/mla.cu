// Multi-head latent attention (DeepSeek-V2/V3), bf16: the row RMSNorm, the fused latent norm + RoPE + latent-cache
// write, and absorbed attention over the paged latent cache (mla.h states the contracts).
//
// mla_attention: a block takes one token and HB heads (4 or 16). Key rows come in tiles of 32 through a cp.async
// double buffer in shared memory, so each row is read from global memory once per block. Scores: a warp takes 4 keys,
// its lanes hold the key pairs (2i, 2i+1) of those rows in registers and sweep the HB fp32 query rows in shared memory
// (q pre-scaled by scale * log2(e), so the softmax runs on exp2). Online softmax: a warp per head, a lane per key.
// P V: a thread owns value pairs of all HB heads (fp32 accumulators in registers), probabilities broadcast from
// shared memory. With a cluster of S blocks, rank k takes the k-th slice of the context; the partial (max, sum,
// unnormalised output) of every rank is merged by log-sum-exp through distributed shared memory.
#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>

#include "base/env.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mla.h"

namespace citadel::cuda {
namespace {

using namespace dev;
namespace cg = cooperative_groups;

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kTile = 32;       // keys per shared-memory tile (= lanes of the softmax warps)
constexpr int kMaxSplits = 8;   // portable cluster size
constexpr int kMaxRank = 1024;  // kv_lora_rank: value pairs = 2 per thread
constexpr int kMaxRow = 1152;   // L = kv_lora_rank + qk_rope

__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(s), "l"(gmem) : "memory");
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); red [32] shared. Every thread gets the total.
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? red[lane] : 0.f;
  v = warp_sum(v);
  __syncthreads();  // red may be reused
  return v;
}

__device__ __forceinline__ float sum_sq8(const uint4& v) {
  float s = 0.f;
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) s += bf16_lo(w[i]) * bf16_lo(w[i]) + bf16_hi(w[i]) * bf16_hi(w[i]);
  return s;
}

// In place: row[0:width] = rmsnorm(row) * w (the CPU twin: scale = 1/sqrt(mean(x^2) + eps), y = x * scale * w), also
// stored to copy (if not null). vec: width % 8 == 0 and row, w, copy 16-byte aligned. All threads of the block.
__device__ void rmsnorm_row(uint16_t* row, int width, const uint16_t* w, float eps, bool vec, uint16_t* copy,
                            float* red) {
  float ss = 0.f;
  if (vec) {
    const uint4* r4 = reinterpret_cast<const uint4*>(row);
    for (int i = threadIdx.x; i < width / 8; i += blockDim.x) ss += sum_sq8(r4[i]);
  } else {
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
      const float f = bf16f(row[i]);
      ss += f * f;
    }
  }
  ss = block_sum(ss, red);
  const float scale = 1.0f / sqrtf(ss / static_cast<float>(width) + eps);
  if (vec) {
    uint4* r4 = reinterpret_cast<uint4*>(row);
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
    for (int i = threadIdx.x; i < width / 8; i += blockDim.x) {
      const uint4 x = r4[i], g = w4[i];
      const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, gs[4] = {g.x, g.y, g.z, g.w};
      uint32_t o[4];
#pragma unroll
      for (int k = 0; k < 4; ++k)
        o[k] = pack_bf16x2(bf16_lo(xs[k]) * scale * bf16_lo(gs[k]), bf16_hi(xs[k]) * scale * bf16_hi(gs[k]));
      const uint4 y = make_uint4(o[0], o[1], o[2], o[3]);
      r4[i] = y;
      if (copy) reinterpret_cast<uint4*>(copy)[i] = y;
    }
  } else {
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
      const uint16_t y = f2bf(bf16f(row[i]) * scale * bf16f(w[i]));
      row[i] = y;
      if (copy) copy[i] = y;
    }
  }
}

__global__ void __launch_bounds__(kThreads) rmsnorm_rows_kernel(uint16_t* x, int width, int64_t row_stride,
                                                                const uint16_t* w, float eps, bool vec) {
  pdl_wait();
  pdl_trigger();
  __shared__ float red[32];
  rmsnorm_row(x + static_cast<int64_t>(blockIdx.x) * row_stride, width, w, eps, vec, nullptr, &red[0]);
}

// What mla_rope_kv_write needs (mla.h). vec: the latent path's 16-byte condition (rmsnorm_row).
struct RopeKvArgs {
  const uint16_t* q;
  uint16_t *kv_a, *q_lat;
  MlaShape m;
  const int32_t* positions;
  const float* inv_freq;
  float mscale;
  const uint16_t* kv_norm_w;
  float eps;
  const int32_t* slots;
  uint16_t* cache;
  bool vec;
};

// Token t by the whole block (any size): latent norm (+ cache copy), rope key, then every head's rope query into q_lat.
__device__ void rope_kv_write_token(int t, const RopeKvArgs& a) {
  __shared__ float cs[64], sn[64], red[32];
  const uint16_t* q = a.q;
  uint16_t *kv_a = a.kv_a, *q_lat = a.q_lat, *cache = a.cache;
  const MlaShape& m = a.m;
  const float* inv_freq = a.inv_freq;
  const float mscale = a.mscale, eps = a.eps;
  const int half = m.qk_rope / 2, r = m.kv_lora_rank, L = r + m.qk_rope;
  const int qk = m.qk_nope + m.qk_rope;
  const float pos = static_cast<float>(a.positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    sincosf(pos * inv_freq[i], &s, &c);
    cs[i] = c * mscale, sn[i] = s * mscale;
  }
  uint16_t* row = kv_a + static_cast<int64_t>(t) * L;
  const int slot = a.slots[t];
  uint16_t* crow = slot >= 0 ? cache + static_cast<int64_t>(slot) * L : nullptr;
  rmsnorm_row(row, r, a.kv_norm_w, eps, a.vec, crow, &red[0]);  // its block-wide syncs also publish cs / sn
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float x0 = bf16f(row[r + 2 * i]), x1 = bf16f(row[r + 2 * i + 1]);
    const uint16_t y0 = f2bf(x0 * cs[i] - x1 * sn[i]), y1 = f2bf(x0 * sn[i] + x1 * cs[i]);
    row[r + 2 * i] = y0, row[r + 2 * i + 1] = y1;
    if (crow) crow[r + 2 * i] = y0, crow[r + 2 * i + 1] = y1;
  }
  const uint16_t* qt = q + static_cast<int64_t>(t) * m.n_heads * qk + m.qk_nope;
  uint16_t* lt = q_lat + static_cast<int64_t>(t) * m.n_heads * L + r;
  for (int idx = threadIdx.x; idx < m.n_heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx - h * half;
    const uint16_t* qh = qt + h * qk;
    const float x0 = bf16f(qh[2 * i]), x1 = bf16f(qh[2 * i + 1]);
    uint16_t* oh = lt + static_cast<int64_t>(h) * L;
    oh[2 * i] = f2bf(x0 * cs[i] - x1 * sn[i]);
    oh[2 * i + 1] = f2bf(x0 * sn[i] + x1 * cs[i]);
  }
}

// grid T, kThreads threads.
__global__ void __launch_bounds__(kThreads) mla_rope_kv_write_kernel(RopeKvArgs a) {
  pdl_wait();
  pdl_trigger();
  rope_kv_write_token(blockIdx.x, a);
}

// ---- per-head GEMV (the absorptions at small T): a warp takes RPW rows of one head, C 16-byte weight chunks per lane
// in flight (loaded before the PDL wait: weights never depend on the previous kernel), reused for every token. ----
constexpr int kGemvWarps = 4, kGemvChunks = 4;

struct HeadsGemvArgs {  // heads_gemv_bf16's operands (HN = H * N rows)
  const uint16_t* x;
  int64_t ldx, sx;
  const uint16_t* W;
  uint16_t* y;
  int64_t ldy, sy;
  int T, HN, N;
};

// Block `block` of the GEMV (kGemvWarps warps). Calls pdl_wait after its weight loads.
template <int K8>  // 16-byte chunks per row: 8 .. 128, a power of two
__device__ void heads_gemv_block(int block, const HeadsGemvArgs& a) {
  constexpr int C = kGemvChunks, RPW = 32 * C / K8;  // rows per warp
  constexpr int LPR = K8 < 32 ? K8 : 32;             // lanes per row (a segment of the warp)
  const uint16_t* __restrict__ x = a.x;
  const uint16_t* __restrict__ W = a.W;
  uint16_t* __restrict__ y = a.y;
  const int64_t ldx = a.ldx, sx = a.sx, ldy = a.ldy, sy = a.sy;
  const int T = a.T, HN = a.HN, N = a.N;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int row0 = (block * kGemvWarps + warp) * RPW;  // global row h * N + n; a warp's rows share a head
  pdl_trigger_early();
  uint4 w[C];
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int idx = lane + 32 * c, row = row0 + idx / K8;
    w[c] = row < HN ? ld_stream(reinterpret_cast<const uint4*>(W) + static_cast<int64_t>(row) * K8 + idx % K8)
                    : make_uint4(0, 0, 0, 0);
  }
  pdl_wait();
  pdl_trigger_late();
  if (row0 >= HN) return;
  const int h = row0 / N;
  for (int t = 0; t < T; ++t) {
    const uint4* xh = reinterpret_cast<const uint4*>(x + t * ldx + h * sx);
    float part[C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      float xf[8];
      bf16x8_to_f32(__ldg(xh + (lane + 32 * c) % K8), xf);
      part[c] = dot8(w[c], xf, 0.f);
    }
    // row of chunk c: (lane + 32 c) / K8. K8 >= 32: K8 / 32 consecutive c per row, the whole warp reduces;
    // K8 < 32: segments of K8 lanes, each c its own row.
#pragma unroll
    for (int c = 0; c < C; c += (K8 >= 32 ? K8 / 32 : 1)) {
      float v = 0.f;
#pragma unroll
      for (int cc = 0; cc < (K8 >= 32 ? K8 / 32 : 1); ++cc) v += part[c + cc];
#pragma unroll
      for (int o = LPR / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      const int row = row0 + (lane + 32 * c) / K8;
      if (lane % LPR == 0 && row < HN) y[t * ldy + h * sy + (row - h * N)] = f2bf(v);
    }
  }
}

template <int K8>
__global__ void __launch_bounds__(kGemvWarps * 32) heads_gemv_kernel(HeadsGemvArgs a) {
  heads_gemv_block<K8>(blockIdx.x, a);
}

// The two in one grid: blocks below n_gemv the GEMV, the others one token's rope work each.
template <int K8>
__global__ void __launch_bounds__(kGemvWarps * 32) rope_absorb_kernel(HeadsGemvArgs g, RopeKvArgs r, int n_gemv) {
  if (static_cast<int>(blockIdx.x) < n_gemv) {
    heads_gemv_block<K8>(blockIdx.x, g);
    return;
  }
  pdl_trigger_early();
  pdl_wait();
  pdl_trigger_late();
  rope_kv_write_token(blockIdx.x - n_gemv, r);
}

// The GEMV's blocks; with a rope argument, T more blocks of rope work in the same launch.
template <int K8>
void launch_heads_gemv(const HeadsGemvArgs& a, const RopeKvArgs* rope, cudaStream_t s) {
  constexpr int rows_per_block = kGemvWarps * 32 * kGemvChunks / K8;
  const int n_gemv = (a.HN + rows_per_block - 1) / rows_per_block;
  if (rope)
    launch_pdl(rope_absorb_kernel<K8>, dim3(static_cast<unsigned>(n_gemv + a.T)), dim3(kGemvWarps * 32), 0, s, a,
               *rope, n_gemv);
  else
    launch_pdl(heads_gemv_kernel<K8>, dim3(static_cast<unsigned>(n_gemv)), dim3(kGemvWarps * 32), 0, s, a);
  CUDA_LAUNCH_CHECK();
}

size_t attn_smem_bytes(int hb, int L) {
  return size_t(hb) * L * 4 + size_t(2) * kTile * L * 2 + size_t(kTile) * hb * 4 + size_t(hb) * 4 + size_t(hb) * 8 +
         16;
}

// grid (T * n_splits, ceil(H / HB)), kThreads threads, cluster (n_splits, 1, 1) when n_splits > 1.
// NP: key pairs per lane in the score phase (L / 2 <= 32 * NP). vec16: L % 8 == 0 and the cache 16-byte aligned.
template <int NP, int HB>
__global__ void __launch_bounds__(kThreads) mla_attention_kernel(MlaAttention p, int H, int r, int L,
                                                                 const uint16_t* q_lat, uint16_t* out, int n_splits,
                                                                 bool vec16, float qscale) {
  pdl_wait();
  pdl_trigger();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* q_s = reinterpret_cast<float*>(smem_raw);                // [HB][L] q * scale * log2(e)
  uint16_t* tiles = reinterpret_cast<uint16_t*>(q_s + HB * L);    // [2][kTile][L] key rows
  float* p_s = reinterpret_cast<float*>(tiles + 2 * kTile * L);   // [kTile][HB] scores, then probabilities
  float* alpha_s = p_s + kTile * HB;                              // [HB] rescale of the accumulators
  float* ml_s = alpha_s + HB;                                     // [HB][2] running max, sum
  int* seq_s = reinterpret_cast<int*>(ml_s + 2 * HB);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int rank = static_cast<int>(blockIdx.x) % n_splits, t = static_cast<int>(blockIdx.x) / n_splits;
  const int h0 = blockIdx.y * HB, hb = min(HB, H - h0);
  if (tid == 0) {
    int b = t;
    if (p.query_start) {
      b = 0;
      while (p.query_start[b + 1] <= t) ++b;
    }
    *seq_s = b;
  }
  const uint16_t* qt = q_lat + (static_cast<int64_t>(t) * H + h0) * L;
  for (int c = tid; c < HB * L; c += kThreads) q_s[c] = c < hb * L ? bf16f(qt[c]) * qscale : 0.f;
  __syncthreads();
  const int b = *seq_s;
  const int cap = p.max_blocks_per_seq * p.block_size;
  const int n_keys = max(0, min(min(p.positions[t] + 1, p.seq_lens[b]), cap));
  const int2 slice = split_slice(n_keys, rank, n_splits, kTile);
  const int begin = slice.x, end = slice.y;
  const int32_t* bt = p.block_tables + static_cast<int64_t>(b) * p.max_blocks_per_seq;
  const int npairs = L / 2, rpairs = r / 2;

  auto load_tile = [&](int start, int buf) {
    uint16_t* dst = tiles + buf * kTile * L;
    const int n = min(kTile, end - start);
    const int per_row = vec16 ? L / 8 : L / 2;
    for (int c = tid; c < n * per_row; c += kThreads) {
      const int pl = c / per_row, ch = c - pl * per_row, pos = start + pl;
      const int64_t slot = static_cast<int64_t>(bt[pos / p.block_size]) * p.block_size + pos % p.block_size;
      if (vec16) cp_async16(dst + pl * L + ch * 8, p.cache + slot * L + ch * 8);
      else cp_async4(dst + pl * L + ch * 2, p.cache + slot * L + ch * 2);
    }
    cp_async_commit();
  };

  constexpr int kHW = (HB + kWarps - 1) / kWarps;  // heads per warp in the softmax
  float m_run[kHW], l_run[kHW];
#pragma unroll
  for (int i = 0; i < kHW; ++i) m_run[i] = -INFINITY, l_run[i] = 0.f;
  constexpr int kRP = kMaxRank / 2 / kThreads;  // value pairs per thread
  float acc[kRP][HB][2];
#pragma unroll
  for (int j = 0; j < kRP; ++j)
#pragma unroll
    for (int h = 0; h < HB; ++h) acc[j][h][0] = acc[j][h][1] = 0.f;

  if (begin < end) load_tile(begin, 0);
  int buf = 0;
  for (int start = begin; start < end; start += kTile, buf ^= 1) {
    if (start + kTile < end) {
      load_tile(start + kTile, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint16_t* tile = tiles + buf * kTile * L;
    const int n = min(kTile, end - start);
    {  // scores of keys warp*4 .. warp*4+3 of the tile for every head
      uint32_t kk[4][NP];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const uint32_t* krow = reinterpret_cast<const uint32_t*>(tile + (warp * 4 + jj) * L);
#pragma unroll
        for (int j = 0; j < NP; ++j) {
          const int idx = lane + 32 * j;
          kk[jj][j] = idx < npairs ? krow[idx] : 0u;
        }
      }
#pragma unroll 1
      for (int h = 0; h < hb; ++h) {
        const float2* qh = reinterpret_cast<const float2*>(q_s + h * L);
        float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int j = 0; j < NP; ++j) {
          const int idx = lane + 32 * j;
          if (idx < npairs) {
            const float2 qv = qh[idx];
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) d[jj] = fmaf(qv.x, bf16_lo(kk[jj][j]), fmaf(qv.y, bf16_hi(kk[jj][j]), d[jj]));
          }
        }
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) d[jj] = warp_sum(d[jj]);
        if (lane == 0) {
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {
            const int pl = warp * 4 + jj;
            p_s[pl * HB + h] = pl < n ? d[jj] : -INFINITY;
          }
        }
      }
    }
    __syncthreads();
    // online softmax: warp w takes heads w, w + 8, ...; lane = key of the tile (kTile == 32)
#pragma unroll
    for (int i = 0; i < kHW; ++i) {
      const int h = warp + i * kWarps;
      if (h >= HB) continue;
      if (h < hb) {
        const float s = p_s[lane * HB + h];
        const float m_new = fmaxf(m_run[i], warp_max(s));  // finite: key 0 of the tile is valid
        const float e = exp2f(s - m_new);
        const float alpha = exp2f(m_run[i] - m_new);
        l_run[i] = l_run[i] * alpha + warp_sum(e);
        m_run[i] = m_new;
        p_s[lane * HB + h] = e;
        if (lane == 0) alpha_s[h] = alpha;
      } else {
        p_s[lane * HB + h] = 0.f;
        if (lane == 0) alpha_s[h] = 1.f;
      }
    }
    __syncthreads();
    // P V over the first r values of each key row
#pragma unroll
    for (int j = 0; j < kRP; ++j) {
      if (tid + j * kThreads >= rpairs) continue;
#pragma unroll
      for (int h = 0; h < HB; ++h) {
        const float a = alpha_s[h];
        acc[j][h][0] *= a, acc[j][h][1] *= a;
      }
    }
#pragma unroll 2
    for (int pl = 0; pl < n; ++pl) {
      float pw[HB];
      const float4* pp = reinterpret_cast<const float4*>(p_s + pl * HB);
#pragma unroll
      for (int k = 0; k < HB / 4; ++k) {
        const float4 v = pp[k];
        pw[4 * k] = v.x, pw[4 * k + 1] = v.y, pw[4 * k + 2] = v.z, pw[4 * k + 3] = v.w;
      }
      const uint32_t* vrow = reinterpret_cast<const uint32_t*>(tile + pl * L);
#pragma unroll
      for (int j = 0; j < kRP; ++j) {
        const int pr = tid + j * kThreads;
        if (pr >= rpairs) continue;
        const uint32_t v = vrow[pr];
        const float v0 = bf16_lo(v), v1 = bf16_hi(v);
#pragma unroll
        for (int h = 0; h < HB; ++h) acc[j][h][0] = fmaf(pw[h], v0, acc[j][h][0]), acc[j][h][1] = fmaf(pw[h], v1, acc[j][h][1]);
      }
    }
    __syncthreads();  // the next iteration's copies overwrite this buffer
  }

#pragma unroll
  for (int i = 0; i < kHW; ++i) {
    const int h = warp + i * kWarps;
    if (h < HB && lane == 0) ml_s[2 * h] = m_run[i], ml_s[2 * h + 1] = l_run[i];
  }
  __syncthreads();
  uint16_t* ot = out + (static_cast<int64_t>(t) * H + h0) * r;
  if (n_splits == 1) {
#pragma unroll
    for (int j = 0; j < kRP; ++j) {
      const int pr = tid + j * kThreads;
      if (pr >= rpairs) continue;
#pragma unroll
      for (int h = 0; h < HB; ++h) {
        if (h >= hb) break;
        const float l = ml_s[2 * h + 1], inv = l > 0.f ? 1.f / l : 0.f;
        reinterpret_cast<uint32_t*>(ot + h * r)[pr] = pack_bf16x2(acc[j][h][0] * inv, acc[j][h][1] * inv);
      }
    }
    return;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Partials [HB][r] fp32 over the tile buffers (every copy has landed and been read: the loop's last sync).
  float* o_s = reinterpret_cast<float*>(tiles);
#pragma unroll
  for (int j = 0; j < kRP; ++j) {
    const int pr = tid + j * kThreads;
    if (pr >= rpairs) continue;
#pragma unroll
    for (int h = 0; h < HB; ++h) reinterpret_cast<float2*>(o_s + h * r)[pr] = make_float2(acc[j][h][0], acc[j][h][1]);
  }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  for (int e = rank * kThreads + tid; e < hb * rpairs; e += n_splits * kThreads) {
    const int h = e / rpairs, pr = e - h * rpairs;
    // Every rank's (max, sum, partial) first, as independent remote loads in flight together; then the merge.
    float mk[kMaxSplits], lk[kMaxSplits];
    float2 ok[kMaxSplits];
#pragma unroll
    for (int k = 0; k < kMaxSplits; ++k) {
      if (k >= n_splits) break;
      const float* mlk = cluster.map_shared_rank(ml_s, k);
      mk[k] = mlk[2 * h], lk[k] = mlk[2 * h + 1];
      ok[k] = reinterpret_cast<const float2*>(cluster.map_shared_rank(o_s, k) + h * r)[pr];
    }
    reinterpret_cast<uint32_t*>(ot + h * r)[pr] = merge_split_pair(n_splits, mk, lk, ok);
  }
  cluster.sync();  // the other ranks' shared memory stays alive until every rank has read it
#endif
}

template <int NP, int HB>
void launch_attention(const MlaAttention& p, const MlaShape& m, const bf16_t* q_lat, int T, bf16_t* out, int S,
                      cudaStream_t s) {
  const int r = m.kv_lora_rank, L = r + m.qk_rope;
  auto kernel = mla_attention_kernel<NP, HB>;
  static bool configured = false;  // idempotent attribute; the flag only skips the call
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(attn_smem_bytes(HB, std::min(kMaxRow, 64 * NP)))));
    configured = true;
  }
  const bool vec16 = L % 8 == 0 && reinterpret_cast<uintptr_t>(p.cache) % 16 == 0;
  const float qscale = p.scale * 1.4426950408889634f;
  launch_pdl_cluster(kernel, dim3(static_cast<unsigned>(T * S), static_cast<unsigned>((m.n_heads + HB - 1) / HB)),
                     dim3(kThreads), attn_smem_bytes(HB, L), s, S, p, m.n_heads, r, L, q_lat, out, S, vec16, qscale);
}

template <int HB>
void dispatch_attention(const MlaAttention& p, const MlaShape& m, const bf16_t* q_lat, int T, bf16_t* out, int S,
                        cudaStream_t s) {
  const int L = m.kv_lora_rank + m.qk_rope;
  if (L <= 128) launch_attention<2, HB>(p, m, q_lat, T, out, S, s);
  else if (L <= 576) launch_attention<9, HB>(p, m, q_lat, T, out, S, s);
  else launch_attention<18, HB>(p, m, q_lat, T, out, S, s);
}

void heads_gemv_any(const HeadsGemvArgs& a, int K, const RopeKvArgs* rope, cudaStream_t s) {
  switch (K / 8) {
    case 8: return launch_heads_gemv<8>(a, rope, s);
    case 16: return launch_heads_gemv<16>(a, rope, s);
    case 32: return launch_heads_gemv<32>(a, rope, s);
    case 64: return launch_heads_gemv<64>(a, rope, s);
    default: return launch_heads_gemv<128>(a, rope, s);
  }
}

// mla_rope_kv_write's operands, after its shape checks (vec: the latent path's 16-byte condition).
RopeKvArgs rope_kv_args(const bf16_t* q, bf16_t* kv_a, bf16_t* q_lat, const MlaShape& m, const int32_t* positions,
                        const float* inv_freq, float mscale, const bf16_t* kv_norm_w, float eps, const int32_t* slots,
                        bf16_t* cache) {
  CHECK(m.qk_rope > 0 && m.qk_rope % 2 == 0 && m.qk_rope <= 128 && m.kv_lora_rank > 0 && m.n_heads > 0);
  const int L = m.kv_lora_rank + m.qk_rope;
  const bool vec = m.kv_lora_rank % 8 == 0 && L % 8 == 0 && aligned16(kv_a) && aligned16(kv_norm_w) && aligned16(cache);
  return RopeKvArgs{q, kv_a, q_lat, m, positions, inv_freq, mscale, kv_norm_w, eps, slots, cache, vec};
}

}  // namespace

void rmsnorm_rows(bf16_t* x, int T, int width, int64_t row_stride, const bf16_t* w, float eps, cudaStream_t s) {
  CHECK(width > 0 && width <= 8192 && row_stride >= width);
  if (T <= 0) return;
  const bool vec = width % 8 == 0 && row_stride % 8 == 0 && aligned16(x) && aligned16(w);
  launch_pdl(rmsnorm_rows_kernel, dim3(static_cast<unsigned>(T)), dim3(kThreads), 0, s, x, width, row_stride, w, eps,
             vec);
}

void mla_rope_kv_write(const bf16_t* q, bf16_t* kv_a, bf16_t* q_lat, const MlaShape& m, int T,
                       const int32_t* positions, const float* inv_freq, float mscale, const bf16_t* kv_norm_w,
                       float eps, const int32_t* slots, bf16_t* cache, cudaStream_t s) {
  const RopeKvArgs a = rope_kv_args(q, kv_a, q_lat, m, positions, inv_freq, mscale, kv_norm_w, eps, slots, cache);
  if (T <= 0) return;
  launch_pdl(mla_rope_kv_write_kernel, dim3(static_cast<unsigned>(T)), dim3(kThreads), 0, s, a);
}

void mla_rope_absorb(const bf16_t* q, bf16_t* kv_a, bf16_t* q_lat, const MlaShape& m, int T,
                     const int32_t* positions, const float* inv_freq, float mscale, const bf16_t* kv_norm_w,
                     float eps, const int32_t* slots, bf16_t* cache, const bf16_t* k_b, cudaStream_t s) {
  const RopeKvArgs rope = rope_kv_args(q, kv_a, q_lat, m, positions, inv_freq, mscale, kv_norm_w, eps, slots, cache);
  const int r = m.kv_lora_rank, L = r + m.qk_rope, qk = m.qk_nope + m.qk_rope, H = m.n_heads;
  CHECK(heads_gemv_supported(T, r, m.qk_nope) && qk % 8 == 0 && L % 8 == 0 && aligned16(q) && aligned16(k_b));
  if (T <= 0) return;
  heads_gemv_any(HeadsGemvArgs{q, int64_t{H} * qk, qk, k_b, q_lat, int64_t{H} * L, L, T, H * r, r}, m.qk_nope, &rope,
                 s);
}

bool heads_gemv_supported(int T, int N, int K) {
  const int K8 = K / 8;
  const bool k_ok = K % 8 == 0 && (K8 == 8 || K8 == 16 || K8 == 32 || K8 == 64 || K8 == 128);
  return k_ok && T >= 0 && T <= kHeadsGemvMaxTokens && N % (32 * kGemvChunks / K8) == 0;  // a warp's rows
}

void heads_gemv_bf16(const bf16_t* x, int64_t ldx, int64_t sx, const bf16_t* W, bf16_t* y, int64_t ldy, int64_t sy,
                     int T, int H, int N, int K, cudaStream_t s) {
  CHECK(heads_gemv_supported(T, N, K) && H > 0 && N > 0 && sx % 8 == 0 && ldx % 8 == 0);
  CHECK(aligned16(x) && aligned16(W));
  if (T == 0) return;
  heads_gemv_any(HeadsGemvArgs{x, ldx, sx, W, y, ldy, sy, T, H * N, N}, K, nullptr, s);
}

MlaPlan mla_attention_plan(int T, int n_heads, bool tensor_cores_ok) {
  bool clusters = false;
  const int sms = device_sms(&clusters);
  // Splits over a cluster (up to max_splits) while `blocks` times the split still fit the SMs twice over.
  auto splits_for = [&](int64_t blocks, int max_splits) {
    int n = 1;
    if (clusters)
      while (n < max_splits && blocks * n * 2 <= sms) n *= 2;
    return n;
  };
  const int64_t groups = int64_t{T} * ((n_heads + 15) / 16);  // (token, 16-head group) blocks
  // Tensor cores wherever the shape allows, with the keys split over a cluster while the (token, 16-head group)
  // blocks times the split still fit the SMs. H100, V2-Lite's shape (us; SIMT's best plan / tensor cores unsplit /
  // split): T 1 context 256: 10.7 / 28.1 / 8.9 (8 splits); T 1 context 1024: 28.2 / 105 / 18.1; T 16 context 1024:
  // 94.8 / 106 / 24.2 (8); T 64 context 256: 65.1 / 28.7 / 18.9 (2).
  if (tensor_cores_ok) {
    static const int max_splits = env_is("CITADEL_MLA_MAX_SPLITS", "16") ? 16 : kMaxSplits;  // benchmarks
    return MlaPlan{16, splits_for(groups, max_splits), true};
  }
  MlaPlan plan;
  // Even 8-way clusters of 16-head blocks would leave over half the SMs idle: smaller head groups first.
  if (n_heads > 4 && groups * kMaxSplits * 2 <= sms) plan.heads_per_block = 4;
  plan.n_splits = splits_for(int64_t{T} * ((n_heads + plan.heads_per_block - 1) / plan.heads_per_block), kMaxSplits);
  return plan;
}

void mla_attention_run(const MlaAttention& p, const MlaShape& m, const bf16_t* q_lat, int T, bf16_t* out,
                       const MlaPlan& plan, cudaStream_t s) {
  const int L = m.kv_lora_rank + m.qk_rope;
  CHECK(m.kv_lora_rank > 0 && m.kv_lora_rank % 2 == 0 && m.kv_lora_rank <= kMaxRank);
  CHECK(m.qk_rope >= 0 && m.qk_rope % 2 == 0 && L <= kMaxRow && m.n_heads > 0);
  CHECK(plan.heads_per_block == 4 || plan.heads_per_block == 16);
  CHECK(plan.n_splits == 1 || plan.n_splits == 2 || plan.n_splits == 4 || plan.n_splits == 8 ||
        (plan.tensor_cores && plan.n_splits == 16));  // 16: the tensor-core kernel's non-portable clusters
  CHECK(int64_t{T} * plan.n_splits < (int64_t{1} << 31));
  if (T <= 0) return;
  if (plan.tensor_cores) {
    CHECK(plan.heads_per_block == 16);
    mla_attention_mma(p, m, q_lat, T, out, s, plan.n_splits);
    return;
  }
  if (plan.heads_per_block == 4) dispatch_attention<4>(p, m, q_lat, T, out, plan.n_splits, s);
  else dispatch_attention<16>(p, m, q_lat, T, out, plan.n_splits, s);
}

void mla_attention(const MlaAttention& p, const MlaShape& m, const bf16_t* q_lat, int T, bf16_t* out, cudaStream_t s) {
  if (T <= 0) return;
  const bool mma_ok = mla_attention_mma_supported(m) && reinterpret_cast<uintptr_t>(p.cache) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(q_lat) % 16 == 0;
  mla_attention_run(p, m, q_lat, T, out, mla_attention_plan(T, m.n_heads, mma_ok), s);
}

}  // namespace citadel::cuda
