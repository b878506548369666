// Backend-neutral op vocabulary: the parameter structs every backend shares, and the CPU entry points.
// A CUDA backend declares the same ops over the same structs (pointers then name device memory).
//
// Conventions: row-major buffers, f32 activations; every pointer's shape is given as [dim0, dim1, ...] with the
// last index fastest. Each CPU op has a plain scalar `*_ref` (the specification, single-threaded) and a fast
// version (SIMD chosen at run time by base/cpu_features, threaded on ThreadPool::current()). Fast ops agree with the
// reference within the NMSE bound stated in tests/kernels/ (exact-math ops ~1e-10; 32-block quantized matmul ~1e-8
// with 16-bit activation codes; K-quant matmul ~1e-3 because its activations are quantized to 8 bits).
// Thread-safety: ops are reentrant; concurrent calls are safe when their outputs do not overlap (the thread pool
// serialises concurrent fast calls). Ops never allocate per element; matmul keeps a per-thread scratch buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/status.h"
#include "kernels/quant/types.h"

namespace citadel {

// A weight matrix W [rows, cols] in GGUF layout: each row is cols elements of dtype (cols / block blocks).
struct WeightView {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;  // n_out
  int64_t cols = 0;  // n_in
  // Optional: the same matrix in the 16-row interleaved layout (cpu::interleave_weights), or nullptr. Where
  // cpu::interleave_wanted (AVX-512 VNNI; AVX2 for q4_0 / q4_K / q6_K) matmul reads it instead of data: decode and
  // prompts alike, so data's pages go unread after load. Views made from this one with other rows (slices) must leave
  // it null.
  const void* interleaved = nullptr;
  size_t row_bytes() const { return dtype_row_bytes(dtype, cols); }
  // Rows [first, first + n) as a view of their own (no interleaved copy).
  WeightView rows_view(int64_t first, int64_t n) const {
    return WeightView{dtype, static_cast<const uint8_t*>(data) + first * row_bytes(), n, cols};
  }
};

enum class RopeType { kNorm, kNeox };  // NORM: pairs (2i, 2i+1); NEOX: pairs (i, i + rope_dim/2)

// RoPE as in the GGUF metadata (REFERENCES.md §6). theta_i = pos * freq_base^(-2i/rope_dim) / freq_factors[i];
// linear scaling multiplies theta by freq_scale (= 1/factor); YaRN (ext_factor > 0) blends interpolated and
// extrapolated theta over the dims between the beta_fast/beta_slow correction dims and scales cos/sin by
// attn_factor * (1 + 0.1 ln(1/freq_scale)).
struct RopeParams {
  RopeType type = RopeType::kNorm;
  int rope_dim = 0;            // rotated dims (<= head_dim, even); the rest pass through
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;     // 1 / linear (or YaRN) factor
  float ext_factor = 0.0f;     // YaRN: 0 off, 1 on
  float attn_factor = 1.0f;
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  int n_ctx_orig = 0;          // YaRN original context length
  const float* freq_factors = nullptr;  // [rope_dim / 2] or null (Llama-3.1 rope_freqs.weight)
};

// Paged KV cache of one layer: K and V pools [n_blocks, block_size, n_kv_heads, head_dim] of dtype f32 or f16.
// Pools [n_blocks, block_size, n_kv_heads, head_dim]. Multi-head latent attention stores one row per token that is
// both key and value: v == k and v_dim < head_dim (the value is the first v_dim values of the key row).
struct KvCacheView {
  DType dtype = DType::kF32;
  void* k = nullptr;
  void* v = nullptr;
  int n_blocks = 0;
  int block_size = 16;
  int n_kv_heads = 0;
  int head_dim = 0;
  int v_dim = 0;  // value width; 0: head_dim (must be head_dim unless v == k)
  int value_dim() const { return v_dim > 0 ? v_dim : head_dim; }
};

// The sequences of one batch as attention sees them. Token t belongs to sequence seq_of_token[t] and sits at
// position pos_of_token[t]; it attends to positions 0..pos_of_token[t] of its sequence, whose key p is row
// p % block_size of block block_tables[seq * max_blocks_per_seq + p / block_size].
struct AttnBatch {
  int n_tokens = 0;
  const int32_t* block_tables = nullptr;  // [n_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int n_seqs = 0;
  const int32_t* seq_of_token = nullptr;  // [n_tokens]
  const int32_t* pos_of_token = nullptr;  // [n_tokens]
  int window = 0;  // > 0: sliding-window attention: the token at position p sees keys p - window + 1 .. p only
};

// An f32 weight matrix W [rows, cols] repacked for the f32 GEMM below: panels of kPanelRows consecutive rows, each
// panel k-major: data[(p * cols + k) * kPanelRows + r] = W[p * kPanelRows + r, k] (rows past the end are zero).
inline constexpr int kPanelRows = 16;
// Optionally also in bfloat16 for the AVX512_BF16 GEMM (pack_matrix_bf16): the same panels, k in pairs,
// bf16[((p * ceil(cols / 2) + k / 2) * kPanelRows + r) * 2 + k % 2] = bf16(W[p * kPanelRows + r, k]) (0 past the end).
struct PackedMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> data;     // [ceil(rows / kPanelRows), cols, kPanelRows]
  std::vector<uint16_t> bf16;  // [ceil(rows / kPanelRows), ceil(cols / 2), kPanelRows, 2]; empty: f32 only
};
namespace cpu {

// Y [n_tokens, w.rows] = X [n_tokens, w.cols] * W^T. f32/f16/bf16 weights use f32 math; quantized weights (q8_0,
// q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, q6_K) quantize X to 16-bit codes with an f32 scale per 32 values, then use
// integer dot products. Unsupported for other dtypes; InvalidArgument when cols is not a multiple of the block size.
bool matmul_supported(DType t);
Status matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y);
// Several matmuls of the same input (q/k/v, gate/up) in one parallel region: targets[i].y[n_tokens, rows_i] =
// x[n_tokens, n_in] times targets[i].w^T. 1 to 4 targets, all with n_in columns; same results as separate calls.
struct MatmulTarget {
  WeightView w;
  float* y = nullptr;
};
Status matmul_multi(const MatmulTarget* targets, int n_targets, const float* x, int64_t n_tokens);
// Reference: dequantizes each row with the quant reference and accumulates in double (no activation quantization).
Status matmul_ref(const WeightView& w, const float* x, int64_t n_tokens, float* y);

