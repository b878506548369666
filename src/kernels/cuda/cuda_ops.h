// Host launchers of the CUDA kernels (src/kernels/cuda/*.cu). Include only from CUDA-side code and GPU tests:
// it pulls in <cuda_runtime_api.h> (a plain C header, so g++ compiles it), never from core code.
//
// Conventions: every pointer is device memory; bf16 tensors are passed as uint16_t (raw bfloat16 bits);
// row-major throughout; launchers are asynchronous on `stream` and check the launch (CHECK aborts on a launch
// error, which is a bug: shapes are validated by the callers). Thread-safety: launchers are stateless, except
// gemm_bf16, which uses a cuBLAS handle owned by the caller.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace citadel::cuda {

using bf16_t = uint16_t;  // raw bfloat16 bits

enum class RopeLayout { kNorm, kNeox };  // kNorm: pairs (2i, 2i+1) (llama GGUF); kNeox: pairs (i, i+d/2) (HF qwen2)

// ---- elementwise.cu ----
// out[t][:] = table[tokens[t] - first][:] as fp32; table [vocab][dim] bf16 (rows first .. first + vocab - 1 of the
// whole vocabulary: a tensor-parallel rank's slice); out [T][dim] fp32. Token ids outside [first, first + vocab) give
// a zero row (callers validate ids; a rank's slice leaves the other ranks' ids to them).
void embedding(const bf16_t* table, const int32_t* tokens, float* out, int T, int dim, int vocab, cudaStream_t s,
               int first = 0);
// Tensor-parallel logits: gathered [n][rows][per] fp32 (rank q's vocabulary slice [q per, q per + per) of every row,
// as an all-gather lays them out) -> out [rows][vocab] (columns past vocab of the last slice dropped).
void vocab_unshard(const float* gathered, float* out, int rows, int per, int vocab, int n, cudaStream_t s);

// residual [T][dim] fp32 (in/out) += delta [T][dim] fp32 (skipped if null; the o/down projections write it in fp32
// so the residual stream never passes through bf16); out [T][dim] bf16 = residual * rsqrt(mean(residual^2) + eps) *
// weight [dim] bf16.
void add_rmsnorm(float* residual, const float* delta, const bf16_t* weight, bf16_t* out, int T, int dim, float eps,
                 cudaStream_t s);

// In place rotary embedding on x [T][row_stride] bf16: heads h in [0, n_heads) at columns h*head_dim.. ;
// positions [T]; angle = pos * theta^(-2i/head_dim).
void rope(bf16_t* x, int T, int n_heads, int head_dim, int row_stride, const int32_t* positions, float theta,
          RopeLayout layout, cudaStream_t s);

// gate_up [T][2*ffn] bf16 (gate = columns [0, ffn), up = [ffn, 2*ffn)); out [T][ffn] bf16 = silu(gate) * up.
void silu_mul(const bf16_t* gate_up, bf16_t* out, int T, int ffn, cudaStream_t s);

// y [M][N] bf16 += bias [N] bf16.
void add_bias(bf16_t* y, const bf16_t* bias, int M, int N, cudaStream_t s);

// out[m] = argmax_v logits[m][v] (lowest index on ties); logits [M][V] fp32; out [M] int32.
void argmax(const float* logits, int M, int V, int32_t* out, cudaStream_t s);

// dst [rows][cols] = src[index[r]][:] (bf16 row gather); index [rows] int32 on device.
void gather_rows(const bf16_t* src, const int32_t* index, bf16_t* dst, int rows, int cols, cudaStream_t s);

// Deterministic fill for benchmarks and poisoning: x[i] = bf16(uniform(-scale, scale)) from hash(seed, i).
void fill_random_bf16(bf16_t* x, int64_t n, uint32_t seed, float scale, cudaStream_t s);
void fill_random_f32(float* x, int64_t n, uint32_t seed, float scale, cudaStream_t s);  // the same, fp32

// Loaded weights in place, x [n] (runtime/weight_staging.h): from_f16: f16 bits -> bf16 bits as base/half.h's
// f32_to_bf16(f16_to_f32(h)) (round to nearest even, NaN rule included); else bf16 bits as f32_to_bf16(bf16_to_f32(b))
// (the identity but for signalling NaNs, which get their quiet bit).
void bf16_inplace(bf16_t* x, int64_t n, bool from_f16, cudaStream_t s);

