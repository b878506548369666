// Host launchers of the fp32 ("exact") kernels of DeepSeek-V2/V3's multi-head latent attention and mixture of experts
// (src/kernels/cuda/mla_moe_exact.cu): the GPU twin of the CPU ops (model/cpu_ops.cc mla_rope_kv_write,
// mla_attention, moe) for the decoder's exact path (CudaWeightFormat::kF32, or bf16 weights with f32 activations).
// Correctness first: plain SIMT kernels, one warp per output value of the matrix products, fp32 accumulation, IEEE
// arithmetic (expf, true division, 1 / sqrtf) and a fixed reduction order (deterministic); results differ from the
// CPU exact path only by fp32 summation order and libm ulps. Not a fast path.
//
// Conventions as mla.h / moe.h: device pointers, row-major, asynchronous on `s`, stateless, CHECK on a broken size
// contract (callers validate shapes). Every grid depends only on the sizes passed (T, H, k, widths), never on
// positions or routing, so the calls can be captured in a CUDA graph. Weight stacks come as fp32 (kF32) or bf16 bits
// (f32 activations); activations, the latent cache and outputs are fp32. No alignment requirement (scalar loads).
// Include only from CUDA-side code and GPU tests.
//
// Shapes: T tokens, H = n_heads, nope = qk_nope, rope = qk_rope, r = kv_lora_rank, L = r + rope (one cache row),
// k experts per token, E experts of width Fe, D model width.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/mla.h"

namespace citadel::cuda {

// Per token t (one block each), in this order:
//  - kv_a row t [r | rope] (row stride L): latent = rmsnorm(latent) * kv_norm_w (scale 1 / sqrt(mean(x^2) + eps),
//    fp32), then the rope key rotated, both in place;
//  - every head h: q[t][h][nope : nope + rope] (q rows [T][H][nope + rope], not modified) rotated into
//    q_lat[t][h][r : L] (q_lat rows [T][H][L]; its first r columns are not touched);
//  - slots[t] >= 0: the whole kv_a row as just written to cache + slots[t] * L (-1: skipped).
// RoPE: adjacent pairs (2i, 2i+1), angle = positions[t] * inv_freq[i] and its cos / sin in double, times mscale,
// rounded to fp32, then the rotation in fp32 without fused multiply-adds (the CPU twin, kernels/cpu/rope.cc).
// inv_freq [rope / 2] and mscale: cpu::rope_freq_table. m.qk_rope even <= 128, L <= kMlaExactMaxLatent.
constexpr int kMlaExactMaxLatent = 1152;
constexpr int kMlaExactMaxRank = 1024;
void mla_rope_kv_write_f32(const float* q, float* kv_a, float* q_lat, const MlaShape& m, int T,
                           const int32_t* positions, const double* inv_freq, double mscale, const float* kv_norm_w,
                           float eps, const int32_t* slots, float* cache, cudaStream_t s);

// MLA's per-head absorptions in fp32: y[t][h][n] = sum_k W[h][n][k] x[t][h][k] for t < T, h < H, n < N; x row (t, h)
// at x + t*ldx + h*sx, y at y + t*ldy + h*sy, W [H][N][K] fp32 or bf16 bits. One warp per output value.
void heads_gemv_f32(const float* x, int64_t ldx, int64_t sx, const float* W, float* y, int64_t ldy, int64_t sy, int T,
                    int H, int N, int K, cudaStream_t s);
void heads_gemv_f32(const float* x, int64_t ldx, int64_t sx, const bf16_t* W, float* y, int64_t ldy, int64_t sy,
                    int T, int H, int N, int K, cudaStream_t s);

// Absorbed MLA attention over an fp32 latent cache (`cache`: one layer's [n_blocks][block_size][L]; p.cache is not
// read; the other fields of p as mla.h's mla_attention): for token t of sequence b and head h,
//   s_p = p.scale * (q_lat[t][h][:] . cache_row(p)[:])   over all L values, p < n_t
//   out[t][h][:] = sum_p softmax(s)_p * cache_row(p)[0:r]
// n_t = min(positions[t] + 1, seq_lens[b], max_blocks_per_seq * block_size) (a token without a visible key: zeros).
// q_lat [T][H][L], out [T][H][r] fp32. A block per (token, head), 8 warps taking every 8th key with an online
// softmax each, merged in warp order. L <= kMlaExactMaxLatent, r <= kMlaExactMaxRank.
void mla_attention_f32(const MlaAttention& p, const float* cache, const MlaShape& m, const float* q_lat, int T,
                       float* out, cudaStream_t s);

// The routed experts of the pairs p = t*k + j (token t's j-th choice, expert ids[p] in [0, E); an id outside gives
// zeros): act[p][f] = silu(x[t] . gate[e][f]) * (x[t] . up[e][f]) (silu(a) = a / (1 + expf(-a))), x [T][D],
// gate / up [E][Fe][D], act [T*k][Fe]. Then y[p][n] = act[p] . down[e][n], down [E][D][Fe], y [T*k][D] (moe.h's
// moe_combine sums them into the output). fp32 or bf16-bits weights.
void moe_gate_up_silu_f32(const float* x, const int32_t* ids, int T, int k, const float* gate, const float* up, int E,
                          int Fe, int D, float* act, cudaStream_t s);
void moe_gate_up_silu_f32(const float* x, const int32_t* ids, int T, int k, const bf16_t* gate, const bf16_t* up,
                          int E, int Fe, int D, float* act, cudaStream_t s);
void moe_down_f32(const float* act, const int32_t* ids, int T, int k, const float* down, int E, int D, int Fe,
                  float* y, cudaStream_t s);
void moe_down_f32(const float* act, const int32_t* ids, int T, int k, const bf16_t* down, int E, int D, int Fe,
                  float* y, cudaStream_t s);

}  // namespace citadel::cuda
