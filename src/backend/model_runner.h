// ModelRunner: the only interface between the engine (scheduling, KV block allocation, sampling) and a model
// forward pass (CPU or CUDA). The engine decides WHICH tokens run and WHERE their K/V live; the runner owns the K/V
// memory and does the math. This header is the backend module (src/backend, header only) so that the runners
// (src/runtime) implement it without depending on the engine; its names stay in citadel::engine, the engine's
// vocabulary.
//
// KV layout contract. The runner owns per layer the pools the architecture's KV description asks for (model/arch.h
// KvLayout; llama: K and V, [n_blocks, block_size, n_kv_heads, head_dim] each; any physical layout is fine as long
// as it is addressed by slot). A "slot" is block_id * block_size +
// offset, 0 <= slot < n_blocks * block_size. The engine owns allocation: which block ids belong to which sequence
// (block tables), sharing of blocks between sequences (prefix caching) and copy-on-write. The runner never frees,
// allocates or reorders blocks on its own.
//
// Lifecycle: kv_bytes_per_token() -> engine computes n_blocks from its memory budget -> allocate_kv(n_blocks,
// block_size) once -> any number of forward()/copy_blocks() calls, all from the single engine thread.
//
// Thread-safety: a runner is driven by one engine thread; no method is called concurrently with another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "base/status.h"

namespace citadel::engine {

// One engine step: n_tokens tokens from n_seqs sequences. Invariants the engine guarantees:
//  - The tokens of one sequence are contiguous in the batch and in increasing position order; sequence s owns tokens
//    [query_start[s], query_start[s+1]).
//  - positions of sequence s are consecutive: seq_lens[s] - n_new(s) .. seq_lens[s] - 1, where n_new(s) =
//    query_start[s+1] - query_start[s]. Positions below that are already in the KV pool (computed by earlier steps or
//    shared through the prefix cache) and must be READ, never recomputed.
//  - slots[i] == block_tables[s * max_blocks + positions[i] / block_size] * block_size + positions[i] % block_size.
//  - A block written by this batch is never shared with another sequence (the engine did copy-on-write before).
// What the runner must do, for every token i (sequence s): compute q/k/v, WRITE k/v at slots[i] (before any attention
// of this batch reads it: a token attends to the other new tokens of its own sequence), then attend causally to the
// keys at positions 0..positions[i] of sequence s, read through block_tables (with a cached prefix the causal mask is
// bottom-right aligned). Only rows listed in logit_rows need the final norm + LM head.
struct Batch {
  std::vector<int32_t> tokens;        // [n_tokens] token ids
  std::vector<int32_t> positions;     // [n_tokens] position of each token in its sequence
  std::vector<int32_t> seq_of_token;  // [n_tokens] index into the sequences of this batch (0..n_seqs-1)
  std::vector<int32_t> slots;         // [n_tokens] KV slot to write: block_id * block_size + offset
  std::vector<int32_t> query_start;   // [n_seqs + 1] first batch token of each sequence; back() == n_tokens
  std::vector<int32_t> seq_lens;      // [n_seqs] context length of each sequence after this step (keys to attend)
  std::vector<int32_t> block_tables;  // [n_seqs, max_blocks] block ids, row-major, -1 padded
  int max_blocks = 0;                 // columns of block_tables (>= ceil(max(seq_lens) / block_size))
  int block_size = 0;                 // tokens per KV block (as given to allocate_kv)
  std::vector<int32_t> logit_rows;    // [n_logits] batch token indices whose logits are wanted, increasing order

  int n_tokens() const { return static_cast<int>(tokens.size()); }
  int n_seqs() const { return static_cast<int>(seq_lens.size()); }
  bool is_decode_only() const { return tokens.size() == seq_lens.size(); }  // one new token per sequence
};

// One token's change to a logit row before sampling: the engine Sampler's stages 1-3 for that token, in order:
//   x += bias;  if (repeat) x = x > 0 ? x / repetition_penalty : x * repetition_penalty;  x -= subtract
// (bias: the request's logit_bias for the token; repeat: the token is in the repetition window; subtract:
// frequency_penalty * count + presence_penalty over the generated tokens). A row lists each token at most once.
struct LogitEdit {
  int32_t token = 0;
  float bias = 0.f;
  float subtract = 0.f;
  bool repeat = false;
};

// How a runner that samples on its device draws the next token of one logit row: the edits above, then the engine
// Sampler's stages 4-7 (temperature <= 0 or top_k == 1: greedy, ties to the lowest id; else softmax at the
// temperature restricted by top_k, top_p and min_p) with the runner's own generator, a function of (seed, counter).
struct RowSampling {
  float temperature = 0.f;
  int top_k = 0;       // 0: off
  float top_p = 1.f;   // 1: off
  float min_p = 0.f;   // 0: off
  uint64_t seed = 0;
  uint32_t counter = 0;  // index of the token being generated
  float repetition_penalty = 1.f;
  std::vector<LogitEdit> edits;  // sorted by token
  int top_logprobs = -1;         // 0..20: the runner returns the row's RowLogprobs
};

// A device-sampled row's logprobs (RowSampling::top_logprobs >= 0): the log-softmax of its raw logits (before the
// edits) at the chosen token and at the top_logprobs most likely tokens (most likely first, ties to the lower id).
struct RowLogprobs {
  float logprob = 0.f;
  std::vector<std::pair<int32_t, float>> top;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // Vocabulary size: the width of one logits row.
  virtual int n_vocab() const = 0;

