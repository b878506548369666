// The fp32 "exact" path (CudaWeightFormat::kF32): embedding, residual-add + RMSNorm, GEMV, SiLU-mul, row gather,
// fused RoPE + KV write and paged attention, all on fp32 weights, activations and KV pools.
//
// Correctness first: plain SIMT kernels with IEEE fp32 arithmetic (expf, sqrtf, true division; no __expf or rsqrtf)
// and fixed reduction orders, so every launch is deterministic and its results differ from the CPU exact mode
// (src/kernels/cpu) only by fp32 summation order. RoPE follows the CPU twin (src/kernels/cpu/rope.cc): the angle
// pos * theta^(-2i/head_dim) and its cos/sin in double, rounded to fp32, then the rotation in fp32 without fused
// multiply-adds. An fp32 angle would be off by ~1e-3 rad at positions of tens of thousands.
// Launches use programmatic dependent launch (common.cuh): every kernel waits for its predecessor before touching
// global memory, so results are the same as with plain launches.
#include <algorithm>
#include <cfloat>
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/rows.cuh"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr int kThreads = 256;      // elementwise / row kernels
constexpr int kGemvThreads = 128;  // gemv: 4 warps split K
constexpr int kGemvM = 8;          // gemv: inputs per block (x rows sharing one pass over the weight row)
constexpr int kAttnWarps = 8;      // attention: warps per (query, head)
constexpr int kMaxHeadDim = 256;
constexpr int kMaxPerLane = kMaxHeadDim / 32;  // head dims per lane: lane + 32 j, j < kMaxPerLane

// grid (N, ceil(M / kGemvM)), kGemvThreads threads. Block (n, mb) computes y[m][n] for m in [mb*kGemvM, +kGemvM):
// thread j accumulates k = j, j + 128, ... (VEC: float4 chunks k/4 = j, j + 128, ...) for every m in fp32 fmaf,
// then per m: warp butterfly, then the 4 warp sums in warp order, then + bias.
template <bool VEC>
__global__ void __launch_bounds__(kGemvThreads) gemv_f32_kernel(const float* x, const float* W, const float* bias,
                                                                 float* y, int M, int N, int K) {
  __shared__ float red[kGemvM][kGemvThreads / 32];
  pdl_wait();
  pdl_trigger();
  const int n = blockIdx.x;
  const int m0 = blockIdx.y * kGemvM;
  const int mc = min(kGemvM, M - m0);  // >= 1
  const float* w = W + static_cast<int64_t>(n) * K;
  const float* xb = x + static_cast<int64_t>(m0) * K;
  float acc[kGemvM];
#pragma unroll
  for (int i = 0; i < kGemvM; ++i) acc[i] = 0.f;
  if constexpr (VEC) {
    const int K4 = K / 4;
    const float4* w4 = reinterpret_cast<const float4*>(w);
    for (int k4 = threadIdx.x; k4 < K4; k4 += kGemvThreads) {
      const float4 wv = __ldg(w4 + k4);
#pragma unroll
      for (int i = 0; i < kGemvM; ++i) {
        if (i < mc) {
          const float4 xv = __ldg(reinterpret_cast<const float4*>(xb + static_cast<int64_t>(i) * K) + k4);
          float a = acc[i];
          a = fmaf(wv.x, xv.x, a);
          a = fmaf(wv.y, xv.y, a);
          a = fmaf(wv.z, xv.z, a);
          a = fmaf(wv.w, xv.w, a);
          acc[i] = a;
        }
      }
    }
  } else {
    for (int k = threadIdx.x; k < K; k += kGemvThreads) {
      const float wv = __ldg(w + k);
#pragma unroll
      for (int i = 0; i < kGemvM; ++i)
        if (i < mc) acc[i] = fmaf(wv, __ldg(xb + static_cast<int64_t>(i) * K + k), acc[i]);
    }
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < kGemvM; ++i) {
    const float v = warp_sum(acc[i]);  // all lanes take part (acc is 0 for i >= mc)
    if (lane == 0) red[i][warp] = v;
  }
  __syncthreads();
  if (threadIdx.x < mc) {
    const int i = threadIdx.x;
    float s = 0.f;
#pragma unroll
    for (int wi = 0; wi < kGemvThreads / 32; ++wi) s += red[i][wi];
    if (bias) s += bias[n];
    y[static_cast<int64_t>(m0 + i) * N + n] = s;
  }
}

