// Host launchers of the multi-head latent attention (MLA) kernels of DeepSeek-V2/V3 (src/kernels/cuda/mla.cu), bf16.
// Conventions as cuda_ops.h: every pointer is device memory, bf16 tensors are raw bits (bf16_t), row-major, launchers
// are asynchronous on `s`, stateless, and CHECK the launch (a launch error is a caller bug: shapes are validated
// above). Include only from CUDA-side code and GPU tests.
//
// Shapes: T tokens, H = n_heads, nope = qk_nope, rope = qk_rope, r = kv_lora_rank, L = r + rope (the latent cache row:
// the normalised latent, then the roped shared key).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/cuda_ops.h"

namespace citadel::cuda {

// In place, each of T rows: x[t][0:width] = rmsnorm(x[t][0:width]) * w, fp32 math: scale = 1 / sqrt(mean(x^2) +
// eps), y = x * scale * w rounded to bf16 (the CPU twin cpu::rmsnorm). Row t at x + t*row_stride; columns past
// width are not touched. w [width]. width <= 8192.
void rmsnorm_rows(bf16_t* x, int T, int width, int64_t row_stride, const bf16_t* w, float eps, cudaStream_t s);

struct MlaShape {
  int n_heads = 0, qk_nope = 0, qk_rope = 0, kv_lora_rank = 0;  // qk_rope even, <= 128; kv_lora_rank even, <= 1024
};

// Per token t (position positions[t]):
//  - kv_a row t [r | rope] (row stride L): latent = rmsnorm(latent) * kv_norm_w (eps, as rmsnorm_rows), the rope
//    key rotated, both in place (bf16);
//  - slots[t] >= 0: that whole row (L values, as just written) is copied to cache + slots[t] * L (-1: skipped);
//  - every head h: q[t][h][nope : nope + rope] (q rows [T][H][nope + rope]) rotated and written to
//    q_lat[t][h][r : r + rope] (q_lat rows [T][H][L]; its first r columns are not touched, q is left unrotated).
// RoPE: adjacent pairs (2i, 2i+1) of the rope part, angle = positions[t] * inv_freq[i] (fp32), i < rope/2, cos and
// sin multiplied by mscale: inv_freq [rope / 2] and mscale are cpu::rope_freq_table's (rounded to fp32), so that
// linear / YaRN scaling and frequency factors come in through the table (deepseek2's YaRN: mscale 1, model/rope.cc).
// One block per token; q, kv_a and q_lat must not overlap.
void mla_rope_kv_write(const bf16_t* q, bf16_t* kv_a, bf16_t* q_lat, const MlaShape& m, int T,
                       const int32_t* positions, const float* inv_freq, float mscale, const bf16_t* kv_norm_w,
                       float eps, const int32_t* slots, bf16_t* cache, cudaStream_t s);

// The absorptions at small T, per head h < H: y[t*ldy + h*sy + n] = bf16(sum_k W[h][n][k] * x[t*ldx + h*sx + k]),
// n < N, k < K, fp32 accumulation; W [H][N][K] bf16 (W_UK: N = r, K = qk_nope; W_UV: N = v_head_dim, K = r). Each
// warp holds a few weight rows in registers (loaded before the PDL wait) and sweeps the T tokens, so the weights are
// read once. Needs heads_gemv_supported (K / 8 a power of two from 8 to 128, N a multiple of a warp's rows, T <=
// kHeadsGemvMaxTokens); x, ldx, sx 16-byte aligned / multiples of 8; W 16-byte aligned.
constexpr int kHeadsGemvMaxTokens = 8;
bool heads_gemv_supported(int T, int N, int K);
void heads_gemv_bf16(const bf16_t* x, int64_t ldx, int64_t sx, const bf16_t* W, bf16_t* y, int64_t ldy, int64_t sy,
                     int T, int H, int N, int K, cudaStream_t s);

// mla_rope_kv_write and the W_UK absorption heads_gemv_bf16(q, H*qk, qk, k_b, q_lat, H*L, L, T, H, r, qk_nope) in one
// launch (they touch disjoint parts of q_lat; the results are the two calls', bit for bit). k_b [H][r][qk_nope] bf16,
// 16-byte aligned; needs heads_gemv_supported(T, r, qk_nope), qk and L multiples of 8.
void mla_rope_absorb(const bf16_t* q, bf16_t* kv_a, bf16_t* q_lat, const MlaShape& m, int T,
                     const int32_t* positions, const float* inv_freq, float mscale, const bf16_t* kv_norm_w,
                     float eps, const int32_t* slots, bf16_t* cache, const bf16_t* k_b, cudaStream_t s);

struct MlaAttention {
  const bf16_t* cache = nullptr;          // [n_blocks][block_size][L] one layer's latent cache
  const int32_t* block_tables = nullptr;  // [B][max_blocks_per_seq]
  const int32_t* seq_lens = nullptr;      // [B] tokens cached per sequence (keys at or past it are never read)
  const int32_t* positions = nullptr;     // [T] each query token's position in its sequence
  const int32_t* query_start = nullptr;   // [B+1] device; null: decode (token t is sequence t, B == T)
  int max_blocks_per_seq = 0, block_size = 16;
  float scale = 0.f;                      // softmax scale
  // Decode only (query_start null), tensor-core kernel: positions, seq_lens, the block tables and every cache row
  // before positions[t] were written before the previous launch in the stream (only the step's own key row is the
  // previous kernel's), so the first key tile's other rows are copied before the PDL wait.
  bool early_keys = false;
};

// Absorbed MLA attention, one shared latent head: for token t of sequence b and head h,
//   s_p = scale * (q_lat[t][h][:] . cache_row(p)[:])   over all L values, p = 0..positions[t]
//   out[t][h][:] = sum_p softmax(s)_p * cache_row(p)[0:r]
// q_lat [T][H][L], out [T][H][r] bf16; fp32 accumulation and online softmax (probabilities stay fp32).
// query_start (prefill): tokens query_start[b] .. query_start[b+1]-1 are sequence b's (non-decreasing, query_start[B]
// == T); each block finds its token's sequence by a scan of it, so B should stay in the hundreds.
// Keys visible to token t: 0 .. min(positions[t] + 1, seq_lens[b], max_blocks_per_seq * block_size) - 1.
//
// Work split: a block takes one token and up to 16 heads (every key row is read once per 16 heads), keys in tiles of
// 32 staged through shared memory (16-byte copies when L % 8 == 0, 4-byte otherwise). When T * ceil(H / 16) blocks
// would leave the GPU idle (decode of few sequences), each (token, head group) is split over a thread-block cluster
// of up to 8 blocks, each taking a slice of the context, merged by log-sum-exp through distributed shared memory: no
// workspace. The grid depends only on (T, H), so the call can be captured in a CUDA graph and replayed with other
// seq_lens / positions. Any context length (keys are streamed). L <= 1152. Shapes the tensor-core kernel takes
// (mla_attention_mma_supported, 16-byte aligned cache and q_lat) run there instead, split the same way.
void mla_attention(const MlaAttention& p, const MlaShape& m, const bf16_t* q_lat, int T, bf16_t* out, cudaStream_t s);

// How mla_attention splits the work: heads per block (4 or 16) and blocks per cluster over the context (1, 2, 4 or
// 8). The plan depends only on (T, n_heads) and the device (its SM count, cluster support): few tokens take small
// head groups and large clusters so that the GPU fills. Tests and benchmarks run every plan through mla_attention_run.
struct MlaPlan {
  int heads_per_block = 16;
  int n_splits = 1;
  bool tensor_cores = false;  // mla_attention_mma (needs 16 heads per block and a supported shape)
};
MlaPlan mla_attention_plan(int T, int n_heads, bool tensor_cores_ok = false);
void mla_attention_run(const MlaAttention& p, const MlaShape& m, const bf16_t* q_lat, int T, bf16_t* out,
                       const MlaPlan& plan, cudaStream_t s);

// The same attention on tensor cores (mla_mma.cu), for many query tokens: a block per (token, 16 heads), the 16 heads
// as the rows of each MMA over key tiles of 32 (S = Q K^T and O += P V with mma.sync, fp32 accumulation, online
// softmax in fp32 with the probabilities rounded to bf16 for P V, the normaliser summing the rounded values). Shapes:
// kv_lora_rank 512, qk_rope 64 (DeepSeek-V2/V3), n_heads a multiple of 16 (mla_attention_mma_supported); cache and
// q_lat 16-byte aligned. n_splits (1, 2, 4, 8, or 16: a non-portable cluster, which the plan takes only with
// CITADEL_MLA_MAX_SPLITS=16): a cluster of that many blocks per (token, 16 heads), each taking a
// slice of the keys, merged by log-sum-exp through distributed shared memory (as mla_attention's clusters). The
// dispatcher takes it wherever the shape allows, split while the blocks still fit the SMs (mla_attention_plan).
bool mla_attention_mma_supported(const MlaShape& m);
void mla_attention_mma(const MlaAttention& p, const MlaShape& m, const bf16_t* q_lat, int T, bf16_t* out,
                       cudaStream_t s, int n_splits = 1);

}  // namespace citadel::cuda
