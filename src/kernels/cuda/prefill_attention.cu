// Prompt attention over the block pool (paged_attention_prefill in cuda_ops.h): causal, flash-style on mma.sync bf16
// tensor cores with register-resident S/P/O, split-KV with a log-sum-exp merge for grids smaller than the GPU; and
// the older wmma kernel (S, P and O staged in shared memory), kept for the benchmark and tests.
#include <mma.h>

#include <algorithm>
#include <cfloat>

#include "base/env.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {
namespace {

using namespace dev;

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
// prefill_chunks blocks. The tiles a chunk: the context's tiles over kPrefillMaxChunks, at least 4 (a choice, not a
// measured optimum: fewer tiles a chunk shorten the critical path but add partial outputs to write and merge).
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

namespace {

// One prompt's launch at head_dim kD: the mma.sync kernel over `grid`, then (split > 0) the merge of its chunks.
template <int kD>
void launch_prefill(dim3 grid, const PagedAttention& p, int seq, const bf16_t* q, int q_stride, int n_q, bf16_t* out,
                    int split, int first_pos, float* ws, cudaStream_t s) {
  static bool configured = false;  // idempotent attribute; the flag only skips the call
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(paged_prefill_mma_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(prefill_mma_smem<kD>())));
    configured = true;
  }
  paged_prefill_mma_kernel<kD><<<grid, 128, prefill_mma_smem<kD>(), s>>>(p, seq, q, q_stride, n_q, out, split,
                                                                          first_pos, ws);
  if (split) prefill_merge_kernel<kD><<<n_q, 256, 0, s>>>(first_pos, n_q, p.n_heads, split, ws, out);
}

}  // namespace

void paged_attention_prefill(const PagedAttention& p, int seq, const bf16_t* q, int q_stride, int n_q, bf16_t* out,
                             cudaStream_t s, int ctx, float* workspace, int64_t workspace_floats) {
  if (n_q <= 0) return;
  CHECK_MSG(p.head_dim == 64 || p.head_dim == 128 || p.head_dim == 256,
            "prefill attention: head_dim must be 64, 128 or 256");
  CHECK(q_stride % 2 == 0 && p.window >= 0);
  CHECK(ctx == 0 || ctx >= n_q);
  const int n_qt = (n_q + kMmaBQ - 1) / kMmaBQ, bk = p.head_dim > 128 ? mma_bk<256>() : mma_bk<128>();
  // Split-KV when asked for, only while the plain grid leaves SMs idle (on an H100, 28 heads, 7-8 query tiles
  // (196-224 blocks) ran 3-7 % slower split: the merge and the partials' traffic; one tile (28 blocks) at context
  // 4096 4.4x faster), and only if the heaviest tile has more than one chunk. grid.x: every tile's chunks.
  static const bool split_on = !env_is("CITADEL_PREFILL_SPLIT", "0");
  int split = 0, items = n_qt;
  if (split_on && ctx > 0 && workspace && p.window == 0 && n_q <= kPrefillSplitMaxQ && p.n_heads <= 64 &&
      n_qt * p.n_heads < device_sms() && workspace_floats >= prefill_workspace_floats(n_q, p.n_heads, p.head_dim)) {
    split = prefill_split_tiles(ctx, bk);
    items = 0;
    for (int qt = 0; qt < n_qt; ++qt) items += prefill_chunks(qt, n_q, ctx - n_q, bk, split);
    if (items == n_qt) split = 0;  // one chunk per tile: the plain launch
  }
  const dim3 grid(static_cast<unsigned>(items), static_cast<unsigned>(p.n_heads));
  if (p.head_dim == 64)
    launch_prefill<64>(grid, p, seq, q, q_stride, n_q, out, split, ctx - n_q, workspace, s);
  else if (p.head_dim == 128)
    launch_prefill<128>(grid, p, seq, q, q_stride, n_q, out, split, ctx - n_q, workspace, s);
  else
    launch_prefill<256>(grid, p, seq, q, q_stride, n_q, out, split, ctx - n_q, workspace, s);
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
