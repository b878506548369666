// Host launchers of the BERT-family encoder kernels (src/kernels/cuda/encoder.cu): the fp32 GPU twins of the CPU
// encoder ops (kernels/ops.h: layernorm, gelu_erf, add_bias, encoder_attention) and of BertEncoder's embedding sum
// and mean pooling (model/arch/bert.cc). The projections are gemm_f32 (cuda_ops.h).
//
// Conventions as cuda_ops.h: every pointer is device memory, row-major, fp32; launchers are asynchronous on `s`,
// stateless, and CHECK the launch (a launch error is a caller bug: shapes and token ids are validated above).
// IEEE arithmetic (expf, erff, sqrtf, true division) and fixed reduction orders: every launch is deterministic, and a
// token's row never depends on the other tokens of the batch (its sequence's tokens aside, for attention and pooling),
// so an input alone and inside a batch give the same bits. Include only from CUDA-side code and GPU tests.
//
// Packed sequences (as cpu::encoder_attention): sequence s is tokens [seq_start[s], seq_start[s + 1]), seq_start
// [n_seqs + 1] increasing from 0; no padding anywhere.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace citadel::cuda {

// x [T][dim] = LayerNorm(word[tokens[t]] + pos[positions[t]] + type_row) * norm_w + norm_b: the embedding sum of
// token type 0 (type_row [dim]) and its LayerNorm (mean and biased variance over the row, eps inside the sqrt).
// word [vocab][dim], pos [n_positions][dim]; tokens and positions [T] must index them (callers check).
void encoder_embed(const float* word, const float* pos, const float* type_row, const int32_t* tokens,
                   const int32_t* positions, const float* norm_w, const float* norm_b, float* x, int T, int dim,
                   float eps, cudaStream_t s);

// The post-norm residual: x [T][dim] = LayerNorm(x + delta [T][dim] + bias [dim]) * norm_w + norm_b (bias may be null).
void encoder_add_layernorm(float* x, const float* delta, const float* bias, const float* norm_w, const float* norm_b,
                           int T, int dim, float eps, cudaStream_t s);

// y [M][N] = act(y + bias [N]), act the identity or GELU in its erf form x / 2 * (1 + erf(x / sqrt(2))) (HF BERT).
void encoder_bias_act(float* y, const float* bias, int M, int N, bool gelu, cudaStream_t s);

// Bidirectional multi-head attention within each sequence: out [T][n_heads * head_dim] (row t: head h at columns
// h * head_dim) = softmax(scale * q k^T) v over the tokens of t's own sequence. q, k, v: row t at x + t * stride (they
// may be planes of one fused qkv buffer), head h at columns h * head_dim. head_dim <= kEncoderMaxHeadDim.
// tiles [n_tiles][2]: (sequence, first query of the tile within it), from encoder_attention_tiles; one block per
// (tile, head) runs the tile's queries (up to kEncoderQueryTile) over the sequence's keys with an online softmax.
constexpr int kEncoderQueryTile = 16;
constexpr int kEncoderMaxHeadDim = 128;
void encoder_attention(const float* q, const float* k, const float* v, int stride, const int32_t* seq_start,
                       const int32_t* tiles, int n_tiles, int n_heads, int head_dim, float scale, float* out,
                       cudaStream_t s);
// The tile list of encoder_attention for seq_start [n_seqs + 1] (host memory): appends (s, q0) for q0 = 0,
// kEncoderQueryTile, ... below each sequence's length. At most T tiles.
inline void encoder_attention_tiles(const int32_t* seq_start, int n_seqs, std::vector<int32_t>* tiles) {
  for (int s = 0; s < n_seqs; ++s)
    for (int32_t q0 = 0; q0 < seq_start[s + 1] - seq_start[s]; q0 += kEncoderQueryTile) {
      tiles->push_back(s);
      tiles->push_back(q0);
    }
}

// out [n_seqs][dim] = the mean of x's rows over each sequence (double accumulation, as BertEncoder::embed), then
// when normalize: / max(L2 norm, 1e-12).
void encoder_mean_pool(const float* x, const int32_t* seq_start, int n_seqs, int dim, bool normalize, float* out,
                       cudaStream_t s);

}  // namespace citadel::cuda
