// Device-side sampling: one block per logits row, so only token ids leave the GPU. The row's logit edits (logit_bias
// and penalties) apply in place first; logprobs, where asked for, come from the raw logits before them. The temperature / top-k / top-p / min-p cut-offs are exact order statistics
// found by bisection over the order-preserving uint32 image of the logits (32 passes over the row, each counting
// elements and summing probability mass at or above two candidate thresholds), then an inverse-CDF draw in index
// order with a block scan, seeded per row. Deterministic for a given (seed, counter): every reduction has a fixed
// order.
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {
namespace {

using namespace dev;

constexpr int kSampleThreads = 1024;

__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Block-wide sums of one float and one int; every thread gets the results. scratch: 2 * 32 words.
__device__ __forceinline__ void block_sum2(float& f, int& n, float* sf, int* sn) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  f = warp_sum(f);
  for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
  __syncthreads();  // scratch free from the previous use
  if (lane == 0) sf[warp] = f, sn[warp] = n;
  __syncthreads();
  f = 0.f, n = 0;
  for (int w = 0; w < kSampleThreads / 32; ++w) f += sf[w], n += sn[w];  // same order in every thread
}

// The next element of row [V] in (value desc, index asc) order after (pv, pi), or the first when pi < 0; every thread
// gets (best, bi), bi = 0x7fffffff when there is none. Scratch: 2 x 32 words; uniform control flow only.
__device__ void block_next_max(const float* row, int V, float pv, int pi, float* sbest, int* sbi, float& best,
                               int& bi) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  best = -FLT_MAX, bi = 0x7fffffff;
  for (int i = tid; i < V; i += kSampleThreads) {  // increasing i: the first of equal values wins
    const float v = row[i];
    if ((pi < 0 || v < pv || (v == pv && i > pi)) && v > best) best = v, bi = i;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
  }
  __syncthreads();  // scratch free from the previous use
  if (lane == 0) sbest[warp] = best, sbi[warp] = bi;
  __syncthreads();
  best = sbest[0], bi = sbi[0];
  for (int w = 1; w < kSampleThreads / 32; ++w)
    if (sbest[w] > best || (sbest[w] == best && sbi[w] < bi)) best = sbest[w], bi = sbi[w];
}

