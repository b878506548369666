// Device-side sampling: one block per logits row, so only token ids leave the GPU. The row's logit edits (logit_bias
// and penalties) apply in place first; logprobs, where asked for, come from the raw logits before them. Every pass over
// a row reads it as float4 (coalesced) in a fixed per-thread order, and every block reduction has a fixed order, so a
// given (seed, counter) always draws the same id.
//   greedy: one argmax pass (lowest index on ties).
//   sampled: the temperature / top-k / top-p / min-p cut-offs are exact order statistics of the order-preserving
//   uint32 image of the logits. Where top-k or top-p is on, one pass finds the max and the softmax mass Z (online),
//   then an 8-way search narrows both thresholds at once (11 passes, each counting elements and summing mass at or
//   above 7 candidate keys); min-p is a key from the max. The draw is one Gumbel-max pass over the kept elements:
//   argmax of logit / T + G_i, G_i = -log(-log(u_i)) with u_i a hash of (seed, counter, i), which is an exact draw
//   from the kept set's softmax at temperature T (plain temperature sampling is this pass alone).
#include <cfloat>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr int kSampleThreads = 512;
constexpr int kSampleWarps = kSampleThreads / 32;
constexpr int kWays = 8;  // candidate thresholds per search pass: kWays - 1

__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// f(i, row[i]) for this thread's share of row [V], i increasing: float4 loads where the row is 16-byte aligned, four
// of them in flight per thread (a pass is bound by memory latency otherwise), the tail one element at a time.
template <class F>
__device__ __forceinline__ void for_each_mine(const float* row, int V, F&& f) {
  constexpr int kT = kSampleThreads, kU = 4;
  int done = 0;
  if ((reinterpret_cast<uintptr_t>(row) & 15u) == 0) {
    const float4* r4 = reinterpret_cast<const float4*>(row);
    const int v4 = V >> 2;
    int j = threadIdx.x;
    for (; j + (kU - 1) * kT < v4; j += kU * kT) {
      float4 x[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) x[u] = r4[j + u * kT];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int i = 4 * (j + u * kT);
        f(i, x[u].x), f(i + 1, x[u].y), f(i + 2, x[u].z), f(i + 3, x[u].w);
      }
    }
    for (; j < v4; j += kT) {
      const float4 x = r4[j];
      f(4 * j, x.x), f(4 * j + 1, x.y), f(4 * j + 2, x.z), f(4 * j + 3, x.w);
    }
    done = v4 * 4;
  }
  for (int i = done + threadIdx.x; i < V; i += kT) f(i, row[i]);
}

// (value desc, index asc) order: true when (v, i) comes before (bv, bi).
__device__ __forceinline__ bool before(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

// Scratch of the block reductions: every reduction starts and ends with a barrier, so one buffer serves all.
struct Scratch {  // slot 0: block_best; slots 0..N-1: block_sums (N <= kWays - 1, the search's candidate keys)
  float f[kSampleWarps][kWays];
  int n[kSampleWarps][kWays];
};

// Block-wide best (value desc, index asc) of every thread's (best, bi); every thread gets the result.
__device__ void block_best(float& best, int& bi, Scratch& sc) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (before(ov, oi, best, bi)) best = ov, bi = oi;
  }
  __syncthreads();  // scratch free from the previous use
  if (lane == 0) sc.f[warp][0] = best, sc.n[warp][0] = bi;
  __syncthreads();
  best = sc.f[0][0], bi = sc.n[0][0];
  for (int w = 1; w < kSampleWarps; ++w)
    if (before(sc.f[w][0], sc.n[w][0], best, bi)) best = sc.f[w][0], bi = sc.n[w][0];
}