// ---- sampling.cu ----
// One token's change to a logit row before sampling (logit_bias and penalties, backend/model_runner.h LogitEdit):
// x += bias; if (repeat) x = x > 0 ? x / repetition_penalty : x * repetition_penalty; x -= subtract.
struct LogitEdit {
  int32_t token = 0;
  float bias = 0.f;
  float subtract = 0.f;
  int32_t repeat = 0;
};
// Per-row sampling parameters (device memory). First the row's edits (edits[edit_begin, edit_begin + edit_count),
// distinct tokens in [0, V)) change the logits in place. Then temperature <= 0 or top_k == 1: greedy (argmax, lowest
// index on ties). Otherwise p_i ~ exp(logit_i / temperature) restricted to the logits >= the top_k-th largest (top_k
// 0 or >= V: off) and to the smallest highest-probability set holding top_p of the mass (top_p >= 1: off) and to
// p >= min_p * p_max (min_p 0: off); the cut-offs keep ties.
// The draw is a function of (seed, counter) alone: the caller passes the request's seed and its token index.
struct SampleParams {
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  float min_p = 0.f;  // keeps p >= min_p * p_max (0: off)
  uint32_t seed = 0;
  uint32_t counter = 0;
  float repetition_penalty = 1.f;
  int edit_begin = 0, edit_count = 0;
  int top_logprobs = -1;  // >= 0: fill the row's TokenLogprobs
};
constexpr int kMaxTopLogprobs = 20;
// A sampled row's logprobs: log-softmax of its RAW logits (before the edits) at the chosen token, and at the n =
// min(top_logprobs, 20) most likely tokens (most likely first, ties to the lower id).
struct TokenLogprobs {
  float logprob;
  int32_t n;
  int32_t ids[kMaxTopLogprobs];
  float lps[kMaxTopLogprobs];
};
// out[m] = a token drawn from row m of logits [M][V] fp32 (edited in place) under params[m]; out [M] int32. edits:
// null when no row has any. Rows with top_logprobs >= 0 fill logprobs[m] and keep each edited logit's raw value in
// edit_raw (parallel to edits); both may be null when no row asks.
void sample_tokens(float* logits, int M, int V, const SampleParams* params, const LogitEdit* edits, float* edit_raw,
                   TokenLogprobs* logprobs, int32_t* out, cudaStream_t s);
// Pipelined steps: in place, every tokens[t] < 0 becomes prev_ids[-1 - tokens[t]] (the id the previous step drew for
// that sequence, still on the device); tokens [T], prev_ids [>= the largest index referenced].
void resolve_pending_tokens(int32_t* tokens, int T, const int32_t* prev_ids, cudaStream_t s);

// ---- attention.cu ----
// Paged KV layout: pool [n_blocks][block_size][n_kv_heads][head_dim] bf16, one pool for K and one for V.
// slots [T] int32: physical slot = block * block_size + offset, or -1 to skip the token.
// k_src / v_src: row t at k_src + t*row_stride (the fused QKV buffer), n_kv_heads*head_dim contiguous values.
void kv_write(const bf16_t* k_src, const bf16_t* v_src, int row_stride, const int32_t* slots, bf16_t* k_pool,
              bf16_t* v_pool, int T, int n_kv_heads, int head_dim, cudaStream_t s);

// Fused RoPE (q and k heads, in place in the fused QKV rows [T][row_stride] = q | k | v) + KV write at slots[t]:
// the same results as rope() on both head sets followed by kv_write(). Scaled RoPE (linear, YaRN, frequency
// factors): inv_freq [head_dim / 2] device frequencies (cpu::rope_freq_table, rounded to fp32) and the cos/sin scale
// mscale replace theta: pair i turns by pos * inv_freq[i]. inv_freq null: theta^(-2i/head_dim), mscale unused.
// head_dim % 16 == 0 (<= 2048), row_stride % 8 == 0, qkv 16-byte aligned.
void rope_kv_write(bf16_t* qkv, int T, int row_stride, int n_heads, int n_kv_heads, int head_dim,
                   const int32_t* positions, float theta, RopeLayout layout, const int32_t* slots, bf16_t* k_pool,
                   bf16_t* v_pool, cudaStream_t s, const float* inv_freq = nullptr, float mscale = 1.f);

