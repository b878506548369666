// A Batch of one sequence that owns KV blocks 0, 1, 2, ... (identity block table): tokens at positions start..,
// logits wanted for every token. For tools and tests that drive a ModelRunner directly, without the engine.
// Thread-safety: a pure function.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/model_runner.h"

namespace citadel::engine {

// toks: the new tokens; start: the position of the first (earlier positions already in the KV pool); max_blocks:
// the block table's width (>= ceil((start + toks.size()) / block_size)).
inline Batch solo_batch(const std::vector<int32_t>& toks, int start, int block_size, int max_blocks) {
  Batch b;
  const int n = static_cast<int>(toks.size());
  b.tokens = toks;
  b.block_size = block_size, b.max_blocks = max_blocks;
  for (int i = 0; i < n; ++i) {
    b.positions.push_back(start + i), b.seq_of_token.push_back(0), b.slots.push_back(start + i);
    b.logit_rows.push_back(i);
  }
  b.query_start = {0, n};
  b.seq_lens = {start + n};
  for (int i = 0; i < max_blocks; ++i) b.block_tables.push_back(i);
  return b;
}

}  // namespace citadel::engine
