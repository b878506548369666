// CUDA kernels of the DeepSeek-V2/V3 mixture-of-experts op (moe.cu), bf16 expert weights. Include only from
// CUDA-side code and GPU tests (it pulls in <cuda_runtime_api.h>); kernels never include model/ headers, so the
// routing parameters come in the POD MoeRouting (the runtime fills it from model/config.h MoeConfig).
//
// One MoE layer for T tokens, k experts per token, E experts of width Fe over the model width D:
//   moe_route            logits [T][E] -> ids [T][k], weights [T][k]
//   moe_sort             ids -> offsets [E+1], pairs [T*k] (counting sort by expert)
//   moe_gate_up_silu     x [T][D] -> act [T*k][Fe]   (grouped by expert)
//   moe_down             act -> y [T*k][D]            (grouped by expert)
//   moe_combine          y, weights -> out [T][D]     (sum over each token's k choices)
// A "pair" is t*k + j: token t's j-th choice. Every launch is asynchronous on `s`, checks its launch (CHECK aborts
// on a launch error or a broken size contract: a bug, callers validate shapes) and has a grid that depends only on
// the sizes passed (T, E, Fe, D), never on the routing, so the whole sequence can be captured in a CUDA graph.
// Launches use programmatic dependent launch (common.cuh launch_pdl). Thread-safety: stateless.
//
// Alignment: D % 8 == 0 and Fe % 8 == 0 (weight and activation rows are read with 16-byte loads), every pointer
// 16-byte aligned (cudaMalloc'd buffers and row offsets of them that are multiples of 8 bf16 / 4 fp32).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {

// Routing parameters (model/config.h MoeConfig, as model/moe.h uses them).
struct MoeRouting {
  int n_experts = 0, n_used = 0;    // E (<= 256), k (<= 16, <= E)
  int n_shared = 0;                 // S always-chosen experts E .. E+S-1 of weight 1 after the k choices (the shared
                                    // FFN in pieces of the expert width; 0 <= S, E + S <= kMoeMaxSlots)
  int n_group = 1, topk_group = 1;  // group-limited selection when n_group > 1 and topk_group < n_group (E %
                                    // n_group == 0): V2 ranks a group by its best score, V3 by the sum of its best two
  bool sigmoid = false;             // V3: sigmoid scores + correction bias for the choice only; V2: softmax
  bool norm_topk = false;           // renormalise the chosen weights
  float routed_scale = 1.f;         // times the final weights
  // Expert parallel (tensor parallelism): this rank holds routed experts [expert_begin, expert_end) as its local
  // experts 0..; a chosen expert there gets its local id, one elsewhere id -1 and weight 0 (the selection and the
  // weights of the held ones are unchanged). expert_end <= expert_begin: every expert is held (ids as chosen).
  int expert_begin = 0, expert_end = 0;
};
constexpr int kMoeMaxExperts = 256;  // routed experts
constexpr int kMoeMaxSlots = 288;    // expert slots of the grouped kernels: routed + shared (a multiple of 32)
constexpr int kMoeMaxUsed = 16;
constexpr int kMoeMaxPairs = 65536;  // T * k per launch of moe_sort

// Per token t: logits [T][E] fp32 (the router's output) -> ids [T][k+S] int32 and weights [T][k+S] fp32: first the
// selection of model/moe.h moe_route bit for bit (decreasing choice score, ties to the lower id; scores computed with
// the same fp32 operations in the same order, exp correctly rounded), then ids E .. E+S-1 with weight 1 (S =
// r.n_shared); bias [E] fp32 or null (sigmoid gating only). One block per token. The kernels below then take k + S
// choices per token over E + S expert slots.
void moe_route(const float* logits, const float* bias, const MoeRouting& r, int T, int32_t* ids, float* weights,
               cudaStream_t s);

// Counting sort of the T*k (token, choice) pairs by expert: offsets [E+1] int32 (offsets[e] .. offsets[e+1]: expert
// e's pairs, offsets[0] = 0, offsets[E] = the pairs sorted), pairs [T*k] int32 = t*k + j, stable (increasing pair
// index within an expert). ids [T*k] in [0, E), or -1 (another rank's expert: left out, so offsets[E] = T*k less
// those; pairs past offsets[E] are unspecified). One block; T*k <= kMoeMaxPairs, E <= kMoeMaxSlots (here and below
// E counts every expert slot, routed and shared).
void moe_sort(const int32_t* ids, int T, int k, int E, int32_t* offsets, int32_t* pairs, cudaStream_t s);