struct PagedAttention {
  const bf16_t* k_pool = nullptr;     // [n_blocks][block_size][n_kv_heads][head_dim]
  const bf16_t* v_pool = nullptr;     // same
  const int32_t* block_tables = nullptr;  // [B][max_blocks_per_seq]
  const int32_t* seq_lens = nullptr;  // [B] tokens in the cache for each sequence, the new ones included
  int max_blocks_per_seq = 0;
  int block_size = 16;
  int n_heads = 0, n_kv_heads = 0, head_dim = 128;
  float scale = 0.f;  // softmax scale, usually 1/sqrt(head_dim)
  int window = 0;     // > 0: sliding window (Gemma-3's local layers): the query at position p sees keys
                      // p - window + 1 .. p only (every kernel below but the wmma prefill twin)
};

// Decode: one query per sequence. q: row b at q + b*q_stride, [n_heads][head_dim]. out [B][n_heads*head_dim] bf16.
// n_splits > 1 splits each context into partitions of `partition` tokens (split-K) merged by log-sum-exp;
// the grid depends only on (B, n_splits), so a CUDA graph can be replayed for any seq_lens <= n_splits*partition.
// One launch: the last split block of each (sequence, kv head) merges the partitions (arrival counter).
// workspace: fp32, at least decode_workspace_floats(B, n_heads, head_dim, n_splits) floats (null if n_splits == 1),
// ZERO-FILLED before its first use (it holds the counters; every call leaves them at zero again). Calls sharing one
// workspace must not run concurrently.
int64_t decode_workspace_floats(int B, int n_heads, int head_dim, int n_splits);
// The words of a decode workspace its counters take (first); the rest may be lent to other stream-ordered work
// (the prompts' split-KV) between decode calls.
int64_t decode_workspace_counters();
void paged_attention_decode(const PagedAttention& p, const bf16_t* q, int q_stride, bf16_t* out, int B, int n_splits,
                            int partition, float* workspace, cudaStream_t s);
// The two implementations behind paged_attention_decode (same contract; exposed for tests and the benchmark):
// tensor cores (head_dim 64/128, partition a multiple of 16; picked whenever decode_mma_supported) and the SIMT
// kernel (any partition, head_dim 64/128/256). The mma path rounds the probabilities to bf16 for P V.
bool decode_mma_supported(const PagedAttention& p, int partition);
void paged_attention_decode_mma(const PagedAttention& p, const bf16_t* q, int q_stride, bf16_t* out, int B,
                                int n_splits, int partition, float* workspace, cudaStream_t s);
void paged_attention_decode_simt(const PagedAttention& p, const bf16_t* q, int q_stride, bf16_t* out, int B,
                                 int n_splits, int partition, float* workspace, cudaStream_t s);

// Prefill of one sequence: n_q queries (rows of q at stride q_stride, [n_heads][head_dim] each) that are the LAST n_q
// tokens of its context (seq_lens[seq] tokens, the prefix possibly cached): causal, bottom-right aligned.
// out [n_q][n_heads*head_dim] bf16. head_dim 64, 128 or 256. Flash-attention-2 style on mma.sync (bf16
// probabilities); KV tiles of 64 keys (32 at head_dim 256); with a window, the tiles before it are skipped.
// Split-KV: with the sequence's context length ctx (host) and a workspace of at least
// prefill_workspace_floats(n_q, n_heads, head_dim) floats, a prompt whose plain grid (query tiles x heads) is
// smaller than the SM count and that has no window also splits each query tile's KV tiles into chunks (at most
// kPrefillMaxChunks, of at least 4 tiles), one block per (query tile, chunk), and a second launch merges the chunks'
// partial outputs by log-sum-exp: a few queries over a long context (a new turn after a cached prefix, a prompt's
// last chunk) no longer run on a few SMs one tile after another. Tiles of one chunk write `out` directly, as without
// a split. Without ctx or workspace, or with CITADEL_PREFILL_SPLIT=0: no split. The workspace is free again when the
// call's work is done.
constexpr int kPrefillSplitMaxQ = 512, kPrefillMaxChunks = 8;
int64_t prefill_workspace_floats(int n_q, int n_heads, int head_dim);
void paged_attention_prefill(const PagedAttention& p, int seq, const bf16_t* q, int q_stride, int n_q, bf16_t* out,
                             cudaStream_t s, int ctx = 0, float* workspace = nullptr, int64_t workspace_floats = 0);