// grid (rows): dst[r] = src[index[r]].
__global__ void gather_rows_f32_kernel(const float* src, const int32_t* index, float* dst, int cols) {
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.x;
  const float* s = src + static_cast<int64_t>(index[r]) * cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[r * cols + i] = s[i];
}

// grid (T, n_heads + n_kv_heads), kThreads threads. Block (t, h) rotates head h of row t (q heads, then k heads) in
// place, one pair per thread iteration; k heads (h >= n_heads) then store their rotated pairs and copy their V head
// to slot slots[t] (skipped for -1). Each element is read and written by one thread only: no barrier.
// inv_freq null: theta^(-2i/head_dim); else the scaled RoPE's frequency table and mscale (double, as the CPU twin).
__global__ void rope_kv_write_f32_kernel(float* qkv, int row_stride, int n_heads, int n_kv_heads, int head_dim,
                                         const int32_t* positions, float theta, bool neox, const int32_t* slots,
                                         float* k_pool, float* v_pool, const double* inv_freq, double mscale) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x, h = blockIdx.y;
  const int half = head_dim / 2;
  const double pos = static_cast<double>(positions[t]);
  float* row = qkv + static_cast<int64_t>(t) * row_stride;
  float* hp = row + static_cast<int64_t>(h) * head_dim;
  const int slot = h >= n_heads ? slots[t] : -1;
  const int kvh = h - n_heads;
  const int64_t dst = (static_cast<int64_t>(slot) * n_kv_heads + kvh) * head_dim;  // used only when slot >= 0
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    // The CPU twin's formula (rope.cc): angle and cos/sin in double, rounded to fp32.
    const double ang = inv_freq ? pos * inv_freq[i] : pos * pow(static_cast<double>(theta), -2.0 * i / head_dim);
    double sd, cd;
    sincos(ang, &sd, &cd);
    if (inv_freq) sd *= mscale, cd *= mscale;
    const float c = static_cast<float>(cd), sn = static_cast<float>(sd);
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    const float x0 = hp[a], x1 = hp[b];
    const float y0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn));  // no FMA contraction: as the CPU
    const float y1 = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, c));
    hp[a] = y0;
    hp[b] = y1;
    if (slot >= 0) {
      k_pool[dst + a] = y0;
      k_pool[dst + b] = y1;
    }
  }
  if (slot >= 0) {
    const float* vs = row + static_cast<int64_t>(n_heads + n_kv_heads + kvh) * head_dim;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) v_pool[dst + i] = vs[i];
  }
}