// The 16-row interleaved decode layout of q4_0 / q8_0 / q4_K / q6_K weights (WeightView::interleaved). Rows are taken
// in groups of kInterleaveRows (the last group padded with zero rows), each interleaved_group_bytes long. A q4_0 /
// q8_0 group holds its nb block columns (16 rows x 32 codes each) in units of two: 64 bytes of scales (16 f16 per
// column, row order; the second half zero in a last, one-column unit), then the columns' codes (q4_0: 256 bytes, q8_0:
// 512), as 64-byte words with one 4-byte lane per row: q4_0 word w holds pairs k = 4w + p (p = 0..3) of codes (2k at
// bits 4p, 2k + 1 at bits 16 + 4p); q8_0 word w holds codes 4w, 4w + 2, 4w + 1, 4w + 3 in bytes 0..3. About the size
// of the rows it came from (1-2% more for q4_0: the scales' padding). A q4_K / q6_K group is one unit per 256
// columns: the 16 rows' d (and dmin), their sub-block scales (and mins) one byte each, the low 4 bits of the codes as
// q4_0's words, and q6_K's top 2 bits in words of their own (matmul_interleaved_kquant.cc); 148 / 212 bytes per row
// and 256 columns against the blocks' 144 / 210.
constexpr int kInterleaveRows = 16;
bool interleave_supported(DType t);
// 0 when t has no layout or cols is not a multiple of its block (32; 256 for q4_K / q6_K).
size_t interleaved_bytes(DType t, int64_t rows, int64_t cols);
size_t interleaved_group_bytes(DType t, int64_t cols);
// out [interleaved_bytes(w)] (64-byte aligned: the kernels' code loads are then aligned) <- w. InvalidArgument when w has no layout.
Status interleave_weights(const WeightView& w, uint8_t* out);
// True when matmul on this CPU reads WeightView::interleaved for dtype t (AVX-512 VNNI: q4_0 / q8_0 / q4_K / q6_K;
// AVX2 without it: q4_0 / q4_K / q6_K; and
// $CITADEL_CPU_INTERLEAVE is not "off"): worth building the copy at load only then.
bool interleave_wanted(DType t);