// The round 1-4 kernel (wmma, S/P/O staged in shared memory): same contract (head_dim 64 or 128, no window), kept
// for A/B and as a test twin.
void paged_attention_prefill_wmma(const PagedAttention& p, int seq, const bf16_t* q, int q_stride, int n_q,
                                  bf16_t* out, cudaStream_t s);

// ---- gemv.cu (weight-only matmuls for small batches, M <= 8 per launch; larger M is split by the launcher) ----
// y [M][N] = x [M][K] @ W^T (+ bias [N]); x bf16; y bf16 or fp32 (y_f32). W is [N][K] in one of:
//   bf16:  bf16_t [N][K]
//   int8:  uint8_t [N][K] holding q + 128 (q in [-127, 127]), scales fp32 [N]: w = q * scale[n]
//   int4:  uint8_t [N][K/2], groups of 128 along K, scales fp32 [N][K/128]: w = q * scale[n][k/128], q in [-8, 7]
//          stored as the nibble q + 8 at the place int4_position() gives (16 bytes = 32 consecutive k of a row).
//          The int4 GEMV quantises x to int8 per 32 k (scale amax/127, round to nearest even) and sums in integers
//          (w4a8): its result is that of the int8-rounded x, not of x itself.
//   fp8:   uint8_t [N][K] e4m3 (OCP FP8, bias 7, max 448, no inf), scales fp32 [N]: w = e4m3(q) * scale[n]
// K must be a multiple of 8 (bf16), 16 (int8, fp8) or 128 (int4).
void gemv_bf16(const bf16_t* x, const bf16_t* W, const bf16_t* bias, void* y, bool y_f32, int M, int N, int K,
               cudaStream_t s);
// Two bf16 GEMVs over the same x in one launch (M <= 2, no bias, bf16 outputs): y1 [M][N1] = x W1^T and y2 [M][N2] =
// x W2^T, each as gemv_bf16 computes it, bit for bit.
void gemv_bf16_two(const bf16_t* x, const bf16_t* W1, bf16_t* y1, int N1, const bf16_t* W2, bf16_t* y2, int N2, int M,
                   int K, cudaStream_t s);
void gemv_int8(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
               int N, int K, cudaStream_t s);
// bf16 weights with fp32 activations (the bf16 decoder's fp32-activation mode): x [M][K] fp32, bias [N] fp32 or null,
// y [M][N] fp32; any M (chunks of 8).
void gemv_bf16_xf32(const float* x, const bf16_t* W, const float* bias, float* y, int M, int N, int K, cudaStream_t s);
void gemv_int4(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
               int N, int K, cudaStream_t s);
void gemv_fp8(const bf16_t* x, const uint8_t* W, const float* scales, const bf16_t* bias, void* y, bool y_f32, int M,
              int N, int K, cudaStream_t s);

// Fused gate_up + SiLU-mul for the FFN: act [M][F] bf16 = silu(x @ Wg^T) * (x @ Wu^T), W [2F][K] = gate rows then
// up rows in one of the formats above; the gate/up products stay fp32 (no bf16 round trip).
void gemv_silu_bf16(const bf16_t* x, const bf16_t* W, bf16_t* act, int M, int F, int K, cudaStream_t s);
// fp32 activations in and out (the fp32-activation mode; SiLU with IEEE expf).
void gemv_silu_bf16_xf32(const float* x, const bf16_t* W, float* act, int M, int F, int K, cudaStream_t s);
void gemv_silu_int8(const bf16_t* x, const uint8_t* W, const float* scales, bf16_t* act, int M, int F, int K,
                    cudaStream_t s);
void gemv_silu_int4(const bf16_t* x, const uint8_t* W, const float* scales, bf16_t* act, int M, int F, int K,
                    cudaStream_t s);
void gemv_silu_fp8(const bf16_t* x, const uint8_t* W, const float* scales, bf16_t* act, int M, int F, int K,
                   cudaStream_t s);

