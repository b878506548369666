// The fp32 (exact) kernels of MLA and MoE (mla_moe_exact.h): the fused latent norm + RoPE + cache write, the per-head
// absorptions, the absorbed attention over the fp32 latent cache, and the routed experts' two products. Kernels
// first, launchers after. Every kernel calls pdl_wait() before touching global memory (common.cuh launch_pdl).
#include "kernels/cuda/mla_moe_exact.h"

#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rows.cuh"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr int kRowThreads = 256;   // mla_rope_kv_write_f32: one block per token
constexpr int kDotWarps = 8;       // warp-per-output kernels: outputs per block
constexpr int kAttnWarps = 8;      // mla_attention_f32: warps per (token, head)
constexpr int kLatPerLane = kMlaExactMaxLatent / 32;  // latent row values per lane: lane + 32 j
constexpr int kRankPerLane = kMlaExactMaxRank / 32;

// sum_k w[k] x[k] over k = lane, lane + 32, ... (fmaf), then the warp butterfly: every lane gets the total.
template <typename W>
__device__ __forceinline__ float warp_dot(const W* w, const float* x, int K) {
  const int lane = threadIdx.x & 31;
  float acc = 0.f;
  for (int k = lane; k < K; k += 32) acc = fmaf(load_f(w[k]), x[k], acc);
  return warp_sum(acc);
}

// One RoPE pair (a, b) of `in` rotated into `out` (may alias): angle pos * inv_freq[i] in double as the CPU twin.
__device__ __forceinline__ void rope_pair(const float* in, float* out, int i, double pos, const double* inv_freq,
                                          double mscale) {
  double sd, cd;
  sincos(pos * inv_freq[i], &sd, &cd);
  const float c = static_cast<float>(cd * mscale), sn = static_cast<float>(sd * mscale);
  const float x0 = in[2 * i], x1 = in[2 * i + 1];
  out[2 * i] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn));  // no FMA contraction: as the CPU
  out[2 * i + 1] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, c));
}

// grid (T), kRowThreads threads; see mla_rope_kv_write_f32. Each element of the kv_a row is read and written by one
// thread until the barrier before the cache copy.
__global__ void __launch_bounds__(kRowThreads)
    mla_rope_kv_write_f32_kernel(const float* q, float* kv_a, float* q_lat, MlaShape m, const int32_t* positions,
                                 const double* inv_freq, double mscale, const float* kv_norm_w, float eps,
                                 const int32_t* slots, float* cache) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x, r = m.kv_lora_rank, L = r + m.qk_rope, half = m.qk_rope / 2;
  const int qk = m.qk_nope + m.qk_rope;
  float* row = kv_a + static_cast<int64_t>(t) * L;
  float ss = 0.f;
  for (int i = threadIdx.x; i < r; i += blockDim.x) ss = fmaf(row[i], row[i], ss);
  const float inv = 1.f / sqrtf(block_sum(ss) / static_cast<float>(r) + eps);
  for (int i = threadIdx.x; i < r; i += blockDim.x) row[i] = row[i] * inv * kv_norm_w[i];
  const double pos = static_cast<double>(positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) rope_pair(row + r, row + r, i, pos, inv_freq, mscale);
  for (int j = threadIdx.x; j < m.n_heads * half; j += blockDim.x) {
    const int h = j / half, i = j % half;
    const int64_t th = static_cast<int64_t>(t) * m.n_heads + h;
    rope_pair(q + th * qk + m.qk_nope, q_lat + th * L + r, i, pos, inv_freq, mscale);
  }
  const int slot = slots[t];
  if (slot < 0) return;  // block-uniform
  __syncthreads();
  float* dst = cache + static_cast<int64_t>(slot) * L;
  for (int i = threadIdx.x; i < L; i += blockDim.x) dst[i] = row[i];
}