// y [n_tokens, dim] = x / sqrt(mean(x^2) + eps) * weight [dim]. y may equal x.
void rmsnorm(const float* x, const float* weight, float* y, int64_t n_tokens, int64_t dim, float eps);
void rmsnorm_ref(const float* x, const float* weight, float* y, int64_t n_tokens, int64_t dim, float eps);

// y [n] = a + b. y may equal a or b (residual add in place).
void add(const float* a, const float* b, float* y, int64_t n);
void add_ref(const float* a, const float* b, float* y, int64_t n);

// y [n] = silu(gate) * up, silu(g) = g / (1 + exp(-g)). y may equal gate or up.
void silu_mul(const float* gate, const float* up, float* y, int64_t n);
// y = gelu_tanh(gate) * up, gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GeGLU; double inside).
void gelu_tanh_mul(const float* gate, const float* up, float* y, int64_t n);
void silu_mul_ref(const float* gate, const float* up, float* y, int64_t n);

// In place, each row of x [n_rows, n]: x = exp(x - max) / sum (max-subtracted; -inf entries give 0).
void softmax(float* x, int64_t n_rows, int64_t n);
void softmax_ref(float* x, int64_t n_rows, int64_t n);

// In place: x [n_tokens, n_heads, head_dim], token t rotated by position pos [n_tokens].
void rope(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* pos, const RopeParams& p);
void rope_ref(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* pos, const RopeParams& p);
// The rotation of rope_ref as per-pair frequencies: pair i of a token at position pos turns by
// theta_i = pos * inv_freq[i] (YaRN's blend of interpolated and extrapolated angles is linear in pos), with cos and
// sin scaled by *mscale. inv_freq [rope_dim / 2]. For backends that take a frequency table (CUDA).
void rope_freq_table(const RopeParams& p, double* inv_freq, double* mscale);

// y [n_tokens, table.cols] = rows ids [n_tokens] of table [n_vocab = table.rows, cols], dequantized.
// InvalidArgument naming the token index when an id is outside [0, rows); Unsupported for dtypes without dequant.
Status embedding(const WeightView& table, const int32_t* ids, int64_t n_tokens, float* y);

// Stores k, v [n_tokens, n_kv_heads, head_dim] of each token into its slot: block slot_block[t], row slot_offset[t].
// With v == k in the cache (MLA) only k is written (v may be null). Callers (the engine) own slot validity; CHECKed.
void kv_write(const KvCacheView& cache, const float* k, const float* v, int64_t n_tokens, const int32_t* slot_block,
              const int32_t* slot_offset);

// out [n_tokens, n_heads, value_dim] = softmax(q k^T * scale) v per token and head over its sequence's causal
// prefix, q [n_tokens, n_heads, head_dim]; query head h reads KV head h / (n_heads / n_kv_heads), at most 128 query
// heads per KV head. scale <= 0 means 1/sqrt(head_dim).
void attention(const float* q, const KvCacheView& cache, const AttnBatch& batch, int n_heads, float scale,
               float* out);
void attention_ref(const float* q, const KvCacheView& cache, const AttnBatch& batch, int n_heads, float scale,
                   float* out);