// grid (n_q * n_heads, n_splits): block (query i = blockIdx.x / n_heads, head h = blockIdx.x % n_heads, split)
// covers the visible keys [split * partition, (split + 1) * partition) of query i (prefill: causal, bottom-right
// aligned; decode: the whole context), kAttnWarps warps. Warp w takes groups of kTok consecutive keys (group w,
// w + kAttnWarps, ...): all K and V loads of a group are issued before its scores are used, then an online softmax
// per key in key order: the score is the warp sum of q.k over the lane's dims (lane + 32 j) times scale; the running
// max m, sum l and the lane's output dims o[j] are rescaled by exp(m_old - m_new). The warps' (m, l, o) merge through
// shared memory in warp order: M = max_w m_w, L = sum_w l_w exp(m_w - M), O = sum_w o_w exp(m_w - M). One split
// writes O / L; several write (M, L, O) to ws [n_q * n_heads][n_splits][2 + head_dim] for attention_merge_f32_kernel.
// Shared memory is O(kAttnWarps * head_dim), independent of the context length.
constexpr int kTok = 4;
__global__ void __launch_bounds__(kAttnWarps * 32) paged_attention_f32_kernel(PagedAttention p, const float* k_pool,
                                                                              const float* v_pool, int seq,
                                                                              const float* q, int q_stride, int n_q,
                                                                              int partition, float* out, float* ws) {
  __shared__ float qs[kMaxHeadDim];
  __shared__ float ws_o[kAttnWarps][kMaxHeadDim];
  __shared__ float ws_m[kAttnWarps], ws_l[kAttnWarps];
  pdl_wait();
  pdl_trigger();
  const int D = p.head_dim;
  const int i = blockIdx.x / p.n_heads, h = blockIdx.x % p.n_heads;
  const int kvh = h / (p.n_heads / p.n_kv_heads);
  const int b = seq >= 0 ? seq : i;
  const int ctx = p.seq_lens[b];
  const int n_vis = max(0, min(ctx, seq >= 0 ? ctx - n_q + i + 1 : ctx));
  const int lo = p.window > 0 ? max(0, n_vis - p.window) : 0;  // sliding window: the last p.window visible keys
  const int start = max(lo, static_cast<int>(blockIdx.y) * partition);
  const int end = min(n_vis, static_cast<int>(blockIdx.y) * partition + partition);
  const float* qh = q + static_cast<int64_t>(i) * q_stride + static_cast<int64_t>(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qh[d];
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int32_t* bt = p.block_tables + static_cast<int64_t>(b) * p.max_blocks_per_seq;
  const int64_t row_elems = static_cast<int64_t>(p.n_kv_heads) * D;
  float qv[kMaxPerLane], o[kMaxPerLane];
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int d = lane + 32 * j;
    qv[j] = d < D ? qs[d] : 0.f;
    o[j] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int t0 = start + warp * kTok; t0 < end; t0 += kAttnWarps * kTok) {  // warp-uniform: shuffles see all lanes
    float kr[kTok][kMaxPerLane], vr[kTok][kMaxPerLane];
#pragma unroll
    for (int u = 0; u < kTok; ++u) {
      const int t = min(t0 + u, end - 1);  // past the end: a repeat of the last key, masked below
      const int64_t slot = static_cast<int64_t>(bt[t / p.block_size]) * p.block_size + t % p.block_size;
      const float* kp = k_pool + slot * row_elems + static_cast<int64_t>(kvh) * D;
      const float* vp = v_pool + slot * row_elems + static_cast<int64_t>(kvh) * D;
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int d = lane + 32 * j;
        kr[u][j] = d < D ? __ldg(kp + d) : 0.f;
        vr[u][j] = d < D ? __ldg(vp + d) : 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < kTok; ++u) {
      if (t0 + u >= end) break;  // warp-uniform
      float dot = 0.f;
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) dot = fmaf(qv[j], kr[u][j], dot);
      const float s = warp_sum(dot) * p.scale;
      const float m_new = fmaxf(m, s);
      const float corr = expf(m - m_new);  // 0 for the first key (m = -inf), 1 while the max holds
      const float pr = expf(s - m_new);
      l = l * corr + pr;
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) o[j] = o[j] * corr + pr * vr[u][j];
      m = m_new;
    }
  }
  if (lane == 0) ws_m[warp] = m, ws_l[warp] = l;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int d = lane + 32 * j;
    if (d < D) ws_o[warp][d] = o[j];
  }
  __syncthreads();

  float M = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, ws_m[w]);
  float f[kAttnWarps];
  float L = 0.f;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) {
    f[w] = ws_m[w] == -INFINITY ? 0.f : expf(ws_m[w] - M);  // a warp without keys contributes nothing
    L += ws_l[w] * f[w];
  }
  const int64_t qh_index = static_cast<int64_t>(i) * p.n_heads + h;
  if (gridDim.y == 1) {
    float* oh = out + qh_index * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float acc = 0.f;
#pragma unroll
      for (int w = 0; w < kAttnWarps; ++w) acc += ws_o[w][d] * f[w];
      oh[d] = L > 0.f ? acc / L : 0.f;  // no visible key: zero row
    }
    return;
  }
  float* part = ws + (qh_index * gridDim.y + blockIdx.y) * (2 + D);
  if (threadIdx.x == 0) part[0] = M, part[1] = L;  // M = -inf, L = 0: no key in this split
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) acc += ws_o[w][d] * f[w];
    part[2 + d] = acc;
  }
}