  // Longest context the model supports (positions 0..max_context-1); requests beyond it are rejected at submit.
  virtual int max_context() const = 0;

  // Bytes of KV cache for one token over all layers (n_layers * KvLayout::values_per_token() * sizeof(kv dtype);
  // llama: 2 * n_layers * n_kv_heads * head_dim * sizeof(kv dtype)).
  // The engine divides its KV memory budget by (kv_bytes_per_token() * block_size) to get n_blocks.
  virtual size_t kv_bytes_per_token() const = 0;

  // Allocates the KV pools: n_blocks blocks of block_size tokens per layer. Called once before any forward().
  // Returns kResourceExhausted when the memory is not there (the engine then fails start-up with that message).
  virtual Status allocate_kv(int n_blocks, int block_size) = 0;
  // allocate_kv with as many blocks as the device holds once the weights and activations are in place, keeping
  // (1 - fraction) of its total memory free (a GPU's utilisation share); returns the block count. Runners whose
  // memory has no such bound (the CPU) answer kUnsupported: the engine then needs an explicit budget.
  virtual Result<int> allocate_kv_from_memory(int /*block_size*/, double /*fraction*/) {
    return Unsupported("this runner sizes its KV pool from an explicit budget only (kv_memory_mb)");
  }

  // Copies whole blocks (all layers, K and V, all block_size slots): for each pair, block `first` -> block `second`.
  // Used for copy-on-write before a shared block is written. Sources and destinations are disjoint sets. Called
  // before the forward() of the step that writes the destinations.
  virtual Status copy_blocks(const std::vector<std::pair<int, int>>& src_dst) = 0;

  // Runs one step. logits: [batch.logit_rows.size(), n_vocab()] float32, row r for token batch.logit_rows[r]; raw
  // model logits (no temperature, no softcap beyond what the architecture itself does). A non-ok Status (of
  // forward, forward_sampled or copy_blocks) means the runner cannot be trusted any more (a device fault): the engine
  // fails every request with it and stops (engine.h); a runner whose device hit a sticky error keeps returning it.
  virtual Status forward(const Batch& batch, float* logits) = 0;

  // Optional: forward() that also picks each logit row's next token where the logits are (rows[r] for row r) and
  // returns only the ids [logit_rows.size()] and, for rows that ask, their RowLogprobs in logprobs[r] (logprobs may be
  // null when no row asks), so no logits cross to the host. The engine calls it only when samples_on_device(), for
  // steps whose rows carry at most max_logit_edits() edits in all (logit_bias and penalties; beyond that the step
  // samples on the host).
  virtual bool samples_on_device() const { return false; }
  virtual int max_logit_edits() const { return 0; }
  virtual Status forward_sampled(const Batch& /*batch*/, const std::vector<RowSampling>& /*rows*/, int32_t* /*ids*/,
                                 RowLogprobs* /*logprobs*/) {
    return Unsupported("this model runner samples on the host");
  }

  // Optional: pipelined device sampling, so that the host prepares step N+1 while the device runs step N.
  // launch_sampled() takes a step as forward_sampled() does and returns once it is queued on the device; its ids (and
  // logprobs, when rows ask) come from collect_sampled(), in launch order, which waits for that step. At most two
  // launched steps are uncollected at any time. A token of a launched batch may be pending_token(r): the id that the
  // previous launch_sampled() step drew for its logit row r, which the device reads where it is (the host has not
  // seen it yet). copy_blocks() may be called with launched steps outstanding and is ordered after them; forward() and
  // forward_sampled() are called only when none is outstanding, and their batches hold no pending tokens.
  static constexpr int32_t pending_token(int row) { return -1 - row; }
  virtual bool pipelines_steps() const { return false; }
  virtual Status launch_sampled(const Batch& /*batch*/, const std::vector<RowSampling>& /*rows*/) {
    return Unsupported("this model runner does not pipeline steps");
  }
  // ids: [rows of the collected step]; logprobs: as forward_sampled (null when no row of that step asked).
  virtual Status collect_sampled(int32_t* /*ids*/, RowLogprobs* /*logprobs*/) {
    return Unsupported("this model runner does not pipeline steps");
  }

  // Asked by the engine after a step failed: a non-ok answer says the device can no longer run this model (a lost
  // GPU, a sticky CUDA error), as opposed to a failure of that one batch. The engine then marks itself failed (see
  // Engine::failure()). Default: the device is fine (a CPU runner's errors are per batch).
  virtual Status device_status() { return OkStatus(); }
};

}  // namespace citadel::engine