// Quantize W [N][K] bf16 on device into the layouts above (symmetric, round half away from zero):
// int8: scale = amax(row)/127; int4: scale = amax(group)/7, q clamped to [-8, 7]. An all-zero row/group gets scale 0.
// int4 layout helpers (host and tests): storage bytes, and where weight (n, k) lives: the little-endian 32-bit word
// at byte offset *word_byte, nibble at bits [*shift, *shift + 4). In the 16-byte chunk of k / 32, word j = (k%32)/8
// holds k%8 = b (b = 0..3) in the low nibble of byte b and k%8 = 4 + b in its high nibble.
inline int64_t int4_weight_bytes(int N, int K) { return int64_t{N} * K / 2; }
inline void int4_position(int K, int n, int k, int64_t* word_byte, int* shift) {
  const int kc = k % 32;
  *word_byte = int64_t{n} * (K / 2) + (k / 32) * 16 + (kc / 8) * 4;
  *shift = 8 * (kc % 4) + 4 * ((kc % 8) / 4);
}
void quantize_int8(const bf16_t* W, uint8_t* q, float* scales, int N, int K, cudaStream_t s);
void quantize_int4(const bf16_t* W, uint8_t* q, float* scales, int N, int K, cudaStream_t s);
// fp8: per row, scale = amax(row)/448 (all-zero row: scale 0, bytes 0), q = e4m3(w / scale) rounded to nearest even
// with saturation to +-448 (the hardware cvt.rn.satfinite). K a multiple of 8.
void quantize_fp8(const bf16_t* W, uint8_t* q, float* scales, int N, int K, cudaStream_t s);
// The same per-row quantisation for activations (the fp8 GEMM's per-token scales): x [M][K] bf16 -> xq [M][K] e4m3,
// xscale [M] fp32.
void quantize_rows_fp8(const bf16_t* x, uint8_t* xq, float* xscale, int M, int K, cudaStream_t s);

// ---- exact.cu: the fp32 path (CudaWeightFormat::kF32) ----
// Weights, activations and the KV cache all fp32; plain SIMT kernels whose results differ from the CPU exact mode
// (fp32 math, src/model) only by fp32 summation order. Correctness first: this path is the GPU twin of the CPU
// exact engine, not a fast path. Shapes and conventions as in the bf16 launchers above.
// out [T][dim] = table [vocab][dim] fp32 rows tokens[t] (ids outside [0, vocab): zero row).
void embedding_f32(const float* table, const int32_t* tokens, float* out, int T, int dim, int vocab, cudaStream_t s,
                   int first = 0);
// residual [T][dim] += delta (skipped if null); out [T][dim] = residual * rsqrt(mean(residual^2) + eps) * weight.
void add_rmsnorm_f32(float* residual, const float* delta, const float* weight, float* out, int T, int dim, float eps,
                     cudaStream_t s);
// y [M][N] = x [M][K] @ W [N][K]^T (+ bias [N], null: none); any M.
void gemv_f32(const float* x, const float* W, const float* bias, float* y, int M, int N, int K, cudaStream_t s);
// gate_up [T][2*ffn] (gate | up) -> out [T][ffn] = silu(gate) * up.
void silu_mul_f32(const float* gate_up, float* out, int T, int ffn, cudaStream_t s);
// dst [rows][cols] = src[index[r]][:].
void gather_rows_f32(const float* src, const int32_t* index, float* dst, int rows, int cols, cudaStream_t s);
// rope_kv_write on fp32 rows and fp32 pools ([n_blocks][block_size][n_kv_heads][head_dim]); slot -1: no KV write.
// Scaled RoPE: inv_freq [head_dim / 2] and mscale in double (cpu::rope_freq_table as it is: the CPU twin's angles).
void rope_kv_write_f32(float* qkv, int T, int row_stride, int n_heads, int n_kv_heads, int head_dim,
                       const int32_t* positions, float theta, RopeLayout layout, const int32_t* slots, float* k_pool,
                       float* v_pool, cudaStream_t s, const double* inv_freq = nullptr, double mscale = 1.0);
