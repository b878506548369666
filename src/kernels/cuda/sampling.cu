// Device-side sampling: one block per logits row, so only token ids leave the GPU. The row's logit edits (logit_bias
// and penalties) apply in place first; logprobs, where asked for, come from the raw logits before them. Every pass over
// a row reads it as float4 (coalesced) in a fixed per-thread order, and every block reduction has a fixed order, so a
// given (seed, counter) always draws the same id.
//   greedy: one argmax pass (lowest index on ties).
//   sampled: the temperature / top-k / top-p / min-p cut-offs are exact order statistics of the order-preserving
//   uint32 image of the logits, with the softmax weights summed in fixed point (exact, so in any order). Where top-k or
//   top-p is on: a max pass, then a histogram of (max - x) / T that bounds both thresholds from below; the elements
//   above the bound (at most 8192) go to shared memory and an 8-way search narrows both thresholds there (the row
//   itself where they do not fit: 11 passes over it, each counting and summing at 7 candidate keys). min-p is a key
//   from the max. The draw is one Gumbel-max pass over the kept elements: argmax of logit / T + G_i,
//   G_i = -log(-log(u_i)) with u_i a hash of (seed, counter, i), an exact draw from the kept set's softmax at
//   temperature T (plain temperature sampling is this pass alone). The same (seed, counter) draws the same id on
//   either path.
#include <cfloat>
#include <cstdint>
#include <type_traits>

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
  unsigned long long u[kSampleWarps][kWays];
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