// grid (T * H, ceil(N / kDotWarps)), kDotWarps warps: warp w of block (t*H + h, nb) computes y[t][h][nb*8 + w].
template <typename W>
__global__ void __launch_bounds__(kDotWarps * 32)
    heads_gemv_f32_kernel(const float* x, int64_t ldx, int64_t sx, const W* w, float* y, int64_t ldy, int64_t sy,
                          int H, int N, int K) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x / H, h = blockIdx.x % H;
  const int n = blockIdx.y * kDotWarps + (threadIdx.x >> 5);
  if (n >= N) return;  // warp-uniform
  const float v = warp_dot(w + (static_cast<int64_t>(h) * N + n) * K, x + t * ldx + h * sx, K);
  if ((threadIdx.x & 31) == 0) y[t * ldy + h * sy + n] = v;
}

// grid (T, H), kAttnWarps warps; see mla_attention_f32. Warp w takes keys w, w + kAttnWarps, ... in order with an
// online softmax (running max m, sum l, the lane's output dims o[j] rescaled by expf(m_old - m_new)); the warps'
// (m, l, o) then merge through shared memory in warp order.
__global__ void __launch_bounds__(kAttnWarps * 32)
    mla_attention_f32_kernel(MlaAttention p, const float* cache, MlaShape m, const float* q_lat, float* out) {
  __shared__ float ws_o[kAttnWarps][kMlaExactMaxRank];
  __shared__ float ws_m[kAttnWarps], ws_l[kAttnWarps];
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x, h = blockIdx.y, H = m.n_heads, r = m.kv_lora_rank, L = r + m.qk_rope;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int b = t;  // decode: token t is sequence t
  if (p.query_start) {  // prefill: the sequence whose token range holds t
    b = 0;
    while (p.query_start[b + 1] <= t) ++b;
  }
  const int n = min(min(p.positions[t] + 1, p.seq_lens[b]), p.max_blocks_per_seq * p.block_size);
  const float* qh = q_lat + (static_cast<int64_t>(t) * H + h) * L;
  float qv[kLatPerLane], o[kRankPerLane];
#pragma unroll
  for (int j = 0; j < kLatPerLane; ++j) qv[j] = lane + 32 * j < L ? qh[lane + 32 * j] : 0.f;
#pragma unroll
  for (int j = 0; j < kRankPerLane; ++j) o[j] = 0.f;
  float mx = -INFINITY, l = 0.f;
  const int32_t* bt = p.block_tables + static_cast<int64_t>(b) * p.max_blocks_per_seq;
  for (int key = warp; key < n; key += kAttnWarps) {  // warp-uniform: the shuffles see every lane
    const float* row = cache + (static_cast<int64_t>(bt[key / p.block_size]) * p.block_size + key % p.block_size) * L;
    float kv[kLatPerLane];
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < kLatPerLane; ++j) {
      kv[j] = lane + 32 * j < L ? row[lane + 32 * j] : 0.f;
      dot = fmaf(qv[j], kv[j], dot);
    }
    const float sc = warp_sum(dot) * p.scale;
    const float m_new = fmaxf(mx, sc);
    const float corr = expf(mx - m_new);  // 0 for the first key (mx = -inf)
    const float pr = expf(sc - m_new);
    l = l * corr + pr;
#pragma unroll
    for (int j = 0; j < kRankPerLane; ++j) o[j] = o[j] * corr + pr * kv[j];  // dims >= r are never stored
    mx = m_new;
  }
  if (lane == 0) ws_m[warp] = mx, ws_l[warp] = l;
#pragma unroll
  for (int j = 0; j < kRankPerLane; ++j)
    if (lane + 32 * j < r) ws_o[warp][lane + 32 * j] = o[j];
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, ws_m[w]);
  float f[kAttnWarps], S = 0.f;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) {
    f[w] = ws_m[w] == -INFINITY ? 0.f : expf(ws_m[w] - M);  // a warp without keys contributes nothing
    S += ws_l[w] * f[w];
  }
  float* oh = out + (static_cast<int64_t>(t) * H + h) * r;
  for (int d = threadIdx.x; d < r; d += blockDim.x) {
    float acc = 0.f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) acc += ws_o[w][d] * f[w];
    oh[d] = S > 0.f ? acc / S : 0.f;
  }
}

