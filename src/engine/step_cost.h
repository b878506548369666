// StepCostModel: what an engine step costs, learned from the steps the engine has run, so that the prefill share of
// the next step can be cut to keep it within a time target (EngineConfig::max_step_ms: a bound on the time per
// output token while prompts stream in, the chunked-prefill budget chosen from measured costs, not a fixed guess).
//
// Model: step_ms ~= base + per_decode * decode_tokens + per_prefill * prefill_tokens, fitted by exponentially
// weighted least squares (each new step weighs 1, older ones decay by `decay` per step) with a small ridge term
// that pulls each coefficient toward 0, so that it stays defined before the steps have varied enough (e.g. only
// decode steps seen so far: the prefill cost stays 0, which means no cut). Until min_steps steps are seen, no cut is made.
//
// Thread-safety: none (engine thread only). Pure arithmetic: unit-tested without a runner.
#pragma once

#include <array>

namespace citadel::engine {

struct StepCostFit {
  double base_ms = 0, per_decode_ms = 0, per_prefill_ms = 0;
};

class StepCostModel {
 public:
  explicit StepCostModel(double decay = 0.97, int min_steps = 8);

  // One step that ran decode_tokens one-token rows and prefill_tokens prompt-chunk tokens in ms milliseconds.
  void observe(int decode_tokens, int prefill_tokens, double ms);
  bool ready() const { return steps_ >= min_steps_; }
  StepCostFit fit() const;

  // The most prefill tokens a step with decode_tokens decode rows may take to stay within target_ms: at least
  // min_prefill (prompts always progress) and at most max_prefill; max_prefill while !ready() or target_ms <= 0.
  int prefill_budget(int decode_tokens, double target_ms, int min_prefill, int max_prefill) const;

 private:
  double decay_;
  int min_steps_;
  int steps_ = 0;
  std::array<double, 9> xx_{};  // weighted sums of x x^T over x = (1, decode, prefill), row-major 3x3
  std::array<double, 3> xy_{};  // weighted sums of x * ms
};

}  // namespace citadel::engine