// Block-wide sums of N masses (float, or fixed-point unsigned long long: exact, so any order gives the same sum) and N
// ints per thread, in place; every thread gets the results, summed in one order.
template <int N, class M>
__device__ void block_sums(M (&f)[N], int (&n)[N], Scratch& sc) {
  static_assert(N <= kWays, "scratch slots");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < N; ++k)
    for (int o = 16; o > 0; o >>= 1) {
      f[k] += __shfl_xor_sync(0xffffffffu, f[k], o);
      n[k] += __shfl_xor_sync(0xffffffffu, n[k], o);
    }
  __syncthreads();
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < N; ++k) {
      if constexpr (std::is_same_v<M, float>) sc.f[warp][k] = f[k];
      else sc.u[warp][k] = f[k];
      sc.n[warp][k] = n[k];
    }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < N; ++k) {
    f[k] = 0, n[k] = 0;
    for (int w = 0; w < kSampleWarps; ++w) {
      if constexpr (std::is_same_v<M, float>) f[k] += sc.f[w][k];
      else f[k] += sc.u[w][k];
      n[k] += sc.n[w][k];
    }
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

// The row's max, its index and Z = sum exp(x - max), in one pass (an online softmax); every thread gets them.
__device__ void block_max_mass(const float* row, int V, Scratch& sc, float& mx, int& mi, float& z) {
  float m = -FLT_MAX, s = 0.f;
  int i_m = 0x7fffffff;
  for_each_mine(row, V, [&](int i, float v) {
    if (v > m) s = s * __expf(m - v) + 1.f, m = v, i_m = i;
    else s += __expf(v - m);
  });
  mx = m, mi = i_m;
  block_best(mx, mi, sc);
  float sum[1] = {s * __expf(m - mx)};  // this thread's mass relative to the row's max
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

// An element's softmax weight exp((x - max) / T) in fixed point (2^-40 units), so that every mass sum is exact and the
// same in any order: the thresholds do not depend on which elements a pass visits, or in which order.
__device__ __forceinline__ unsigned long long mass_fx(float v, float mx, float inv_t) {
  const float e = __expf((v - mx) * inv_t);
  return e > 0.f ? __float2ull_rn(e * 1099511627776.f) : 0ull;  // NaN and -inf weigh nothing
}

// The cut-off search over a set of elements visited by each(f) (f(i, x) for this thread's share): rk / rp narrowed
// from their lo (where pred holds) to the largest key with count(key >= t) >= top_k / mass(key >= t) >= target.
template <class Each>
__device__ void search_keys(Each&& each, const SampleParams& p, float mx, unsigned long long target, KeyRange& rk,
                            KeyRange& rp, Scratch& sc) {
  const float inv_t = 1.f / p.temperature;
  while (!rk.done() || !rp.done()) {  // block-uniform: every thread holds the same ranges
    uint32_t tk[kWays - 1], tp[kWays - 1];
#pragma unroll
    for (int j = 0; j < kWays - 1; ++j) tk[j] = rk.cand(j + 1), tp[j] = rp.cand(j + 1);
    unsigned long long mass[kWays - 1] = {};
    int cnt[kWays - 1] = {};
    if (!rp.done()) {
      each([&](int, float v) {
        const uint32_t key = order_key(v);
        const unsigned long long e = mass_fx(v, mx, inv_t);
#pragma unroll
        for (int j = 0; j < kWays - 1; ++j) cnt[j] += key >= tk[j], mass[j] += key >= tp[j] ? e : 0ull;
      });
    } else {
      each([&](int, float v) {
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
}

// Gumbel-max draw among the elements each(f) visits with key >= thr: argmax of (x - ref) / T - log(-log(u_i)), u_i in
// (0, 1) from hash(seed, counter, i); ref is any per-row constant (the max where known, for precision). The argmax is
// taken in (score desc, index asc) order, so the id does not depend on the visiting order. Every thread gets the id,
// 0x7fffffff when no element qualifies.
template <class Each>
__device__ int gumbel_draw(Each&& each, const SampleParams& p, uint32_t thr, float ref, Scratch& sc) {
  const float inv_t = 1.f / p.temperature;
  const uint32_t rs = hash_u32(hash_u32(p.seed, p.counter), 0x5bd1e995u);
  float best = -INFINITY;
  int bi = 0x7fffffff;
  each([&](int i, float v) {
    if (order_key(v) < thr) return;
    const float u = (static_cast<float>(hash_u32(rs, static_cast<uint32_t>(i)) >> 8) + 0.5f) * (1.f / 16777216.f);
    const float s = (v - ref) * inv_t - logf(-logf(u));  // accurate logf: u near 1 decides the largest G
    if (before(s, i, best, bi)) best = s, bi = i;
  });
  block_best(best, bi, sc);
  return bi;
}

// The candidate stage of a top-k / top-p row: a histogram of d = (max - x) / T in kBins bins of 1 / kBinsPerNat nat
// (fixed-point masses and counts) bounds both thresholds from below; where the bins reach top_k and top_p of Z, the
// elements of those bins and above (at most kMaxCand) are copied to shared memory, and the search and the draw run
// there: three passes over the row instead of thirteen. Otherwise (a flat row, or thresholds past the binned 16
// nats) they run over the row.
constexpr int kBins = 128;
constexpr float kBinsPerNat = 8.f;
constexpr int kMaxCand = 8192;
constexpr size_t kSampleSmem = kMaxCand * (sizeof(float) + sizeof(int));

struct Candidates {
  float* v;  // [kMaxCand] values, in no particular order
  int* i;    // [kMaxCand] their indices
  int n = 0;
};

// The min-p key: p_i >= min_p * p_max <=> logit_i >= max + T * ln(min_p) (the max survives every cut-off); 0 (keep
// everything) when min-p is off.
__device__ __forceinline__ uint32_t min_p_key(const SampleParams& p, float mx) {
  return p.min_p > 0.f && p.min_p <= 1.f ? order_key(mx + p.temperature * logf(p.min_p)) : 0u;
}

// Sampled row with top-k / top-p / min-p (mx: the row's max): the draw, or 0x7fffffff when nothing qualifies.
__device__ int draw_with_cutoffs(const float* row, int V, const SampleParams& p, float mx, Candidates& cand,
                                 Scratch& sc) {
  __shared__ unsigned int hcnt[kBins];
  __shared__ unsigned long long hmass[kBins];
  __shared__ int n_cand;
  __shared__ unsigned int min_key;
  const int tid = threadIdx.x;
  const float inv_t = 1.f / p.temperature;
  const bool use_k = p.top_k > 1 && p.top_k < V;
  const bool use_p = p.top_p > 0.f && p.top_p < 1.f;
  for (int b = tid; b < kBins; b += kSampleThreads) hcnt[b] = 0, hmass[b] = 0;
  if (tid == 0) n_cand = 0, min_key = 0xffffffffu;
  __syncthreads();
  unsigned long long rest[1] = {0};  // mass past the bins
  int n_nan[1] = {0};
  for_each_mine(row, V, [&](int, float v) {
    const unsigned long long e = mass_fx(v, mx, inv_t);
    const float bf = (mx - v) * inv_t * kBinsPerNat;
    if (bf < float(kBins)) {
      const int b = static_cast<int>(bf);
      atomicAdd(&hcnt[b], 1u);
      atomicAdd(&hmass[b], e);
    } else {
      rest[0] += e, n_nan[0] += v != v;
    }
  });
  block_sums(rest, n_nan, sc);  // its barriers also publish the bins
  unsigned long long z = rest[0];
  for (int b = 0; b < kBins; ++b) z += hmass[b];
  const unsigned long long target = use_p ? static_cast<unsigned long long>(ceil(double(p.top_p) * double(z))) : 0ull;
  // The first bins where the cumulative count reaches top_k and the mass top_p of Z; the candidates are the bins up to
  // the smaller (the other cut-off, if it lies lower, loses to this one).
  int bk = use_k ? -1 : kBins, bp = use_p ? -1 : kBins;
  unsigned long long cm = 0;
  unsigned int cc = 0;
  for (int b = 0; b < kBins && (bk < 0 || bp < 0); ++b) {
    cm += hmass[b], cc += hcnt[b];
    if (bk < 0 && cc >= unsigned(p.top_k)) bk = b;
    if (bp < 0 && cm >= target) bp = b;
  }
  const int bc = min(bk < 0 ? kBins : bk, bp < 0 ? kBins : bp);
  unsigned int n_in = 0;
  unsigned long long m_in = 0;
  for (int b = 0; b <= bc && b < kBins; ++b) n_in += hcnt[b], m_in += hmass[b];
  KeyRange rk, rp;
  if (!use_k) rk.hi = 0;
  if (!use_p) rp.hi = 0;
  // Both cut-offs narrowed over the elements each(f) visits, then the draw among those at or above all three keys.
  auto search_and_draw = [&](auto&& each) {
    search_keys(each, p, mx, target, rk, rp, sc);
    const uint32_t thr = max(max(use_k ? rk.lo : 0u, use_p ? rp.lo : 0u), min_p_key(p, mx));
    return gumbel_draw(each, p, thr, mx, sc);
  };
  if (bc < kBins && n_in <= unsigned(kMaxCand)) {
    for_each_mine(row, V, [&](int i, float v) {
      if (!((mx - v) * inv_t * kBinsPerNat < float(bc + 1))) return;  // the bins' own test, so the same elements
      const int slot = atomicAdd(&n_cand, 1);
      if (slot >= kMaxCand) return;  // cannot happen: the same test counted n_in <= kMaxCand of them
      cand.v[slot] = v, cand.i[slot] = i;
      atomicMin(&min_key, order_key(v));
    });
    __syncthreads();
    cand.n = min(n_cand, kMaxCand);
    auto each = [&](auto&& f) {
      for (int c = tid; c < cand.n; c += kSampleThreads) f(cand.i[c], cand.v[c]);
    };
    // Every element at or above the lowest candidate is a candidate, so the sums over them are the row's for any key
    // from there up; a cut-off that fails there lies below the other one and drops out.
    if (use_k) rk.lo = min_key, rk.hi = n_in >= unsigned(p.top_k) ? 0xffffffffu : min_key;
    if (use_p) rp.lo = min_key, rp.hi = m_in >= target ? 0xffffffffu : min_key;
    return search_and_draw(each);
  }
  // The row search, from the bins' bounds: a cut-off in bin b holds at every key below the bin (all of bins 0..b are
  // at or above it) and fails above it (bins 0..b-1 do not reach it); one bin of margin each side for the rounding of
  // the bin test. Rows with NaNs (counted, but weightless) or too large a max for that margin search the whole range.
  if (n_nan[0] == 0 && isfinite(mx) && fabsf(mx) * 1e-5f < p.temperature / kBinsPerNat) {
    auto bound = [&](int b, KeyRange& r) {
      if (b < 0 || b >= kBins) return;
      r.lo = order_key(mx - float(b + 2) / kBinsPerNat * p.temperature);
      const uint32_t fails = order_key(mx - float(b - 1) / kBinsPerNat * p.temperature);
      if (fails > r.lo) r.hi = fails - 1;
    };
    if (use_k) bound(bk, rk);
    if (use_p) bound(bp, rp);
  }
  return search_and_draw([&](auto&& f) { for_each_mine(row, V, f); });
}

// One block per row: [raw-logit log-softmax stats and top-n], edits in place, then greedy or a draw, [its logprob].
__global__ void __launch_bounds__(kSampleThreads) sample_kernel(float* logits, int V, const SampleParams* params,
                                                                const LogitEdit* edits, float* edit_raw,
                                                                TokenLogprobs* lp_out, int32_t* out) {
  pdl_wait();
  pdl_trigger();
  __shared__ Scratch sc;
  extern __shared__ float cand_smem[];  // kSampleSmem: the candidates of a top-k / top-p row
  float* row = logits + static_cast<int64_t>(blockIdx.x) * V;
  const SampleParams p = params[blockIdx.x];
  const int tid = threadIdx.x;
  const bool want_lp = p.top_logprobs >= 0 && lp_out;
  float best, lse = 0.f;
  int bi;
  if (want_lp) {  // log-softmax of the raw logits: lse, then the top n one block max at a time
    float z;
    block_max_mass(row, V, sc, best, bi, z);
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
    const bool min_p = p.min_p > 0.f && p.min_p <= 1.f;
    float mx = 0.f;
    bi = 0x7fffffff;
    if (cut || min_p) block_next_max(row, V, 0.f, -1, sc, mx, bi);
    if (cut) {
      Candidates cand;
      cand.v = cand_smem, cand.i = reinterpret_cast<int*>(cand_smem + kMaxCand);
      chosen = draw_with_cutoffs(row, V, p, mx, cand, sc);
    } else {
      chosen = gumbel_draw([&](auto&& f) { for_each_mine(row, V, f); }, p, min_p_key(p, mx), mx, sc);
    }
    if (chosen == 0x7fffffff) chosen = bi != 0x7fffffff ? bi : 0;  // every logit -inf / NaN
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
  static bool configured = false;  // an idempotent attribute; the flag only skips the call
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSampleSmem)));
    configured = true;
  }
  launch_pdl(sample_kernel, dim3(M), dim3(kSampleThreads), kSampleSmem, s, logits, V, params, edits, edit_raw,
             logprobs, out);
  CUDA_LAUNCH_CHECK();
}

}  // namespace citadel::cuda
