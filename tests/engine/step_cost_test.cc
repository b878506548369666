// StepCostModel (engine/step_cost.h): the fit recovers the coefficients of noisy synthetic step times, adapts when
// the costs change, leaves an unobserved coefficient at 0 (no cut), and prefill_budget() honours its bounds. The
// scheduler's prefill_cap limits prompt chunks but never decode rows; the engine cuts prefill under max_step_ms.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "engine/step_cost.h"
#include "test_runner.h"

namespace citadel::engine {
namespace {

TEST(StepCost, FitRecoversNoisyCoefficients) {
  StepCostModel m(0.99, 8);
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> dec(0, 128), pre(0, 1024);
  std::normal_distribution<double> noise(0.0, 0.2);
  for (int i = 0; i < 400; ++i) {
    const int d = dec(rng), p = i % 3 == 0 ? 0 : pre(rng);
    m.observe(d, p, 1.5 + 0.06 * d + 0.025 * p + noise(rng));
  }
  const StepCostFit f = m.fit();
  EXPECT_NEAR(f.base_ms, 1.5, 0.15);
  EXPECT_NEAR(f.per_decode_ms, 0.06, 0.003);
  EXPECT_NEAR(f.per_prefill_ms, 0.025, 0.001);
  // 20 ms with 100 decode rows: (20 - 1.5 - 6) / 0.025 = 500 prompt tokens, give or take the fit.
  const int b = m.prefill_budget(100, 20.0, 64, 2048);
  EXPECT_NEAR(b, 500, 40);
  EXPECT_EQ(m.prefill_budget(100, 5.0, 64, 2048), 64);       // decode alone exceeds the target: the floor
  EXPECT_EQ(m.prefill_budget(100, 1000.0, 64, 2048), 2048);  // room for more than the cap
  EXPECT_EQ(m.prefill_budget(100, 0.0, 64, 2048), 2048);     // no target
}

TEST(StepCost, NoCutBeforeEnoughStepsOrWithoutPrefillCost) {
  StepCostModel m(0.97, 8);
  for (int i = 0; i < 7; ++i) m.observe(10, 500, 50.0);
  EXPECT_FALSE(m.ready());
  EXPECT_EQ(m.prefill_budget(10, 1.0, 64, 2048), 2048);
  StepCostModel decode_only(0.97, 8);
  for (int i = 0; i < 50; ++i) decode_only.observe(16 + i % 8, 0, 4.0 + 0.1 * (i % 8));
  EXPECT_NEAR(decode_only.fit().per_prefill_ms, 0.0, 1e-9);
  EXPECT_EQ(decode_only.prefill_budget(20, 5.0, 64, 2048), 2048);
  m.observe(-1, 5, 1.0);  // ignored: bad input
  m.observe(1, 5, std::numeric_limits<double>::quiet_NaN());
  EXPECT_FALSE(m.ready());
}

TEST(StepCost, AdaptsWhenCostsChange) {
  StepCostModel m(0.9, 8);
  for (int i = 0; i < 100; ++i) m.observe(32, 100 + 37 * (i % 10), 2.0 + 0.01 * (100 + 37 * (i % 10)));
  EXPECT_NEAR(m.fit().per_prefill_ms, 0.01, 1e-3);
  for (int i = 0; i < 100; ++i) m.observe(32, 100 + 37 * (i % 10), 2.0 + 0.04 * (100 + 37 * (i % 10)));
  EXPECT_NEAR(m.fit().per_prefill_ms, 0.04, 2e-3);
}

// Four running sequences at the decode stage and a long prompt waiting: a cap of 10 lets 10 prompt tokens in beside
// the 4 decode rows; a cap of 0 admits nothing but still decodes all four.
TEST(StepCost, SchedulerPrefillCapLimitsPromptChunksOnly) {
  KvCache kv(64, 16, true);
  Scheduler s(SchedulerConfig{512, 16, 0}, &kv);
  for (int i = 0; i < 5; ++i) {
    auto seq = std::make_unique<Sequence>(SamplingParams{}, 1);
    seq->seq_id = static_cast<uint64_t>(i);
    seq->tokens.assign(i < 4 ? 8 : 300, 7 + i);
    s.add(std::move(seq));
  }
  SchedulerOutput first = s.schedule(32);  // the first four prompts (8 tokens each) fill the cap of 32 exactly
  ASSERT_EQ(first.seqs.size(), 4u);
  for (auto& x : first.seqs) {
    x.seq->num_computed += x.n_tokens;
    x.seq->tokens.push_back(1);  // one sampled token: each is now at the decode stage
  }
  EXPECT_EQ(s.n_decode_ready(), 4);
  SchedulerOutput capped = s.schedule(10);
  EXPECT_EQ(capped.n_tokens, 4 + 10);
  ASSERT_EQ(capped.seqs.size(), 5u);
  EXPECT_EQ(capped.seqs.back().n_tokens, 10);
  for (auto& x : capped.seqs) {
    x.seq->num_computed += x.n_tokens;
    if (x.sample) x.seq->tokens.push_back(1);
  }
  SchedulerOutput none = s.schedule(0);
  EXPECT_EQ(none.n_tokens, 4);
}

// A runner whose forward takes 40 us a token: with a 1 ms step target, once the costs are learned the engine cuts
// the prompt chunks to the floor (kMinPrefillTokens) although max_batched_tokens would allow 1024 a step.
class SlowRunner : public testing::TestRunner {
 public:
  Status forward(const Batch& b, float* logits) override {
    std::this_thread::sleep_for(std::chrono::microseconds(40 * b.n_tokens()));
    return TestRunner::forward(b, logits);
  }
};

// Request i: `prompt` copies of token 3 + i, greedy, at most max_tokens; its handle appended to hs.
void submit_greedy(Engine* eng, int i, int prompt, int max_tokens, std::vector<std::shared_ptr<RequestHandle>>* hs) {
  GenerateRequest r;
  r.id = "r" + std::to_string(i), r.max_tokens = max_tokens, r.sampling.temperature = 0;
  r.prompt.assign(prompt, 3 + i);
  auto h = eng->submit(std::move(r));
  ASSERT_TRUE(h.ok()) << h.status().message();
  hs->push_back(*h);
}

TEST(StepCost, EngineCutsPrefillUnderAStepTarget) {
  SlowRunner runner;
  EngineConfig ec;
  ec.block_size = 16, ec.n_blocks = 512, ec.max_batched_tokens = 1024, ec.max_seqs = 8, ec.max_step_ms = 1.0;
  Engine eng(&runner, ec);
  ASSERT_TRUE(eng.init().ok());
  std::vector<std::shared_ptr<RequestHandle>> hs;
  auto submit = [&](int i, int prompt, int max_tokens) { submit_greedy(&eng, i, prompt, max_tokens, &hs); };
  // First wave: two short prompts then 15 decode steps teach the costs (no cut yet: fewer than 8 steps seen).
  submit(0, 40, 16);
  submit(1, 70, 16);
  ASSERT_TRUE(eng.step());
  EXPECT_EQ(eng.stats().last_batch_tokens, 110);
  while (eng.step()) {
  }
  // Second wave: four 900-token prompts would fill 1024-token steps; under the 1 ms target each step takes the floor.
  for (int i = 2; i < 6; ++i) submit(i, 900, 4);
  int steps = 0, most = 0;
  while (eng.step()) {
    most = std::max(most, eng.stats().last_batch_tokens);
    EXPECT_EQ(eng.stats().last_prefill_budget, kMinPrefillTokens);
    ASSERT_LT(++steps, 2000);
  }
  for (auto& h : hs) EXPECT_TRUE(h->final_status().ok());
  EXPECT_GE(steps, 4 * 900 / kMinPrefillTokens);
  EXPECT_LE(most, kMinPrefillTokens + 4);  // the floor plus at most one decode row per sequence
}

// EngineConfig::max_prefill_tokens: no step takes more prompt tokens than the cap while decode rows keep running
// beside the chunks (they are not counted against it), every request completes, and the stats report the cap; 0
// leaves only max_batched_tokens. Three 700-token prompts behind two decoding sequences.
TEST(StepCost, PrefillTokensCapLimitsPromptChunksNotDecodeRows) {
  for (const int cap : {0, 96}) {
    testing::TestRunner runner;
    EngineConfig ec;
    ec.block_size = 16, ec.n_blocks = 512, ec.max_batched_tokens = 1024, ec.max_seqs = 8;
    ec.max_prefill_tokens = cap;
    Engine eng(&runner, ec);
    ASSERT_TRUE(eng.init().ok());
    std::vector<std::shared_ptr<RequestHandle>> hs;
    auto submit = [&](int i, int prompt, int max_tokens) { submit_greedy(&eng, i, prompt, max_tokens, &hs); };
    submit(0, 8, 64);
    submit(1, 8, 64);
    ASSERT_TRUE(eng.step());  // both prompts; from now on they decode
    for (int i = 2; i < 5; ++i) submit(i, 700, 2);
    int steps = 0, most = 0, mixed = 0;
    while (eng.step()) {
      const EngineStats st = eng.stats();
      EXPECT_EQ(st.last_prefill_budget, cap > 0 ? cap : 1024);
      most = std::max(most, st.last_batch_tokens);
      if (st.last_batch_seqs > 2) ++mixed;  // beside the two decoding sequences: a prompt's chunk or row
      ASSERT_LT(++steps, 2000);
    }
    for (auto& h : hs) EXPECT_TRUE(h->final_status().ok()) << h->final_status().message();
    if (cap > 0) {
      EXPECT_LE(most, cap + 5);     // the chunk plus at most one decode row per sequence
      EXPECT_GE(mixed, 3 * 700 / cap - 3);  // the prompts took many steps, the decode rows riding along
    } else {
      EXPECT_GT(most, 1000);  // uncapped: one step filled max_batched_tokens
    }
  }
}

}  // namespace
}  // namespace citadel::engine