// Paged attention over fp32 pools (p.k_pool / p.v_pool are ignored; p's other fields as above). seq >= 0: the n_q
// queries are the last n_q tokens of sequence seq (causal, bottom-right aligned: query i sees the first
// seq_lens[seq] - n_q + i + 1 tokens). seq < 0: decode, query b (b < n_q) is the one new token of sequence b and
// sees all seq_lens[b] tokens. q row i at q + i*q_stride ([n_heads][head_dim]); out [n_q][n_heads*head_dim].
// head_dim <= 256. Prefill at head_dim 64 / 128 runs a query-tiled kernel (keys staged once per 16 queries).
void paged_attention_f32(const PagedAttention& p, const float* k_pool, const float* v_pool, int seq, const float* q,
                         int q_stride, int n_q, float* out, cudaStream_t s);
// Decode (as seq < 0 above) split over the context: partitions of >= 32 keys, at most kF32DecodeMaxSplits, covering
// ctx_bound >= max seq_lens; the partials (fp32 max, sum, unnormalised output) merge in split order. workspace:
// f32_decode_workspace_floats(B, n_heads, head_dim) floats.
constexpr int kF32DecodeMaxSplits = 32;
int64_t f32_decode_workspace_floats(int B, int n_heads, int head_dim);
void paged_attention_f32_decode(const PagedAttention& p, const float* k_pool, const float* v_pool, const float* q,
                                int q_stride, int B, int ctx_bound, float* out, float* workspace, cudaStream_t s);

// ---- gemma.cu: the ops Gemma-3 adds, bf16 (the bf16 path) and fp32 (the exact path) ----
// In place: x[i] *= s, i < n (fp32: one IEEE multiply; bf16: in fp32, rounded back).
void scale_f32(float* x, int64_t n, float s, cudaStream_t st);
void scale_bf16(bf16_t* x, int64_t n, float s, cudaStream_t st);
// q/k norms, in place on the fused QKV rows [T][row_stride] (q heads, then k heads, head_dim values each): every q
// head = rmsnorm(head) * q_w [head_dim], every k head likewise with k_w; the v heads are not touched. fp32 math
// (sum of squares, 1 / sqrtf(mean + eps)); bf16 rows rounded back once.
void head_rmsnorm(bf16_t* x, int T, int row_stride, int n_heads, int n_kv_heads, int head_dim, const bf16_t* q_w,
                  const bf16_t* k_w, float eps, cudaStream_t s);
void head_rmsnorm_f32(float* x, int T, int row_stride, int n_heads, int n_kv_heads, int head_dim, const float* q_w,
                      const float* k_w, float eps, cudaStream_t s);
// GeGLU: gate_up [T][2*ffn] (gate | up) -> out [T][ffn] = gelu_tanh(gate) * up, computed in double (as
// cpu::gelu_tanh_mul) and rounded once to the storage type.
void gelu_mul(const bf16_t* gate_up, bf16_t* out, int T, int ffn, cudaStream_t s);
void gelu_mul_f32(const float* gate_up, float* out, int T, int ffn, cudaStream_t s);
// In place on fp32 rows x [T][dim]: x = rmsnorm(x) * w [dim] (bf16 bits or fp32), as add_rmsnorm_f32 without the add.
void rmsnorm_f32(float* x, int T, int dim, const bf16_t* w, float eps, cudaStream_t s);
void rmsnorm_f32(float* x, int T, int dim, const float* w, float eps, cudaStream_t s);

// ---- gemm.cu (cuBLAS) ----
// y [M][N] = x [M][K] @ W[N][K]^T, bf16 in, fp32 accumulate, y bf16 or fp32 (rows ldy apart; 0: N). handle: a
// cublasHandle_t (void* here to keep cuBLAS out of this header) already bound to the stream the caller wants.
void gemm_bf16(void* cublas_handle, const bf16_t* x, const bf16_t* W, void* y, bool y_f32, int M, int N, int K,
               int ldy = 0);