// w: [rows, cols] row-major f32.
PackedMatrix pack_matrix(const float* w, int64_t rows, int64_t cols);
// The inverse: w [m.rows, m.cols] row-major f32 (e.g. for uploading a packed model's weights to a GPU).
void unpack_matrix(const PackedMatrix& m, float* w);
// Adds the bf16 copy (PackedMatrix::bf16, rounded to nearest even) that makes matmul_packed use bf16 math.
void pack_matrix_bf16(PackedMatrix* m);
// What matmul_packed applies to each output, on each panel's block of outputs right after computing it (still in L1).
enum class Epilogue { kNone, kGeluErf };
// y [n_tokens, w.rows] (rows ldy floats apart, ldy >= w.rows; 0: w.rows) = epi(x [n_tokens, w.cols] W^T + bias
// [w.rows]) (bias may be null; epi as gelu_erf). f32 math (register-blocked FMA microkernel, AVX-512 or AVX2, threaded
// over panels); agrees with matmul_ref on the unpacked matrix up to float summation order. When w has a bf16 copy and
// the CPU has AVX512_BF16: x and W rounded to bf16, products summed in f32 (vdpbf16ps), as matmul_packed_bf16_ref;
// without AVX512_BF16 the f32 path. Either way a token's row does not depend on the other tokens of the call.
void matmul_packed(const PackedMatrix& w, const float* x, int64_t n_tokens, const float* bias, float* y,
                   int64_t ldy = 0, Epilogue epi = Epilogue::kNone);
void matmul_packed_ref(const PackedMatrix& w, const float* x, int64_t n_tokens, const float* bias, float* y,
                       int64_t ldy = 0, Epilogue epi = Epilogue::kNone);
// The bf16 math's reference: bf16(x) . bf16(W) summed in double, + bias, then epi. Needs w.bf16.
void matmul_packed_bf16_ref(const PackedMatrix& w, const float* x, int64_t n_tokens, const float* bias, float* y,
                            int64_t ldy = 0, Epilogue epi = Epilogue::kNone);

// Encoder ops (BERT family).
// y [n_tokens, dim] = (x - mean) / sqrt(var + eps) * weight + bias, mean and (biased) var over each row. y may
// equal x.
void layernorm(const float* x, const float* weight, const float* bias, float* y, int64_t n_tokens, int64_t dim,
               float eps);
void layernorm_ref(const float* x, const float* weight, const float* bias, float* y, int64_t n_tokens, int64_t dim,
                   float eps);

// y [n] = gelu(x) with the exact (erf) form: x / 2 * (1 + erf(x / sqrt(2))). y may equal x. The fast version's erf is
// a rational-exponential approximation with |error| < 2e-7 (4 vectors interleaved, the division a refined reciprocal).
void gelu_erf(const float* x, float* y, int64_t n);
void gelu_erf_ref(const float* x, float* y, int64_t n);

// In place, each row of y [n_rows, n] += bias [n].
void add_bias(float* y, const float* bias, int64_t n_rows, int64_t n);
void add_bias_ref(float* y, const float* bias, int64_t n_rows, int64_t n);

// Bidirectional attention over packed sequences: sequence s is tokens [seq_start[s], seq_start[s + 1]) and each of
// its tokens attends to every token of that sequence and of no other (a batch of different lengths needs no padding:
// this is the padding mask). q, k, v: rows of `stride` floats (they may be planes of one buffer), head h at columns
// [h * head_dim, (h + 1) * head_dim). out [n_tokens, n_heads * head_dim], n_tokens = seq_start[n_seqs];
// seq_start [n_seqs + 1] increasing from 0. scale <= 0 means 1/sqrt(head_dim). Threaded over (sequence, head).
void encoder_attention(const float* q, const float* k, const float* v, int64_t stride, const int32_t* seq_start,
                       int n_seqs, int n_heads, int head_dim, float scale, float* out);
void encoder_attention_ref(const float* q, const float* k, const float* v, int64_t stride, const int32_t* seq_start,
                           int n_seqs, int n_heads, int head_dim, float scale, float* out);

}  // namespace cpu
}  // namespace citadel