// One stack of expert matrices [E][N][K]: bf16 (w: bf16_t, scales null), or quantised as the [E N][K] matrix of
// cuda_ops.h's layouts (the dense weight formats): int8 codes [E N][K] with a scale per row, int4 (K % 128 == 0)
// [E N][K / 2] with a scale per row and 128 k. The quantised kernels dequantise to fp32 (w = code * scale) and take
// the bf16 activations as they are (int4 here is w4a16, not the dense GEMV's w4a8).
enum class MoeWeightFormat { kBf16, kInt8, kInt4 };
struct MoeMatrix {
  const void* w = nullptr;
  const float* scales = nullptr;
  MoeWeightFormat fmt = MoeWeightFormat::kBf16;
};

// act[p][f] = bf16(silu(x[t] . gate[e][f]) * (x[t] . up[e][f])) for every pair p of expert e (t = p / k), fp32
// accumulation. x [T][D] bf16, gate / up [E][Fe][D] bf16, act [T*k][Fe] bf16 (row = pair index; rows of pairs
// absent from `pairs` are untouched). Grid (Fe / 16 row tiles, min(E, T*k) expert slots): slot y takes the y-th
// expert that has pairs (slots past the last such expert exit at once), and its pairs in chunks of 8 tokens
// (activations in shared memory, D in tiles of 2048), so each weight row is streamed from memory once per call and
// re-read from L2 only by later chunks (more than 8 pairs).
void moe_gate_up_silu(const bf16_t* x, const int32_t* offsets, const int32_t* pairs, int T, int k,
                      const bf16_t* gate, const bf16_t* up, int E, int Fe, int D, bf16_t* act, cudaStream_t s);

// y[p][n] = act[p] . down[e][n] (fp32 accumulation) for every pair p of expert e, grouped by expert as above (grid
// (D / 32 row tiles, min(E, T*k))). act [T*k][Fe] bf16, down [E][D][Fe] bf16, y [T*k][D] fp32.
void moe_down(const bf16_t* act, const int32_t* offsets, const int32_t* pairs, int T, int k, const bf16_t* down, int E,
              int D, int Fe, float* y, cudaStream_t s);
// The same two over any MoeMatrix format (gate and up of one format).
void moe_gate_up_silu(const bf16_t* x, const int32_t* offsets, const int32_t* pairs, int T, int k,
                      const MoeMatrix& gate, const MoeMatrix& up, int E, int Fe, int D, bf16_t* act, cudaStream_t s);
void moe_down(const bf16_t* act, const int32_t* offsets, const int32_t* pairs, int T, int k, const MoeMatrix& down,
              int E, int D, int Fe, float* y, cudaStream_t s);

// out[t][n] = (accumulate ? out[t][n] : 0) + sum_j weights[t][j] * y[t*k+j][n], j in increasing order (fp32,
// deterministic). skip_zero_weights (expert parallel): a choice of weight 0 is left out, its y row not read (another
// rank's expert leaves it unwritten); without it, all of a thread's y loads are in flight at once (batch-1 decode).
// y [T*k][D] fp32, weights [T][k] fp32, out [T][D] fp32.
void moe_combine(const float* y, const float* weights, int T, int k, int D, float* out, bool accumulate,
                 cudaStream_t s, bool skip_zero_weights = false);