// grid (T * k, ceil(Fe / kDotWarps)), kDotWarps warps: warp w of block (p, fb) computes act[p][fb*8 + w].
template <typename W>
__global__ void __launch_bounds__(kDotWarps * 32)
    moe_gate_up_silu_f32_kernel(const float* x, const int32_t* ids, int k, const W* gate, const W* up, int E, int Fe,
                                int D, float* act) {
  pdl_wait();
  pdl_trigger();
  const int p = blockIdx.x, f = blockIdx.y * kDotWarps + (threadIdx.x >> 5);
  if (f >= Fe) return;  // warp-uniform
  const int e = ids[p];
  float v = 0.f;
  if (e >= 0 && e < E) {
    const int64_t wr = (static_cast<int64_t>(e) * Fe + f) * D;
    const float* xt = x + static_cast<int64_t>(p / k) * D;
    v = SiluMul()(warp_dot(gate + wr, xt, D), warp_dot(up + wr, xt, D));
  }
  if ((threadIdx.x & 31) == 0) act[static_cast<int64_t>(p) * Fe + f] = v;
}

// grid (T * k, ceil(D / kDotWarps)), kDotWarps warps: warp w of block (p, nb) computes y[p][nb*8 + w].
template <typename W>
__global__ void __launch_bounds__(kDotWarps * 32)
    moe_down_f32_kernel(const float* act, const int32_t* ids, const W* down, int E, int D, int Fe, float* y) {
  pdl_wait();
  pdl_trigger();
  const int p = blockIdx.x, n = blockIdx.y * kDotWarps + (threadIdx.x >> 5);
  if (n >= D) return;  // warp-uniform
  const int e = ids[p];
  float v = 0.f;
  if (e >= 0 && e < E)
    v = warp_dot(down + (static_cast<int64_t>(e) * D + n) * Fe, act + static_cast<int64_t>(p) * Fe, Fe);
  if ((threadIdx.x & 31) == 0) y[static_cast<int64_t>(p) * D + n] = v;
}

unsigned row_blocks(int n) { return static_cast<unsigned>((n + kDotWarps - 1) / kDotWarps); }

template <typename W>
void heads_gemv_any(const float* x, int64_t ldx, int64_t sx, const W* w, float* y, int64_t ldy, int64_t sy, int T,
                    int H, int N, int K, cudaStream_t s) {
  if (T <= 0 || H <= 0 || N <= 0) return;
  CHECK(K >= 0 && static_cast<int64_t>(T) * H <= 0x7fffffff && row_blocks(N) <= 65535);
  launch_pdl(heads_gemv_f32_kernel<W>, dim3(static_cast<unsigned>(T * H), row_blocks(N)), dim3(kDotWarps * 32), 0, s,
             x, ldx, sx, w, y, ldy, sy, H, N, K);
  CUDA_LAUNCH_CHECK();
}

template <typename W>
void moe_gate_up_silu_any(const float* x, const int32_t* ids, int T, int k, const W* gate, const W* up, int E, int Fe,
                          int D, float* act, cudaStream_t s) {
  if (T <= 0) return;
  CHECK(k >= 1 && E >= 1 && Fe >= 1 && D >= 1 && static_cast<int64_t>(T) * k <= 0x7fffffff &&
        row_blocks(Fe) <= 65535);
  launch_pdl(moe_gate_up_silu_f32_kernel<W>, dim3(static_cast<unsigned>(T * k), row_blocks(Fe)),
             dim3(kDotWarps * 32), 0, s, x, ids, k, gate, up, E, Fe, D, act);
  CUDA_LAUNCH_CHECK();
}

