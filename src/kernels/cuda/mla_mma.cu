// Absorbed MLA attention on tensor cores (mla.h: mla_attention_mma), for steps with many query tokens (prefill,
// large decode batches). A block takes one token and 16 heads: the 16 heads are the M = 16 rows of every MMA, so one
// shared latent key row serves all of them.
//
// Keys come in tiles of 32 rows [r | rope] through a cp.async double buffer (rows past the visible keys zero-filled).
// Per tile, with 8 warps:
//   S [16 heads][32 keys] = Q K^T over L = 576: warp w takes keys 8 (w % 4) .. +7 and half (w / 4) of the 36 k-steps;
//   the two halves meet in shared memory (fp32);
//   online softmax: warp w takes heads 2w and 2w + 1, a lane per key (log2 domain, fp32 running max and sum); the
//   probabilities are rounded to bf16 for P V and the sum adds the rounded values;
//   O [16][r] += P [16][32] V [32][r]: warp w owns latent columns 64 w .. 64 w + 63 (fp32 accumulators in registers),
//   V fragments by ldmatrix.trans from the same key tile.
// With a cluster of S blocks (few tokens: the GPU would idle), rank k takes the k-th slice of the keys; the ranks'
// (max, sum, unnormalised O) meet through distributed shared memory, each rank merging 1/S of the output.
#include <cooperative_groups.h>

#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mla.h"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr int kRank = 512, kRope = 64, kRow = kRank + kRope;  // the shapes of DeepSeek-V2/V3's MLA
constexpr int kHeads = 16, kKeys = 32, kWarps = 8, kThreads = kWarps * 32;
constexpr int kLdRow = kRow + 8;   // bf16 pitch of Q and key rows: 1168 bytes, ldmatrix rows on distinct banks
constexpr int kLdP = kKeys + 8;    // bf16 pitch of P rows
constexpr int kKSteps = kRow / 16; // 36 k-steps of 16 in the score
constexpr int kColsPerWarp = kRank / kWarps;  // 64 output columns per warp
static_assert(kKSteps % 4 == 0, "each score half takes an even number of k-step pairs");

struct Smem {
  uint16_t q[kHeads * kLdRow];
  uint16_t keys[2][kKeys * kLdRow];  // after the key loop (splits): the rank's unnormalised O [16][kRank] fp32
  float s_part[2][kHeads][kKeys];
  uint16_t p[kHeads * kLdP];
  float alpha[kHeads];
  float l_final[kHeads];
  float m_final[kHeads];
  int seq;
};
static_assert(sizeof(Smem::keys) >= kHeads * kRank * sizeof(float), "the partial O fits the key buffers");
constexpr int kPortableSplits = 8;  // the portable cluster size: the default plans' largest
constexpr int kMaxMmaSplits = 16;   // a non-portable cluster (Hopper allows it, opted in at launch): kernel<16>

// The ranks' partials merged by log-sum-exp: this rank's unnormalised O (its warps' accumulators) to shared memory,
// then rank k normalises and writes every S-th group of 8 columns of every head from all ranks' (max, sum, O).
template <int MAXS>
__device__ void merge_splits(Smem& sm, const float (&acc)[kColsPerWarp / 8][4], uint16_t* ot, int rank,
                             int n_splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* o_s = reinterpret_cast<float*>(sm.keys);  // [16][kRank]
#pragma unroll
  for (int j = 0; j < kColsPerWarp / 8; ++j) {
    const int col = warp * kColsPerWarp + j * 8 + (lane & 3) * 2, row = lane >> 2;
    *reinterpret_cast<float2*>(o_s + row * kRank + col) = make_float2(acc[j][0], acc[j][1]);
    *reinterpret_cast<float2*>(o_s + (row + 8) * kRank + col) = make_float2(acc[j][2], acc[j][3]);
  }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  // item = (head, pair of columns); rank k takes items k, k + S, ...
  for (int e = rank * kThreads + threadIdx.x; e < kHeads * (kRank / 2); e += n_splits * kThreads) {
    const int h = e / (kRank / 2), c = 2 * (e % (kRank / 2));
    float mk[MAXS], lk[MAXS];
    float2 ok[MAXS];
#pragma unroll
    for (int k = 0; k < MAXS; ++k) {  // independent remote loads, in flight together
      if (k >= n_splits) break;
      const Smem* rk = cluster.map_shared_rank(&sm, k);
      mk[k] = rk->m_final[h], lk[k] = rk->l_final[h];
      ok[k] = *reinterpret_cast<const float2*>(reinterpret_cast<const float*>(rk->keys) + h * kRank + c);
    }
    *reinterpret_cast<uint32_t*>(ot + h * kRank + c) = merge_split_pair(n_splits, mk, lk, ok);
  }
  cluster.sync();  // the other ranks' shared memory stays alive until every rank has read it
#endif
}