// Block-wide sums of N floats and N ints per thread, in place; every thread gets the results, summed in one order.
template <int N>
__device__ void block_sums(float (&f)[N], int (&n)[N], Scratch& sc) {
  static_assert(N <= kWays, "scratch slots");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    f[k] = warp_sum(f[k]);
    for (int o = 16; o > 0; o >>= 1) n[k] += __shfl_xor_sync(0xffffffffu, n[k], o);
  }
  __syncthreads();
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < N; ++k) sc.f[warp][k] = f[k], sc.n[warp][k] = n[k];
  __syncthreads();
#pragma unroll
  for (int k = 0; k < N; ++k) {
    f[k] = 0.f, n[k] = 0;
    for (int w = 0; w < kSampleWarps; ++w) f[k] += sc.f[w][k], n[k] += sc.n[w][k];
  }
}

// The next element of row [V] in (value desc, index asc) order after (pv, pi), or the first when pi < 0; every thread
// gets (best, bi), bi = 0x7fffffff when there is none (only -inf / NaN left).
__device__ void block_next_max(const float* row, int V, float pv, int pi, Scratch& sc, float& best, int& bi) {
  best = -FLT_MAX, bi = 0x7fffffff;
  for_each_mine(row, V, [&](int i, float v) {  // increasing i: the first of equal values wins
    if ((pi < 0 || before(pv, pi, v, i)) && v > best) best = v, bi = i;
  });
  block_best(best, bi, sc);
}

// The row's max, its index and Z = sum exp((x - max) / T), in one pass (an online softmax); every thread gets them.
__device__ void block_max_mass(const float* row, int V, float inv_t, Scratch& sc, float& mx, int& mi, float& z) {
  float m = -FLT_MAX, s = 0.f;
  int i_m = 0x7fffffff;
  for_each_mine(row, V, [&](int i, float v) {
    if (v > m) s = s * __expf((m - v) * inv_t) + 1.f, m = v, i_m = i;
    else s += __expf((v - m) * inv_t);
  });
  mx = m, mi = i_m;
  block_best(mx, mi, sc);
  float sum[1] = {s * __expf((m - mx) * inv_t)};  // this thread's mass relative to the row's max
  int unused[1] = {0};
  block_sums(sum, unused, sc);
  z = sum[0];
}

// Largest t in [lo, hi] with pred(t) (pred(lo) holds, pred is non-increasing) from pred at the kWays - 1 candidates
// lo + j * step, j = 1..kWays-1, step = ceil((hi - lo + 1) / kWays): the range shrinks kWays-fold.
struct KeyRange {
  uint32_t lo = 0, hi = 0xffffffffu;
  __device__ uint64_t step() const { return (uint64_t(hi) - lo + kWays) / kWays; }
  __device__ uint32_t cand(int j) const {  // saturates past hi (such candidates are never chosen)
    const uint64_t t = lo + j * step();
    return t > hi ? hi : uint32_t(t);
  }
  __device__ void narrow(const bool (&holds)[kWays - 1]) {
    const uint64_t st = step();
    int best = 0;
#pragma unroll
    for (int j = 1; j < kWays; ++j)
      if (lo + j * st <= hi && holds[j - 1]) best = j;
    const uint64_t nlo = lo + best * st, nhi = nlo + st - 1;
    lo = uint32_t(nlo);
    if (nhi < hi) hi = uint32_t(nhi);
  }
  __device__ bool done() const { return lo == hi; }
};

