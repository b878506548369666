// EmbeddingRunner: the backend contract of an embedding model (an encoder such as BERT): token sequences in, one
// vector per sequence out. Shared by the embedding engine (engine/embed_engine.h) and the runtime that implements it
// (runtime/embedding_runner.h) without either depending on the other. Header only.
// Thread-safety: one caller at a time (the embedding engine's worker thread); the weights may be shared.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"

namespace citadel::engine {

class EmbeddingRunner {
 public:
  virtual ~EmbeddingRunner() = default;
  // Width of one embedding.
  virtual int dim() const = 0;
  // The most tokens one input may have, special tokens included (longer inputs must be truncated by the caller).
  virtual int max_tokens() const = 0;
  // out [inputs.size(), dim()]: each input's embedding (pooled and, per the model, L2-normalised). Inputs of any
  // lengths in [1, max_tokens()] are batched together (the runner splits large batches itself). InvalidArgument
  // for an empty or too long input or a token id outside the vocabulary; the output is then unspecified.
  virtual Status embed(const std::vector<std::vector<int32_t>>& inputs, float* out) = 0;
};

}  // namespace citadel::engine