// grid (T * S, H / 16), kThreads threads, dynamic shared memory sizeof(Smem), cluster (S, 1, 1) when S > 1.
// MAXS: the most splits the launch may have (8, or 16 for a non-portable cluster); it sizes the merge's arrays.
template <int MAXS>
__global__ void __launch_bounds__(kThreads) mla_attention_mma_kernel(MlaAttention p, int H, const uint16_t* q_lat,
                                                                     uint16_t* out, float qscale, int n_splits) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int t = blockIdx.x / n_splits, rank = blockIdx.x % n_splits, h0 = blockIdx.y * kHeads;
  const bool early = p.early_keys && p.query_start == nullptr;
  int n_keys = 0, begin = 0;  // this rank's keys: begin .. n_keys - 1
  const int32_t* bt = nullptr;
  auto bounds = [&](int b) {
    const int cap = p.max_blocks_per_seq * p.block_size;
    const int n_all = max(0, min(min(p.positions[t] + 1, p.seq_lens[b]), cap));
    const int2 slice = split_slice(n_all, rank, n_splits, kKeys);
    begin = slice.x, n_keys = slice.y;
    bt = p.block_tables + static_cast<int64_t>(b) * p.max_blocks_per_seq;
  };
  auto slot_of = [&](int pos) {
    return static_cast<int64_t>(bt[pos / p.block_size]) * p.block_size + pos % p.block_size;
  };
  // Key rows start .. start + 31 into buffer buf (rows past the keys zero-filled), all but key `skip`.
  auto load_tile = [&](int start, int buf, int skip) {
    uint16_t* dst = sm.keys[buf];
    for (int c = tid; c < kKeys * (kRow / 8); c += kThreads) {
      const int row = c / (kRow / 8), ch = c % (kRow / 8), pos = start + row;
      if (pos == skip && pos < n_keys) continue;
      const bool ok = pos < n_keys;
      cp_async16(dst + row * kLdRow + ch * 8, p.cache + (ok ? slot_of(pos) : 0) * kRow + ch * 8, ok);
    }
    cp_async_commit();
  };
  // early: the first tile's rows but the step's own (positions[t], the previous kernel's) before the wait.
  pdl_trigger_early();
  const int fresh = early ? p.positions[t] : -1;
  if (early) {
    bounds(t);
    if (begin < n_keys) load_tile(begin, 0, fresh);
  }
  pdl_wait();
  pdl_trigger_late();
  if (!early && tid == 0) {
    int b = t;
    if (p.query_start) {
      b = 0;
      while (p.query_start[b + 1] <= t) ++b;
    }
    sm.seq = b;
  }
  const uint16_t* qt = q_lat + (static_cast<int64_t>(t) * H + h0) * kRow;
  for (int c = tid; c < kHeads * (kRow / 8); c += kThreads) {
    const int h = c / (kRow / 8), ch = c % (kRow / 8);
    cp_async16(sm.q + h * kLdRow + ch * 8, qt + h * kRow + ch * 8);
  }
  if (early && fresh >= begin && fresh < min(n_keys, begin + kKeys))
    for (int ch = tid; ch < kRow / 8; ch += kThreads)
      cp_async16(sm.keys[0] + (fresh - begin) * kLdRow + ch * 8, p.cache + slot_of(fresh) * kRow + ch * 8);
  cp_async_commit();
  if (!early) {
    __syncthreads();
    bounds(sm.seq);
    if (begin < n_keys) load_tile(begin, 0, -1);
  }

  // softmax state of heads 2 warp and 2 warp + 1 (lane-uniform)
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
  float acc[kColsPerWarp / 8][4];