void* create_cublas_handle(cudaStream_t s, void* workspace, size_t workspace_bytes);
// fp32 throughout (cublasSgemm): y [M][N] = x [M][K] @ W [N][K]^T. TF32 stays off (the handle's CUBLAS_DEFAULT_MATH
// never rounds fp32 operands to TF32), so results differ from an fp32 CPU GEMM by summation order only. The encoder
// runner's projections (runtime/cuda_embedding_runner.cu).
void gemm_f32(void* cublas_handle, const float* x, const float* W, float* y, int M, int N, int K);
// Batched: for b < batch, y_b [M][N] = x_b [M][K] @ W_b [N][K]^T, bf16 in and out, fp32 accumulate; row m of x_b
// at x + b*stride_x + m*ldx, W_b at W + b*stride_w (rows of K), row m of y_b at y + b*stride_y + m*ldy (elements).
// MLA's per-head absorptions (W_UK into the query, W_UV after attention).
void gemm_bf16_batched(void* cublas_handle, const bf16_t* x, int64_t ldx, int64_t stride_x, const bf16_t* W,
                       int64_t stride_w, bf16_t* y, int64_t ldy, int64_t stride_y, int M, int N, int K, int batch);
// cuBLASLt variant: y [M][N] = x @ W^T (+ bias [N] bf16 in the epilogue; null: none). ctx from create_gemm_lt, bound
// to one stream. With autotune, the first uncaptured call of each (M bucket, N, K, bias, y_f32), M rounded up to a
// power of two, times the heuristic candidates on the caller's buffers (writes y several times) and keeps the
// fastest; other M of the bucket reuse that algorithm where cuBLASLt accepts it for their shape (serving sees every
// prefill size: ~log2(max M) timings per matrix, not one per M). A call during stream capture uses the heuristic's
// first choice until then. Shapes cuBLASLt has no algorithm for (an N whose rows are not 16-byte aligned) run through
// cublasGemmEx and a bias kernel on the same stream. Not thread-safe: one context per stream.
void* create_gemm_lt(cudaStream_t s, void* workspace, size_t workspace_bytes, bool autotune = true);
void destroy_gemm_lt(void* ctx);
void gemm_bf16_lt(void* ctx, const bf16_t* x, const bf16_t* W, const bf16_t* bias, void* y, bool y_f32, int M, int N,
                  int K);
// fp8 (e4m3) GEMM on the same context: y [M][N] = (xq [M][K] @ Wq [N][K]^T) * xscale[m] * wscale[n] (+ bias [N] bf16),
// fp32 accumulation, y bf16 or fp32; xq/xscale from quantize_rows_fp8, Wq/wscale from quantize_fp8. The scales are
// cuBLASLt's outer-vector scale modes (sm_90); the bias goes in its epilogue, or in a separate kernel where cuBLASLt
// refuses that epilogue with these scales. K a multiple of 16, every pointer 16-byte aligned. Returns false (nothing
// run) where cuBLASLt has no fp8 algorithm for the shape: the caller computes it another way (e.g. gemv_fp8).
bool gemm_fp8_lt(void* ctx, const uint8_t* xq, const float* xscale, const uint8_t* W, const float* wscale,
                 const bf16_t* bias, void* y, bool y_f32, int M, int N, int K);
// fp32 activations on the same context (the decoder's fp32-activation path for M > 8): y [M][N] fp32 = x [M][K] fp32
// @ W^T (+ bias [N] fp32). x splits into three bf16 planes (hi + mid + lo = x to ~2^-27 relative), stacked along M in
// one cuBLASLt GEMM (the weights are read once, fp32 accumulation), and the planes' products are summed per element.
// silu (W = [gate | up], N = 2F, no bias): y [M][F] = silu(gate) * up. Runs in chunks of rows that fit the scratch.
struct Bf16x3Scratch {
  bf16_t* x3 = nullptr;   // 3 * rows * K elements
  int64_t x3_elems = 0;
  float* y3 = nullptr;    // 3 * rows * N elements
  int64_t y3_elems = 0;
};
void gemm_xf32_lt(void* ctx, const float* x, const bf16_t* W, const float* bias, float* y, bool silu, int M, int N,
                  int K, const Bf16x3Scratch& scratch);
// How gemm_fp8_lt ran (or will run) this shape: "bias epilogue", "bias kernel", "no bias", "unsupported", or "not
// planned" before its first call. Tests and benchmarks.
const char* gemm_fp8_lt_path(void* ctx, int M, int N, int K, bool bias, bool y_f32);
void destroy_cublas_handle(void* handle);

}  // namespace citadel::cuda