// The key at or above which a sampled row keeps its elements: max of the top-k threshold (the k-th largest value),
// the top-p threshold (the largest key whose mass at or above holds top_p of Z) and the min-p key.
__device__ uint32_t keep_key(const float* row, int V, const SampleParams& p, float mx, float z, Scratch& sc) {
  const float inv_t = 1.f / p.temperature;
  const bool use_k = p.top_k > 1 && p.top_k < V;
  const bool use_p = p.top_p > 0.f && p.top_p < 1.f;
  const float target = p.top_p * z;
  KeyRange rk, rp;
  if (!use_k) rk.hi = 0;
  if (!use_p) rp.hi = 0;
  while (!rk.done() || !rp.done()) {  // block-uniform: every thread holds the same ranges
    uint32_t tk[kWays - 1], tp[kWays - 1];
#pragma unroll
    for (int j = 0; j < kWays - 1; ++j) tk[j] = rk.cand(j + 1), tp[j] = rp.cand(j + 1);
    float mass[kWays - 1] = {};
    int cnt[kWays - 1] = {};
    if (!rp.done()) {
      for_each_mine(row, V, [&](int, float v) {
        const uint32_t key = order_key(v);
        const float e = __expf((v - mx) * inv_t);
#pragma unroll
        for (int j = 0; j < kWays - 1; ++j) cnt[j] += key >= tk[j], mass[j] += key >= tp[j] ? e : 0.f;
      });
    } else {
      for_each_mine(row, V, [&](int, float v) {
        const uint32_t key = order_key(v);
#pragma unroll
        for (int j = 0; j < kWays - 1; ++j) cnt[j] += key >= tk[j];
      });
    }
    block_sums(mass, cnt, sc);
    bool hk[kWays - 1], hp[kWays - 1];
#pragma unroll
    for (int j = 0; j < kWays - 1; ++j) hk[j] = cnt[j] >= p.top_k, hp[j] = mass[j] >= target;
    if (!rk.done()) rk.narrow(hk);
    if (!rp.done()) rp.narrow(hp);
  }
  uint32_t thr = use_k ? rk.lo : 0;
  if (use_p && rp.lo > thr) thr = rp.lo;
  // min-p: p_i >= min_p * p_max <=> logit_i >= max + T * ln(min_p) (the max survives every cut-off).
  if (p.min_p > 0.f && p.min_p <= 1.f) {
    const uint32_t km = order_key(mx + p.temperature * logf(p.min_p));
    if (km > thr) thr = km;
  }
  return thr;
}

// Gumbel-max draw among the elements with key >= thr: argmax of (x - ref) / T - log(-log(u_i)), u_i in (0, 1) from
// hash(seed, counter, i); ref is any per-row constant (the max where known, for precision). Every thread gets the id,
// 0x7fffffff when no element qualifies.
__device__ int gumbel_draw(const float* row, int V, const SampleParams& p, uint32_t thr, float ref, Scratch& sc) {
  const float inv_t = 1.f / p.temperature;
  const uint32_t rs = hash_u32(hash_u32(p.seed, p.counter), 0x5bd1e995u);
  float best = -INFINITY;
  int bi = 0x7fffffff;
  for_each_mine(row, V, [&](int i, float v) {
    if (order_key(v) < thr) return;
    const float u = (static_cast<float>(hash_u32(rs, static_cast<uint32_t>(i)) >> 8) + 0.5f) * (1.f / 16777216.f);
    const float s = (v - ref) * inv_t - logf(-logf(u));  // accurate logf: u near 1 decides the largest G
    if (s > best) best = s, bi = i;
  });
  block_best(best, bi, sc);
  return bi;
}