#pragma unroll
  for (int j = 0; j < kColsPerWarp / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

  int buf = 0;
  for (int start = begin; start < n_keys; start += kKeys, buf ^= 1) {
    if (start + kKeys < n_keys) {
      load_tile(start + kKeys, buf ^ 1, -1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint16_t* tile = sm.keys[buf];
    {  // partial scores: keys 8 nt .. 8 nt + 7, k-steps [half * 18, half * 18 + 18)
      const int nt = warp & 3, half = warp >> 2;
      float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 3
      for (int ks = half * (kKSteps / 2); ks < (half + 1) * (kKSteps / 2); ks += 2) {
        uint32_t a0[4], a1[4], kb[4];  // Q for k-steps ks, ks + 1; K: (ks lo, ks hi, ks+1 lo, ks+1 hi)
        ldmatrix_x4(a0, sm.q + (lane & 15) * kLdRow + ks * 16 + (lane >> 4) * 8);
        ldmatrix_x4(a1, sm.q + (lane & 15) * kLdRow + (ks + 1) * 16 + (lane >> 4) * 8);
        ldmatrix_x4(kb, tile + (nt * 8 + (lane & 7)) * kLdRow + ks * 16 + (lane >> 3) * 8);
        mma_bf16_16816(s, a0[0], a0[1], a0[2], a0[3], kb[0], kb[1]);
        mma_bf16_16816(s, a1[0], a1[1], a1[2], a1[3], kb[2], kb[3]);
      }
      const int row = lane >> 2, col = nt * 8 + (lane & 3) * 2;
      sm.s_part[half][row][col] = s[0], sm.s_part[half][row][col + 1] = s[1];
      sm.s_part[half][row + 8][col] = s[2], sm.s_part[half][row + 8][col + 1] = s[3];
    }
    __syncthreads();
    const int n = min(kKeys, n_keys - start);
#pragma unroll
    for (int i = 0; i < 2; ++i) {  // online softmax of head 2 warp + i, lane = key of the tile
      const int h = 2 * warp + i;
      const float s = lane < n ? (sm.s_part[0][h][lane] + sm.s_part[1][h][lane]) * qscale : -INFINITY;
      const float m_new = fmaxf(m_run[i], warp_max(s));  // finite: key 0 of the tile is visible
      const float alpha = exp2f(m_run[i] - m_new);
      const uint16_t pb = f2bf(exp2f(s - m_new));
      l_run[i] = l_run[i] * alpha + warp_sum(bf16f(pb));
      m_run[i] = m_new;
      sm.p[h * kLdP + lane] = pb;
      if (lane == 0) sm.alpha[h] = alpha;
    }
    __syncthreads();
    {  // O += P V over this warp's 64 latent columns
      const float a_lo = sm.alpha[lane >> 2], a_hi = sm.alpha[(lane >> 2) + 8];
#pragma unroll
      for (int j = 0; j < kColsPerWarp / 8; ++j) {
        acc[j][0] *= a_lo, acc[j][1] *= a_lo, acc[j][2] *= a_hi, acc[j][3] *= a_hi;
      }
#pragma unroll
      for (int kc = 0; kc < kKeys / 16; ++kc) {
        uint32_t pa[4];
        ldmatrix_x4(pa, sm.p + (lane & 15) * kLdP + kc * 16 + (lane >> 4) * 8);
        const uint16_t* vrow =
            tile + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLdRow + warp * kColsPerWarp + (lane >> 4) * 8;
#pragma unroll
        for (int n2 = 0; n2 < kColsPerWarp / 16; ++n2) {
          uint32_t b0, b1, b2, b3;
          ldmatrix_x4_trans(b0, b1, b2, b3, vrow + n2 * 16);
          mma_bf16_16816(acc[2 * n2], pa[0], pa[1], pa[2], pa[3], b0, b1);
          mma_bf16_16816(acc[2 * n2 + 1], pa[0], pa[1], pa[2], pa[3], b2, b3);
        }
      }
    }
    __syncthreads();  // the next iteration's copies overwrite this buffer; P and alpha are rewritten
  }
  cp_async_wait<0>();  // the Q copies when there were no keys
  if (lane == 0) sm.l_final[2 * warp] = l_run[0], sm.l_final[2 * warp + 1] = l_run[1];
  if (lane == 0) sm.m_final[2 * warp] = m_run[0], sm.m_final[2 * warp + 1] = m_run[1];
  __syncthreads();
  if (n_splits > 1) {
    merge_splits<MAXS>(sm, acc, out + (static_cast<int64_t>(t) * H + h0) * kRank, rank, n_splits);
    return;
  }
  const float l_lo = sm.l_final[lane >> 2], l_hi = sm.l_final[(lane >> 2) + 8];
  const float inv_lo = l_lo > 0.f ? 1.f / l_lo : 0.f, inv_hi = l_hi > 0.f ? 1.f / l_hi : 0.f;
  uint16_t* ot = out + (static_cast<int64_t>(t) * H + h0) * kRank;
#pragma unroll
  for (int j = 0; j < kColsPerWarp / 8; ++j) {
    const int col = warp * kColsPerWarp + j * 8 + (lane & 3) * 2, row = lane >> 2;
    *reinterpret_cast<uint32_t*>(ot + row * kRank + col) = pack_bf16x2(acc[j][0] * inv_lo, acc[j][1] * inv_lo);
    *reinterpret_cast<uint32_t*>(ot + (row + 8) * kRank + col) = pack_bf16x2(acc[j][2] * inv_hi, acc[j][3] * inv_hi);
  }
}

}  // namespace

bool mla_attention_mma_supported(const MlaShape& m) {
  return m.kv_lora_rank == kRank && m.qk_rope == kRope && m.n_heads % kHeads == 0;
}

void mla_attention_mma(const MlaAttention& p, const MlaShape& m, const bf16_t* q_lat, int T, bf16_t* out,
                       cudaStream_t s, int n_splits) {
  CHECK(mla_attention_mma_supported(m));
  CHECK(n_splits == 1 || n_splits == 2 || n_splits == 4 || n_splits == 8 || n_splits == kMaxMmaSplits);
  CHECK(reinterpret_cast<uintptr_t>(p.cache) % 16 == 0 && reinterpret_cast<uintptr_t>(q_lat) % 16 == 0);
  if (T <= 0) return;
  static bool configured = false;  // idempotent attributes; the flag only skips the calls
  if (!configured) {
    for (auto* k : {mla_attention_mma_kernel<kPortableSplits>, mla_attention_mma_kernel<kMaxMmaSplits>})
      CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(sizeof(Smem))));
    CUDA_CHECK(cudaFuncSetAttribute(mla_attention_mma_kernel<kMaxMmaSplits>,
                                    cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    configured = true;
  }
  auto* kernel = n_splits > kPortableSplits ? mla_attention_mma_kernel<kMaxMmaSplits>
                                            : mla_attention_mma_kernel<kPortableSplits>;
  launch_pdl_cluster(kernel, dim3(static_cast<unsigned>(T * n_splits), static_cast<unsigned>(m.n_heads / kHeads)),
                     dim3(kThreads), sizeof(Smem), s, n_splits, p, m.n_heads, q_lat, out,
                     p.scale * 1.4426950408889634f, n_splits);
}

}  // namespace citadel::cuda