template <typename W>
void moe_down_any(const float* act, const int32_t* ids, int T, int k, const W* down, int E, int D, int Fe, float* y,
                  cudaStream_t s) {
  if (T <= 0) return;
  CHECK(k >= 1 && E >= 1 && Fe >= 1 && D >= 1 && static_cast<int64_t>(T) * k <= 0x7fffffff && row_blocks(D) <= 65535);
  launch_pdl(moe_down_f32_kernel<W>, dim3(static_cast<unsigned>(T * k), row_blocks(D)), dim3(kDotWarps * 32), 0, s,
             act, ids, down, E, D, Fe, y);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void mla_rope_kv_write_f32(const float* q, float* kv_a, float* q_lat, const MlaShape& m, int T,
                           const int32_t* positions, const double* inv_freq, double mscale, const float* kv_norm_w,
                           float eps, const int32_t* slots, float* cache, cudaStream_t s) {
  if (T <= 0) return;
  CHECK(m.n_heads > 0 && m.qk_nope >= 0 && m.qk_rope > 0 && m.qk_rope % 2 == 0 && m.qk_rope <= 128);
  CHECK(m.kv_lora_rank > 0 && m.kv_lora_rank + m.qk_rope <= kMlaExactMaxLatent && inv_freq != nullptr);
  launch_pdl(mla_rope_kv_write_f32_kernel, dim3(T), dim3(kRowThreads), 0, s, q, kv_a, q_lat, m, positions, inv_freq,
             mscale, kv_norm_w, eps, slots, cache);
  CUDA_LAUNCH_CHECK();
}

void heads_gemv_f32(const float* x, int64_t ldx, int64_t sx, const float* W, float* y, int64_t ldy, int64_t sy, int T,
                    int H, int N, int K, cudaStream_t s) {
  heads_gemv_any(x, ldx, sx, W, y, ldy, sy, T, H, N, K, s);
}
void heads_gemv_f32(const float* x, int64_t ldx, int64_t sx, const bf16_t* W, float* y, int64_t ldy, int64_t sy,
                    int T, int H, int N, int K, cudaStream_t s) {
  heads_gemv_any(x, ldx, sx, W, y, ldy, sy, T, H, N, K, s);
}

void mla_attention_f32(const MlaAttention& p, const float* cache, const MlaShape& m, const float* q_lat, int T,
                       float* out, cudaStream_t s) {
  if (T <= 0) return;
  CHECK(m.n_heads > 0 && m.n_heads <= 65535 && m.kv_lora_rank > 0 && m.kv_lora_rank <= kMlaExactMaxRank);
  CHECK(m.qk_rope >= 0 && m.kv_lora_rank + m.qk_rope <= kMlaExactMaxLatent);
  CHECK(p.block_size > 0 && p.block_tables != nullptr && p.seq_lens != nullptr && p.positions != nullptr);
  launch_pdl(mla_attention_f32_kernel, dim3(T, m.n_heads), dim3(kAttnWarps * 32), 0, s, p, cache, m, q_lat, out);
  CUDA_LAUNCH_CHECK();
}

void moe_gate_up_silu_f32(const float* x, const int32_t* ids, int T, int k, const float* gate, const float* up, int E,
                          int Fe, int D, float* act, cudaStream_t s) {
  moe_gate_up_silu_any(x, ids, T, k, gate, up, E, Fe, D, act, s);
}
void moe_gate_up_silu_f32(const float* x, const int32_t* ids, int T, int k, const bf16_t* gate, const bf16_t* up,
                          int E, int Fe, int D, float* act, cudaStream_t s) {
  moe_gate_up_silu_any(x, ids, T, k, gate, up, E, Fe, D, act, s);
}
void moe_down_f32(const float* act, const int32_t* ids, int T, int k, const float* down, int E, int D, int Fe,
                  float* y, cudaStream_t s) {
  moe_down_any(act, ids, T, k, down, E, D, Fe, y, s);
}
void moe_down_f32(const float* act, const int32_t* ids, int T, int k, const bf16_t* down, int E, int D, int Fe,
                  float* y, cudaStream_t s) {
  moe_down_any(act, ids, T, k, down, E, D, Fe, y, s);
}

}  // namespace citadel::cuda
