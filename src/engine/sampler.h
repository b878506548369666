// Sampler: turns one row of raw logits into the next token, per request (pure CPU).
//
// Processing order (each stage is skipped at its neutral value):
//   1. logit_bias            logits[id] += bias                                       (OpenAI logit_bias)
//   2. repetition_penalty    llama.cpp style, over the distinct tokens of the last repetition_window context tokens
//                            (prompt + generated): logit > 0 ? logit / p : logit * p
//   3. presence / frequency  OpenAI semantics over GENERATED tokens only:
//                            logit -= frequency_penalty * count(id) + presence_penalty * (count(id) > 0)
//   4. temperature == 0      -> greedy: argmax of the processed logits (ties -> lowest id); stages 5-7 skipped
//   5. temperature           logits / T, softmax
//   6. top_k, top_p, min_p   top_k keeps the k most likely; top_p keeps the smallest most-likely set whose mass
//                            >= top_p (always >= 1 token); min_p keeps tokens with p >= min_p * p_max (of the
//                            distribution after top_k/top_p, before renormalisation)
//   7. draw from the renormalised survivors with the request's own PRNG (xoshiro256**; same seed, same output).
// Logprobs are the log-softmax of the RAW model logits (before bias, penalties and temperature), as OpenAI reports
// the model's own probabilities. top_logprobs alternatives are the N most likely tokens by that measure.
//
// Thread-safety: a Sampler is owned by one sequence and used by the engine thread only.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/rng.h"
#include "base/status.h"
#include "backend/model_runner.h"

namespace citadel::engine {

struct SamplingParams {
  float temperature = 1.0f;        // 0 = greedy
  int top_k = 0;                   // 0 = off
  float top_p = 1.0f;              // 1 = off; (0, 1]
  float min_p = 0.0f;              // 0 = off; [0, 1]
  float repetition_penalty = 1.0f; // 1 = off; > 0
  int repetition_window = 64;      // context tokens the repetition penalty looks at; -1 = whole context
  float presence_penalty = 0.0f;   // [-2, 2] in OpenAI
  float frequency_penalty = 0.0f;  // [-2, 2] in OpenAI
  std::vector<std::pair<int32_t, float>> logit_bias;  // token id -> additive bias
  bool has_seed = false;
  uint64_t seed = 0;
  int top_logprobs = -1;           // -1 = no logprobs; 0 = logprob of the sampled token only; N = plus N alternatives
};

// Checks ranges against the vocabulary; one-line messages name the field ("top_p must be in (0, 1], got 1.5").
Status validate_sampling_params(const SamplingParams& p, int n_vocab);

// The sampler's generator: base/rng.h's xoshiro256** (reproducible across platforms, no std:: distributions) with a
// 53-bit uniform double.
class Rng {
 public:
  explicit Rng(uint64_t seed) : x_(seed) {}
  uint64_t next_u64() { return x_.next(); }
  double next_double() { return static_cast<double>(x_.next() >> 11) * 0x1.0p-53; }  // uniform in [0, 1)

 private:
  Xoshiro256 x_;
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;                 // raw-model logprob of `token` (valid when top_logprobs >= 0)
  std::vector<TokenLogprob> top;        // [top_logprobs] most likely first (raw model logprobs)
};

class Sampler {
 public:
  // seed is used when !params.has_seed (the engine passes a fresh random value); with has_seed, params.seed wins.
  Sampler(SamplingParams params, uint64_t fallback_seed);

  // Picks the next token. logits: [n_vocab], not modified. context: prompt + generated tokens so far (for the
  // repetition window). Does NOT record the token: call accept() with what was actually appended.
  SampleResult sample(const float* logits, int n_vocab, const std::vector<int32_t>& context);

  // Records a generated token (presence / frequency counts).
  void accept(int32_t token);

  const SamplingParams& params() const { return params_; }

  // Applies stages 1-3 in place (exposed for tests). logits: [n_vocab].
  void apply_penalties(float* logits, int n_vocab, const std::vector<int32_t>& context) const;
  // Stages 1-3 as per-token edits (model_runner.h LogitEdit; empty when the request sets none), sorted by token:
  // what apply_penalties does, in the form a device sampler takes.
  void logit_edits(int n_vocab, const std::vector<int32_t>& context, std::vector<LogitEdit>* edits) const;

 private:
  int32_t draw(std::vector<float>& work, int n_vocab);
  SamplingParams params_;
  Rng rng_;
  std::unordered_map<int32_t, int> generated_counts_;
  std::vector<float> work_;  // [n_vocab] scratch, reused across steps
};

// log-softmax of logits into out. logits, out: [n]. Stable (max-subtracted), float accumulation in double.
void log_softmax(const float* logits, int n, float* out);

// Index of the largest logit, ties to the lowest index. NaN policy: NaN entries are skipped (never the answer unless
// every entry is NaN, then 0); -inf is an ordinary value (an all -inf row answers 0, a row of -inf and NaN the first
// -inf); -0 and +0 are equal (the first of them wins). x: [n], n >= 0 (0 answers 0).
//   argmax          the fast path: argmax_avx2 when the CPU has AVX2 (probed at start-up; CITADEL_CPU=generic caps
//                   it), else argmax_portable
//   argmax_portable lane-wise, vectorised by the compiler at the build's target width
//   argmax_avx2     AVX2 intrinsics (call only where the CPU has AVX2; a non-x86 build forwards to the portable one)
//   argmax_ref      the one-pass specification; sampler_test compares every version with it on random rows
int32_t argmax(const float* x, int n);
int32_t argmax_portable(const float* x, int n);
int32_t argmax_avx2(const float* x, int n);
int32_t argmax_ref(const float* x, int n);
// The largest value, NaN entries skipped; -inf when n == 0 or every entry is NaN. The same family as argmax (the max
// of -0 and +0 may be either). Used by temperature sampling and log_softmax.
float max_value(const float* x, int n);
float max_value_portable(const float* x, int n);
float max_value_avx2(const float* x, int n);
float max_value_ref(const float* x, int n);

}  // namespace citadel::engine