// A draw from row [V] under p (temperature > 0), mx its max, argmax the fallback; every thread gets the id.
__device__ int draw_token(const float* row, int V, const SampleParams& p, float mx, int argmax, float* sf, int* sn) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float inv_t = 1.f / p.temperature;
  // Total mass Z (relative to the max).
  float z = 0.f;
  int dummy = 0;
  for (int i = tid; i < V; i += kSampleThreads) z += __expf((row[i] - mx) * inv_t);
  block_sum2(z, dummy, sf, sn);
  // Bisection: tk = largest key with count(key >= tk) >= top_k (the k-th largest value); tp = largest key with
  // mass(key >= tp) >= top_p * Z (the smallest top set holding top_p of the mass).
  const bool use_k = p.top_k > 1 && p.top_k < V;
  const bool use_p = p.top_p > 0.f && p.top_p < 1.f;
  uint32_t lo_k = 0, hi_k = 0xffffffffu, lo_p = 0, hi_p = 0xffffffffu;  // answer in [lo, hi]
  const float target = p.top_p * z;
  if (use_k || use_p) {
    for (int it = 0; it < 32; ++it) {
      const uint32_t mk = lo_k + (hi_k - lo_k + 1ull) / 2, mp = lo_p + (hi_p - lo_p + 1ull) / 2;
      float mass = 0.f;
      int cnt = 0;
      for (int i = tid; i < V; i += kSampleThreads) {
        const float v = row[i];
        const uint32_t key = order_key(v);
        cnt += key >= mk;
        if (key >= mp) mass += __expf((v - mx) * inv_t);
      }
      block_sum2(mass, cnt, sf, sn);
      if (cnt >= p.top_k) lo_k = mk; else hi_k = mk - 1;
      if (mass >= target) lo_p = mp; else hi_p = mp - 1;
      if (lo_k == hi_k && lo_p == hi_p) break;
    }
  }
  uint32_t thr = 0;
  if (use_k) thr = lo_k;
  if (use_p && lo_p > thr) thr = lo_p;
  // min-p: p_i >= min_p * p_max <=> logit_i >= max + T * ln(min_p) (the max survives every cut-off).
  if (p.min_p > 0.f && p.min_p <= 1.f) {
    const uint32_t km = order_key(mx + p.temperature * logf(p.min_p));
    if (km > thr) thr = km;
  }
  // Draw u in [0, kept mass), then find the index whose cumulative kept mass (index order) passes u.
  const int chunk = (V + kSampleThreads - 1) / kSampleThreads;
  const int c0 = min(V, tid * chunk), c1 = min(V, c0 + chunk);
  float mine = 0.f;
  for (int i = c0; i < c1; ++i) {
    const float v = row[i];
    if (order_key(v) >= thr) mine += __expf((v - mx) * inv_t);
  }
  // Inclusive scan of the per-thread chunk masses (warp shuffles, then warp totals).
  float incl = warp_inclusive_sum(mine);
  __syncthreads();
  if (lane == 31) sf[warp] = incl;
  __syncthreads();
  float warp_off = 0.f, total = 0.f;
  for (int w = 0; w < kSampleThreads / 32; ++w) {
    if (w < warp) warp_off += sf[w];
    total += sf[w];
  }
  incl += warp_off;
  const float excl = incl - mine;
  const uint32_t h = hash_u32(hash_u32(p.seed, p.counter), 0x5bd1e995u);
  const float u = static_cast<float>(h >> 8) * (1.0f / 16777216.0f) * total;
  __shared__ int chosen;
  __syncthreads();  // every thread's reads of sf above end before chosen is written (racecheck pairs them otherwise)
  if (tid == 0) chosen = 0x7fffffff;
  __syncthreads();
  if (mine > 0.f && u >= excl && u < incl) {
    float acc = excl;
    int pick = -1, last = -1;
    for (int i = c0; i < c1; ++i) {
      const float v = row[i];
      if (order_key(v) < thr) continue;
      last = i;
      acc += __expf((v - mx) * inv_t);
      if (u < acc) { pick = i; break; }
    }
    // One thread's range holds u, or two neighbours' where rounding makes excl differ from the previous incl: the
    // lower index wins, so the draw stays deterministic.
    atomicMin(&chosen, pick >= 0 ? pick : last);
  }
  __syncthreads();
  return chosen == 0x7fffffff ? argmax : chosen;  // none: rounding left u past the last kept element
}

// One block per row: [raw-logit log-softmax stats and top-n], edits in place, then greedy or a draw, [its logprob].
__global__ void __launch_bounds__(kSampleThreads) sample_kernel(float* logits, int V, const SampleParams* params,
                                                                const LogitEdit* edits, float* edit_raw,
                                                                TokenLogprobs* lp_out, int32_t* out) {
  pdl_wait();
  pdl_trigger();
  __shared__ float sf[32];
  __shared__ int sn[32];
  float* row = logits + static_cast<int64_t>(blockIdx.x) * V;
  const SampleParams p = params[blockIdx.x];
  const int tid = threadIdx.x;
  const bool want_lp = p.top_logprobs >= 0 && lp_out;
  float best, lse = 0.f;
  int bi;
  if (want_lp) {  // log-softmax of the raw logits: lse, then the top n one block max at a time
    block_next_max(row, V, 0.f, -1, sf, sn, best, bi);
    const float mx = best;
    float z = 0.f;
    int dummy = 0;
    for (int i = tid; i < V; i += kSampleThreads) z += expf(row[i] - mx);
    block_sum2(z, dummy, sf, sn);
    lse = mx + logf(z);
    int n = min(min(p.top_logprobs, kMaxTopLogprobs), V);
    for (int k = 0; k < n; ++k) {
      if (k > 0) block_next_max(row, V, best, bi, sf, sn, best, bi);
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
  // Argmax (lowest index on ties): the greedy answer and the max for the softmax.
  block_next_max(row, V, 0.f, -1, sf, sn, best, bi);
  const int argmax = bi == 0x7fffffff ? 0 : bi;
  const bool greedy = !(p.temperature > 0.f) || p.top_k == 1;
  const int chosen = greedy ? argmax : draw_token(row, V, p, best, argmax, sf, sn);
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