// One block per row: [raw-logit log-softmax stats and top-n], edits in place, then greedy or a draw, [its logprob].
__global__ void __launch_bounds__(kSampleThreads) sample_kernel(float* logits, int V, const SampleParams* params,
                                                                const LogitEdit* edits, float* edit_raw,
                                                                TokenLogprobs* lp_out, int32_t* out) {
  pdl_wait();
  pdl_trigger();
  __shared__ Scratch sc;
  float* row = logits + static_cast<int64_t>(blockIdx.x) * V;
  const SampleParams p = params[blockIdx.x];
  const int tid = threadIdx.x;
  const bool want_lp = p.top_logprobs >= 0 && lp_out;
  float best, lse = 0.f;
  int bi;
  if (want_lp) {  // log-softmax of the raw logits: lse, then the top n one block max at a time
    float z;
    block_max_mass(row, V, 1.f, sc, best, bi, z);
    lse = best + logf(z);
    int n = min(min(p.top_logprobs, kMaxTopLogprobs), V);
    for (int k = 0; k < n; ++k) {
      if (k > 0) block_next_max(row, V, best, bi, sc, best, bi);
      if (bi == 0x7fffffff) n = k;  // the rest is -inf (the same in every thread)
      else if (tid == 0) lp_out[blockIdx.x].ids[k] = bi, lp_out[blockIdx.x].lps[k] = best - lse;
    }
    if (tid == 0) lp_out[blockIdx.x].n = n;
  }
  if (p.edit_count > 0) {  // distinct tokens: one thread per edit, no conflicts
    for (int i = tid; i < p.edit_count; i += kSampleThreads) {
      const LogitEdit e = edits[p.edit_begin + i];
      const float raw = row[e.token];
      if (want_lp) edit_raw[p.edit_begin + i] = raw;
      float x = __fadd_rn(raw, e.bias);
      if (e.repeat) x = x > 0.f ? __fdiv_rn(x, p.repetition_penalty) : __fmul_rn(x, p.repetition_penalty);
      row[e.token] = __fsub_rn(x, e.subtract);
    }
    __syncthreads();
  }
  const bool greedy = !(p.temperature > 0.f) || p.top_k == 1;
  int chosen;
  if (greedy) {  // argmax, lowest index on ties
    block_next_max(row, V, 0.f, -1, sc, best, bi);
    chosen = bi == 0x7fffffff ? 0 : bi;
  } else {
    const bool cut = (p.top_k > 1 && p.top_k < V) || (p.top_p > 0.f && p.top_p < 1.f);
    const bool with_max = cut || (p.min_p > 0.f && p.min_p <= 1.f);
    float mx = 0.f, z = 0.f;
    if (cut) block_max_mass(row, V, 1.f / p.temperature, sc, mx, bi, z);
    else if (with_max) block_next_max(row, V, 0.f, -1, sc, mx, bi);
    const uint32_t thr = with_max ? keep_key(row, V, p, mx, z, sc) : 0u;
    chosen = gumbel_draw(row, V, p, thr, mx, sc);
    if (chosen == 0x7fffffff) chosen = with_max && bi != 0x7fffffff ? bi : 0;  // every logit -inf / NaN
  }
  if (tid != 0) return;
  out[blockIdx.x] = chosen;
  if (!want_lp) return;
  float raw = row[chosen];  // unless edited: then its value before the edit (edits sorted by token)
  int lo = 0, hi = p.edit_count - 1;
  while (lo <= hi) {
    const int mid = (lo + hi) / 2, t = edits[p.edit_begin + mid].token;
    if (t == chosen) {
      raw = edit_raw[p.edit_begin + mid];
      break;
    }
    if (t < chosen) lo = mid + 1; else hi = mid - 1;
  }
  lp_out[blockIdx.x].logprob = raw - lse;
}
__global__ void resolve_pending_kernel(int32_t* tokens, int T, const int32_t* prev_ids) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < T; t += gridDim.x * blockDim.x) {
    const int32_t v = tokens[t];
    if (v < 0) tokens[t] = prev_ids[-1 - v];
  }
}

}  // namespace

void resolve_pending_tokens(int32_t* tokens, int T, const int32_t* prev_ids, cudaStream_t s) {
  if (T <= 0) return;
  resolve_pending_kernel<<<(T + 255) / 256, 256, 0, s>>>(tokens, T, prev_ids);
  CUDA_LAUNCH_CHECK();
}

void sample_tokens(float* logits, int M, int V, const SampleParams* params, const LogitEdit* edits, float* edit_raw,
                   TokenLogprobs* logprobs, int32_t* out, cudaStream_t s) {
  if (M <= 0) return;
  launch_pdl(sample_kernel, dim3(M), dim3(kSampleThreads), 0, s, logits, V, params, edits, edit_raw, logprobs, out);
  CUDA_LAUNCH_CHECK();
}

}  // namespace citadel::cuda