// Prefill (seq >= 0) at head_dim D in {64, 128}: grid (ceil(n_q / kPreQ), n_heads), 4 warps. A block takes kPreQ
// consecutive queries of one head and walks the keys the last of them sees in tiles of 32, staged in shared memory
// once for all its queries (K rows padded to D + 4 floats: lane j reading key j's row as float4 is conflict-free).
// Warp w owns tile rows w, w + 4, w + 8, w + 12 and scores them together: lane j reads key j's row once per 4 dims and
// the four query rows as broadcasts (causal mask: keys past a row's position score -inf); per row the warp takes the
// tile max for the online-softmax rescale; then per key, lane dims d = lane + 32 r accumulate p_j V[j][d] for the four
// rows from one read of V[j][d], p_j broadcast by shuffle. IEEE expf as above.
constexpr int kPreQ = 16, kPreKeys = 32, kPreWarps = 4;
template <int D>
__global__ void __launch_bounds__(kPreWarps * 32) prefill_f32_tiled_kernel(PagedAttention p, const float* k_pool,
                                                                           const float* v_pool, int seq,
                                                                           const float* q, int q_stride, int n_q,
                                                                           float* out) {
  constexpr int DL = D / 32, RPW = kPreQ / kPreWarps, D4 = D / 4;
  __shared__ float4 qs[kPreQ][D4];
  __shared__ float4 ks[kPreKeys][D4 + 1];
  __shared__ float vs[kPreKeys][D];
  pdl_wait();
  pdl_trigger();
  const int h = blockIdx.y, kvh = h / (p.n_heads / p.n_kv_heads);
  const int q0 = blockIdx.x * kPreQ;
  const int ctx = p.seq_lens[seq];
  const int first = ctx - n_q;  // context position of query 0
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int i = threadIdx.x; i < kPreQ * D4; i += blockDim.x) {
    const int r = i / D4, c = i % D4;
    qs[r][c] = q0 + r < n_q ? *reinterpret_cast<const float4*>(q + static_cast<int64_t>(q0 + r) * q_stride +
                                                                static_cast<int64_t>(h) * D + 4 * c)
                            : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  const int32_t* bt = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int64_t row_elems = static_cast<int64_t>(p.n_kv_heads) * D;
  const int n_keys = max(0, min(ctx, first + min(n_q, q0 + kPreQ)));  // keys the tile's last query sees
  float o[RPW][DL], m[RPW], l[RPW];
#pragma unroll
  for (int rr = 0; rr < RPW; ++rr) {
    m[rr] = -INFINITY, l[rr] = 0.f;
#pragma unroll
    for (int j = 0; j < DL; ++j) o[rr][j] = 0.f;
  }
  // Sliding window: tiles before the window of the block's first query are skipped.
  const int k_first = p.window > 0 ? max(0, first + q0 + 1 - p.window) / kPreKeys * kPreKeys : 0;
  for (int k0 = k_first; k0 < n_keys; k0 += kPreKeys) {
    __syncthreads();  // the previous tile is consumed (first pass: qs is written)
    for (int i = threadIdx.x; i < kPreKeys * D4; i += blockDim.x) {
      const int j = i / D4, c = i % D4, t = k0 + j;
      float4 kv = make_float4(0.f, 0.f, 0.f, 0.f), vv = kv;
      if (t < n_keys) {
        const int64_t base = (static_cast<int64_t>(bt[t / p.block_size]) * p.block_size + t % p.block_size) *
                                 row_elems + static_cast<int64_t>(kvh) * D + 4 * c;
        kv = *reinterpret_cast<const float4*>(k_pool + base);
        vv = *reinterpret_cast<const float4*>(v_pool + base);
      }
      ks[j][c] = kv;
      *reinterpret_cast<float4*>(&vs[j][4 * c]) = vv;
    }
    __syncthreads();
    float dot[RPW] = {};
#pragma unroll 8
    for (int c = 0; c < D4; ++c) {
      const float4 kv = ks[lane][c];
#pragma unroll
      for (int rr = 0; rr < RPW; ++rr) {
        const float4 qv = qs[warp + kPreWarps * rr][c];
        float d = dot[rr];
        d = fmaf(qv.x, kv.x, d);
        d = fmaf(qv.y, kv.y, d);
        d = fmaf(qv.z, kv.z, d);
        dot[rr] = fmaf(qv.w, kv.w, d);
      }
    }
    float pr[RPW];
#pragma unroll
    for (int rr = 0; rr < RPW; ++rr) {
      const int qi = q0 + warp + kPreWarps * rr;
      // this query sees keys [0, first + qi + 1), the last p.window of them with a window
      const bool live =
          qi < n_q && k0 + lane < first + qi + 1 && (p.window <= 0 || k0 + lane >= first + qi + 1 - p.window);
      const float sc = live ? dot[rr] * p.scale : -INFINITY;
      const float tmax = warp_max(sc);
      pr[rr] = 0.f;
      if (tmax == -INFINITY) continue;  // warp-uniform: no visible key in this tile (or a padding row)
      const float m_new = fmaxf(m[rr], tmax);
      const float corr = expf(m[rr] - m_new);
      pr[rr] = live ? expf(sc - m_new) : 0.f;
      l[rr] = l[rr] * corr + warp_sum(pr[rr]);
#pragma unroll
      for (int j = 0; j < DL; ++j) o[rr][j] *= corr;
      m[rr] = m_new;
    }
    for (int key = 0; key < kPreKeys; ++key) {
      float vv[DL];
#pragma unroll
      for (int j = 0; j < DL; ++j) vv[j] = vs[key][lane + 32 * j];
#pragma unroll
      for (int rr = 0; rr < RPW; ++rr) {
        const float pk = __shfl_sync(0xffffffffu, pr[rr], key);
#pragma unroll
        for (int j = 0; j < DL; ++j) o[rr][j] = fmaf(pk, vv[j], o[rr][j]);
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < RPW; ++rr) {
    const int qi = q0 + warp + kPreWarps * rr;
    if (qi >= n_q) continue;
    float* oh = out + (static_cast<int64_t>(qi) * p.n_heads + h) * D;
#pragma unroll
    for (int j = 0; j < DL; ++j) oh[lane + 32 * j] = l[rr] > 0.f ? o[rr][j] / l[rr] : 0.f;  // no visible key: zeros
  }
}

// grid (n_q * n_heads): out row = sum_s O_s exp(M_s - M) / sum_s L_s exp(M_s - M) over the n_splits partials of
// paged_attention_f32_kernel, in split order (deterministic).
__global__ void attention_merge_f32_kernel(const float* ws, int n_splits, int D, float* out) {
  pdl_wait();
  pdl_trigger();
  const int64_t qh_index = blockIdx.x;
  const float* part = ws + qh_index * n_splits * (2 + D);
  float M = -INFINITY;
  for (int sp = 0; sp < n_splits; ++sp) M = fmaxf(M, part[sp * (2 + D)]);
  float L = 0.f;
  for (int sp = 0; sp < n_splits; ++sp) {
    const float ms = part[sp * (2 + D)];
    if (ms != -INFINITY) L += part[sp * (2 + D) + 1] * expf(ms - M);
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.f;
    for (int sp = 0; sp < n_splits; ++sp) {
      const float ms = part[sp * (2 + D)];
      if (ms != -INFINITY) acc += part[sp * (2 + D) + 2 + d] * expf(ms - M);
    }
    out[qh_index * D + d] = L > 0.f ? acc / L : 0.f;
  }
}

}  // namespace

void embedding_f32(const float* table, const int32_t* tokens, float* out, int T, int dim, int vocab, cudaStream_t s,
                   int first) {
  if (T <= 0 || dim <= 0) return;
  launch_pdl(embedding_rows_kernel<float>, dim3(T), dim3(kThreads), 0, s, table, tokens, out, dim, vocab, first);
  CUDA_LAUNCH_CHECK();
}

void add_rmsnorm_f32(float* residual, const float* delta, const float* weight, float* out, int T, int dim, float eps,
                     cudaStream_t s) {
  if (T <= 0 || dim <= 0) return;
  CHECK_MSG(out != residual, "add_rmsnorm_f32: out must not alias residual");
  launch_pdl(add_rmsnorm_rows_kernel<float, float>, dim3(T), dim3(2 * kThreads), 0, s, residual, delta, weight, out,
             dim, eps);
  CUDA_LAUNCH_CHECK();
}

void gemv_f32(const float* x, const float* W, const float* bias, float* y, int M, int N, int K, cudaStream_t s) {
  if (M <= 0 || N <= 0) return;
  CHECK(K >= 0);
  const int mb = (M + kGemvM - 1) / kGemvM;
  CHECK(mb <= 65535);
  const dim3 grid(N, mb);
  const bool vec = K % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(W) % 16 == 0;
  if (vec)
    launch_pdl(gemv_f32_kernel<true>, grid, dim3(kGemvThreads), 0, s, x, W, bias, y, M, N, K);
  else
    launch_pdl(gemv_f32_kernel<false>, grid, dim3(kGemvThreads), 0, s, x, W, bias, y, M, N, K);
  CUDA_LAUNCH_CHECK();
}

void silu_mul_f32(const float* gate_up, float* out, int T, int ffn, cudaStream_t s) {
  if (T <= 0 || ffn <= 0) return;
  CHECK(T <= 65535);
  const dim3 grid((ffn + kThreads - 1) / kThreads, T);
  launch_pdl(gated_mul_rows_kernel<float>, grid, dim3(kThreads), 0, s, gate_up, out, ffn);
  CUDA_LAUNCH_CHECK();
}

void gather_rows_f32(const float* src, const int32_t* index, float* dst, int rows, int cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  launch_pdl(gather_rows_f32_kernel, dim3(rows), dim3(kThreads), 0, s, src, index, dst, cols);
  CUDA_LAUNCH_CHECK();
}

void rope_kv_write_f32(float* qkv, int T, int row_stride, int n_heads, int n_kv_heads, int head_dim,
                       const int32_t* positions, float theta, RopeLayout layout, const int32_t* slots, float* k_pool,
                       float* v_pool, cudaStream_t s, const double* inv_freq, double mscale) {
  if (T <= 0) return;
  CHECK(head_dim > 0 && head_dim % 2 == 0 && n_heads >= 0 && n_kv_heads > 0 && n_heads + n_kv_heads <= 65535);
  CHECK(row_stride >= (n_heads + 2 * n_kv_heads) * head_dim);
  const int threads = head_dim / 2 >= kThreads ? kThreads : (head_dim / 2 + 31) / 32 * 32;
  const dim3 grid(T, n_heads + n_kv_heads);
  launch_pdl(rope_kv_write_f32_kernel, grid, dim3(threads), 0, s, qkv, row_stride, n_heads, n_kv_heads, head_dim,
             positions, theta, layout == RopeLayout::kNeox, slots, k_pool, v_pool, inv_freq, mscale);
  CUDA_LAUNCH_CHECK();
}

namespace {
void check_f32_attention(const PagedAttention& p, int n_q) {
  CHECK_MSG(p.head_dim > 0 && p.head_dim <= kMaxHeadDim, "paged_attention_f32: head_dim must be in [1, 256]");
  CHECK(p.n_kv_heads > 0 && p.n_heads > 0 && p.n_heads % p.n_kv_heads == 0);
  CHECK(p.block_size > 0 && p.block_tables != nullptr && p.seq_lens != nullptr);
  CHECK(static_cast<int64_t>(n_q) * p.n_heads <= 0x7fffffff);
}
}  // namespace

void paged_attention_f32(const PagedAttention& p, const float* k_pool, const float* v_pool, int seq, const float* q,
                         int q_stride, int n_q, float* out, cudaStream_t s) {
  if (n_q <= 0) return;
  check_f32_attention(p, n_q);
  const bool vec4 = q_stride % 4 == 0 && reinterpret_cast<uintptr_t>(q) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(k_pool) % 16 == 0 && reinterpret_cast<uintptr_t>(v_pool) % 16 == 0;
  if (seq >= 0 && vec4 && (p.head_dim == 64 || p.head_dim == 128)) {  // prefill: query tiles share staged keys
    const dim3 grid((n_q + kPreQ - 1) / kPreQ, p.n_heads);
    if (p.head_dim == 64)
      launch_pdl(prefill_f32_tiled_kernel<64>, grid, dim3(kPreWarps * 32), 0, s, p, k_pool, v_pool, seq, q, q_stride,
                 n_q, out);
    else
      launch_pdl(prefill_f32_tiled_kernel<128>, grid, dim3(kPreWarps * 32), 0, s, p, k_pool, v_pool, seq, q, q_stride,
                 n_q, out);
    CUDA_LAUNCH_CHECK();
    return;
  }
  launch_pdl(paged_attention_f32_kernel, dim3(n_q * p.n_heads, 1), dim3(kAttnWarps * 32), 0, s, p, k_pool, v_pool,
             seq, q, q_stride, n_q, 0x7fffffff, out, nullptr);
  CUDA_LAUNCH_CHECK();
}

int64_t f32_decode_workspace_floats(int B, int n_heads, int head_dim) {
  return static_cast<int64_t>(B) * n_heads * kF32DecodeMaxSplits * (2 + head_dim);
}

void paged_attention_f32_decode(const PagedAttention& p, const float* k_pool, const float* v_pool, const float* q,
                                int q_stride, int B, int ctx_bound, float* out, float* workspace, cudaStream_t s) {
  if (B <= 0) return;
  check_f32_attention(p, B);
  CHECK(ctx_bound > 0 && workspace != nullptr);
  // Partitions of at least kAttnWarps * kTok keys (one group per warp), at most kF32DecodeMaxSplits of them.
  const int n_splits = std::clamp((ctx_bound + kAttnWarps * kTok - 1) / (kAttnWarps * kTok), 1, kF32DecodeMaxSplits);
  const int partition = (ctx_bound + n_splits - 1) / n_splits;
  launch_pdl(paged_attention_f32_kernel, dim3(B * p.n_heads, n_splits), dim3(kAttnWarps * 32), 0, s, p, k_pool,
             v_pool, -1, q, q_stride, B, partition, n_splits == 1 ? out : nullptr, workspace);
  CUDA_LAUNCH_CHECK();
  if (n_splits == 1) return;
  launch_pdl(attention_merge_f32_kernel, dim3(B * p.n_heads), dim3((std::min(p.head_dim, kThreads) + 31) & ~31), 0, s,
             static_cast<const float*>(workspace), n_splits, p.head_dim, out);
  CUDA_LAUNCH_CHECK();
}

}  // namespace citadel::cuda