// The two expert GEMVs per (token, choice) pair, for steps of few tokens (batch-1 decode): no sort. Grid (row tiles,
// T*k pairs): a block takes a few rows of one pair's expert ids[pair] (ids [T*k], as moe_route writes them, slots
// E .. of the shared experts included; a pair of id -1 is skipped: act / y rows unwritten) with every thread's share
// of those rows in flight at once. An expert chosen by several tokens is streamed once per pair, so this suits
// T*k <= kMoePairMaxPairs. Same math as moe_gate_up_silu / moe_down (fp32 accumulation, bf16 act, fp32 y; act and y
// in pair order), up to summation order. bf16 weights.
constexpr int kMoePairMaxPairs = 64;
// How a per-pair launch runs. Choices first .. first + count - 1 of every token's k (count 0: all k): act and y keep
// the pair order of all k choices, so launches of disjoint choices (the routed ones, and the shared experts on a
// stream of their own) fill one act / y that moe_combine sums. early_ids: ids were written at least two launches back
// in the stream (or before the step), so the launch reads them and starts its weight loads before its PDL wait (the
// down launch after the gate_up one; the shared experts' constant ids).
struct MoePairLaunch {
  int first = 0, count = 0;
  bool early_ids = false;
};
void moe_pair_gate_up_silu(const bf16_t* x, const int32_t* ids, int T, int k, const bf16_t* gate, const bf16_t* up,
                           int Fe, int D, bf16_t* act, cudaStream_t s, MoePairLaunch ch = {});
void moe_pair_down(const bf16_t* act, const int32_t* ids, int T, int k, const bf16_t* down, int D, int Fe, float* y,
                   cudaStream_t s, MoePairLaunch ch = {});
// Every block shape of the two (benchmarks and tests; variant 0 is the default): count, name, and the same calls.
int moe_pair_variant_count();
const char* moe_pair_variant_name(int v);
void moe_pair_gate_up_silu_variant(int v, const bf16_t* x, const int32_t* ids, int T, int k, const bf16_t* gate,
                                   const bf16_t* up, int Fe, int D, bf16_t* act, cudaStream_t s, MoePairLaunch ch = {});
void moe_pair_down_variant(int v, const bf16_t* act, const int32_t* ids, int T, int k, const bf16_t* down, int D,
                           int Fe, float* y, cudaStream_t s, MoePairLaunch ch = {});

// Tensor-core form of the two expert GEMMs (moe_mma.cu), for steps with several pairs per expert: mma.sync over tiles
// of one expert's pairs, the tile schedule found on the device from offsets (no host round trip; the grid depends
// only on T, k, E and the widths, so it can be captured in a CUDA graph). Rows are in sorted (expert) order between
// the two: act_sorted[i][f] = bf16(silu(x[t] . gate[e][f]) * (x[t] . up[e][f])) for sorted position i (pair
// pairs[i], token t = pairs[i] / k, expert e owning i), act_sorted [T*k][Fe] bf16; y[pairs[i]][n] = act_sorted[i] .
// down[e][n], y [T*k][D] fp32 in pair order as moe_down writes it. fp32 accumulation; same values as the GEMV
// kernels up to summation order. Tiles of 64 rows when T*k >= kMoeMmaLargeTile * E pairs, else of 16.
// Requires D % 8 == 0, Fe % 8 == 0, 16-byte aligned pointers, T*k <= kMoeMaxPairs.
constexpr int kMoeMmaLargeTile = 32;
// Every tile-shape variant of the two kernels (benchmarks and tests): count, name, and the same calls with variant v.
int moe_mma_variant_count();
const char* moe_mma_variant_name(int v);
void moe_mma_gate_up_silu_variant(int v, const bf16_t* x, const int32_t* offsets, const int32_t* pairs, int T, int k,
                                  const bf16_t* gate, const bf16_t* up, int E, int Fe, int D, bf16_t* act_sorted,
                                  cudaStream_t s);
void moe_mma_down_variant(int v, const bf16_t* act_sorted, const int32_t* offsets, const int32_t* pairs, int T, int k,
                          const bf16_t* down, int E, int D, int Fe, float* y, cudaStream_t s);
void moe_mma_gate_up_silu(const bf16_t* x, const int32_t* offsets, const int32_t* pairs, int T, int k,
                          const bf16_t* gate, const bf16_t* up, int E, int Fe, int D, bf16_t* act_sorted,
                          cudaStream_t s);
void moe_mma_down(const bf16_t* act_sorted, const int32_t* offsets, const int32_t* pairs, int T, int k,
                  const bf16_t* down, int E, int D, int Fe, float* y, cudaStream_t s);


}  // namespace citadel::cuda
