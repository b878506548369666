// The BERT encoder family (sentence-embedding models such as all-MiniLM-L6-v2): weights bound by their HF names and
// the forward pass that turns a batch of token sequences into one embedding per sequence.
//
// Forward (f32 throughout, as HF transformers' fp32 BertModel):
//   x = word_embeddings[id] + position_embeddings[pos] + token_type_embeddings[0];  x = LayerNorm(x)
//   per layer:  a = SelfAttention(x) (bidirectional, multi-head, q/k/v/o with biases, 1/sqrt(head_dim) scale)
//               x = LayerNorm(x + a W_o^T + b_o)                             (post-norm, as BERT)
//               x = LayerNorm(x + GELU_erf(x W_up^T + b_up) W_down^T + b_down)
//   pooled = mean of x over the sequence's tokens (every token of the sequence: there is no padding, see below);
//   normalize: pooled / max(|pooled|_2, 1e-12) when EncoderOptions::normalize.
// That is sentence-transformers' Transformer -> Pooling(mean) -> Normalize pipeline.
//
// Batching: sequences are packed back to back (EncoderBatch::seq_start), so sequences of different lengths share one
// pass without padding; attention never crosses a sequence boundary (cpu::encoder_attention), which is exactly what
// an attention mask over padded rows computes. Positions restart at 0 for every sequence.
//
// This family is not a decoder: find_arch("bert") stays null (no KV cache, no logits, no recipe over BackendOps).
// Thread-safety: BertWeights is immutable after load; embed() may run concurrently with distinct scratch buffers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/tensor_store.h"
#include "kernels/ops.h"
#include "model/config.h"

namespace citadel {

// One encoder layer: matrices [out, in] as f32, packed for cpu::matmul_packed; vectors f32.
struct BertLayer {
  PackedMatrix wqkv;              // [3 dim, dim]: query | key | value rows
  const float* bqkv = nullptr;    // [3 dim]
  PackedMatrix wo;                // [dim, dim]
  const float* bo = nullptr;      // [dim]
  const float *attn_norm_w = nullptr, *attn_norm_b = nullptr;  // [dim] attention.output.LayerNorm
  PackedMatrix up;                // [ffn_dim, dim] intermediate.dense
  const float* b_up = nullptr;    // [ffn_dim]
  PackedMatrix down;              // [dim, ffn_dim] output.dense
  const float* b_down = nullptr;  // [dim]
  const float *ffn_norm_w = nullptr, *ffn_norm_b = nullptr;  // [dim] output.LayerNorm
};

struct BertWeights {
  ModelConfig config;          // arch "bert"; dim, n_layers, n_heads, head_dim, ffn_dim, n_vocab, norm_eps
  int64_t n_positions = 0;     // rows of the position table (the longest sequence the model can read)
  int64_t n_token_types = 0;
  WeightView tok_embd;         // [n_vocab, dim]
  WeightView pos_embd;         // [n_positions, dim]
  WeightView type_embd;        // [n_token_types, dim]
  const float *embd_norm_w = nullptr, *embd_norm_b = nullptr;  // [dim]
  std::vector<BertLayer> layers;

  std::unique_ptr<TensorStore> store;     // the mapping the views point into
  std::vector<std::vector<float>> owned;  // f32 copies (vectors; matrices stored in another dtype)
};

// True when the store holds a BERT encoder (general.architecture "bert").
bool is_bert_model(const TensorStore& store);

// Maps and checks every tensor ("bert." prefixed names of *ForMaskedLM checkpoints accepted too). Errors name the
// file, the tensor and both shapes; a config that is not a BERT encoder gives kUnsupported.
Result<std::unique_ptr<BertWeights>> load_bert_weights(std::unique_ptr<TensorStore> store);

// Random weights in memory (no file behind them), seeded: for tests and benchmarks on machines without model files
// (the GPU machine). shape gives dim, n_layers, n_heads, head_dim, ffn_dim, n_vocab and norm_eps (0: 1e-12); the
// position table has n_positions rows, the token type table 2. Magnitudes keep a forward well conditioned, as a
// trained model's: projections scaled by sqrt(3 / fan_in) (unit-variance outputs for unit-variance inputs, attention
// scores of order 1), LayerNorm weights 1 + U(-0.1, 0.1), biases and embeddings small.
std::unique_ptr<BertWeights> random_bert_weights(const ModelConfig& shape, int64_t n_positions, uint64_t seed);

// Sequences packed back to back: sequence s is tokens [seq_start[s], seq_start[s + 1]).
struct EncoderBatch {
  int n_seqs = 0;
  const int32_t* seq_start = nullptr;  // [n_seqs + 1], 0 first, non-decreasing; each length in [1, n_positions]
  const int32_t* tokens = nullptr;     // [seq_start[n_seqs]]
};

// Activation buffers; grown on demand, reused across calls. One per concurrent embed().
struct EncoderScratch {
  std::vector<float> x, attn, tmp;  // [n_tokens, dim] each
  std::vector<float> qkv;           // [n_tokens, 3 dim]: query | key | value of each token
  std::vector<float> ffn;           // [n_tokens, ffn_dim]
  std::vector<int32_t> pos;                      // [n_tokens]
};

struct EncoderOptions {
  bool normalize = true;  // L2-normalise the pooled embedding
};

class BertEncoder {
 public:
  // w must outlive the encoder.
  explicit BertEncoder(const BertWeights* w, EncoderOptions opts = {}) : w_(w), opts_(opts) {}

  int dim() const { return static_cast<int>(w_->config.dim); }
  int max_positions() const { return static_cast<int>(w_->n_positions); }

  // out [b.n_seqs, dim]: the pooled (and normalised) embedding of each sequence. InvalidArgument for an empty
  // sequence, one longer than max_positions(), or a token id outside the vocabulary.
  Status embed(const EncoderBatch& b, EncoderScratch* s, float* out) const;

  // The last hidden state [n_tokens, dim] of the batch, before pooling (tests).
  Status hidden(const EncoderBatch& b, EncoderScratch* s) const;

 private:
  const BertWeights* w_;
  EncoderOptions opts_;
};

}  // namespace citadel
