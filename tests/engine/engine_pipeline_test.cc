// Pipelined steps (EngineConfig::overlap_steps) against the same engine unpipelined, on TestRunner, whose every logit
// row is a function of the whole context read back from its KV pool: a pending token resolved wrongly, a block
// committed with a pending token in it, a dropped or doubled row or a seeded draw with the wrong counter changes the
// output.
#include <gtest/gtest.h>

#include <memory>
#include <thread>

#include "engine/engine.h"
#include "tests/engine/test_runner.h"

namespace citadel::engine {
namespace {

using testing::greedy_request;
using testing::small_config;
using testing::TestRunner;
constexpr int kVocab = 64;

// A TestRunner that samples on its "device" and pipelines, and an initialised engine over it.
struct Piped {
  TestRunner runner{kVocab};
  std::unique_ptr<Engine> engine;
  explicit Piped(int n_blocks, int max_seqs = 8) {
    runner.enable_device_sampling();
    runner.enable_pipelining();
    engine = std::make_unique<Engine>(&runner, small_config(n_blocks, 4, 64, max_seqs));
    EXPECT_TRUE(engine->init().ok());
  }
  // Steps until idle, then once more: that collects a step launched for requests that all ended meanwhile.
  void finish() {
    for (int k = 0; k < 10000 && !engine->idle(); ++k) engine->step();
    engine->step();
  }
};

struct Outcome {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  FinishReason finish = FinishReason::kNone;
  std::string status;
};

Outcome drain(RequestHandle& h) {
  Outcome o;
  TokenEvent ev;
  while (h.try_pop(&ev)) {
    if (ev.token >= 0) o.tokens.push_back(ev.token), o.logprobs.push_back(ev.logprob);
    if (ev.finish != FinishReason::kNone) o.finish = ev.finish;
  }
  o.status = h.final_status().to_string();
  return o;
}

// A random mix: greedy and seeded rows, logprobs, logit_bias, stop tokens, shared prompt stems (prefix cache), and,
// when `penalties`, some rows with repetition / presence penalties (those steps run unpipelined).
std::vector<GenerateRequest> workload(uint64_t seed, int n, bool penalties) {
  Rng rng(seed);
  auto tokens = [&](int len) {
    std::vector<int32_t> p(static_cast<size_t>(len));
    for (auto& t : p) t = static_cast<int32_t>(rng.next_u64() % kVocab);
    return p;
  };
  const std::vector<std::vector<int32_t>> stems = {tokens(9), tokens(17)};
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < n; ++i) {
    GenerateRequest r;
    r.id = "r" + std::to_string(i);
    if (rng.next_u64() % 2) r.prompt = stems[rng.next_u64() % 2];
    const auto extra = tokens(1 + static_cast<int>(rng.next_u64() % 30));
    r.prompt.insert(r.prompt.end(), extra.begin(), extra.end());
    r.max_tokens = 1 + static_cast<int>(rng.next_u64() % 25);
    const int kind = static_cast<int>(rng.next_u64() % 4);
    r.sampling.temperature = kind == 0 ? 0.f : 0.8f;
    r.sampling.has_seed = true;
    r.sampling.seed = 1000 + static_cast<uint64_t>(i);
    if (kind == 2) r.sampling.top_logprobs = 2;
    if (kind == 3) r.sampling.logit_bias = {{static_cast<int32_t>(i % kVocab), 3.f}};
    if (rng.next_u64() % 3 == 0) r.stop_token_ids = {static_cast<int32_t>(rng.next_u64() % kVocab)};
    if (penalties && rng.next_u64() % 3 == 0) {
      r.sampling.repetition_penalty = 1.3f;
      r.sampling.presence_penalty = 0.5f;
    }
    reqs.push_back(std::move(r));
  }
  return reqs;
}

// Submits the requests a few at a time between steps, runs to idle, and returns every outcome.
std::vector<Outcome> run(Engine& e, TestRunner& runner, const std::vector<GenerateRequest>& reqs, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::shared_ptr<RequestHandle>> hs;
  int steps = 0;
  for (const auto& r : reqs) {
    auto h = e.submit(r);
    EXPECT_TRUE(h.ok()) << h.status().to_string();
    if (!h.ok()) return {};
    hs.push_back(*h);
    for (int k = static_cast<int>(rng.next_u64() % 3); k > 0; --k) {
      e.step();
      EXPECT_TRUE(e.kv_cache()->check_invariants().ok());
    }
  }
  while (!e.idle() && ++steps < 20000) {
    e.step();
    const Status inv = e.kv_cache()->check_invariants();
    EXPECT_TRUE(inv.ok()) << inv.to_string();
  }
  EXPECT_LT(steps, 20000) << "no progress";
  e.step();  // collects a step launched for requests that all ended meanwhile
  EXPECT_EQ(runner.outstanding(), 0u);
  std::vector<Outcome> out;
  for (auto& h : hs) out.push_back(drain(*h));
  return out;
}

void expect_same(const std::vector<Outcome>& want, const std::vector<Outcome>& got, const std::string& what) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].tokens, got[i].tokens) << what << " request " << i;
    EXPECT_EQ(want[i].logprobs, got[i].logprobs) << what << " request " << i;
    EXPECT_EQ(want[i].finish, got[i].finish) << what << " request " << i;
    EXPECT_NE(got[i].finish, FinishReason::kNone) << what << " request " << i;
  }
}

// The same workloads, pipelined and not, on pools tight enough to chunk prompts and preempt sequences: identical
// tokens, logprobs and finish reasons, no block leaked, and most steps really pipelined.
TEST(EnginePipeline, RandomWorkloadsEqualUnpipelined) {
  int64_t preemptions = 0, pending = 0;
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    const bool penalties = seed % 3 == 0;
    const auto reqs = workload(seed, 24, penalties);
    const int n_blocks = 20 + static_cast<int>(seed % 4) * 8, budget = 8 + static_cast<int>(seed % 3) * 20;
    TestRunner plain_runner(kVocab), piped_runner(kVocab);
    // Edits room for every row: a step that overflowed it would be sampled on the host, with another generator.
    for (TestRunner* r : {&plain_runner, &piped_runner}) r->enable_device_sampling(100000);
    piped_runner.enable_pipelining();
    Engine plain(&plain_runner, small_config(n_blocks, 4, budget, 6, false));
    Engine piped(&piped_runner, small_config(n_blocks, 4, budget, 6, true));
    ASSERT_TRUE(plain.init().ok());
    ASSERT_TRUE(piped.init().ok());
    const auto want = run(plain, plain_runner, reqs, seed);
    const auto got = run(piped, piped_runner, reqs, seed);
    expect_same(want, got, "seed " + std::to_string(seed));
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (reqs[i].sampling.temperature != 0.f || !reqs[i].sampling.logit_bias.empty() ||
          reqs[i].sampling.repetition_penalty != 1.f)
        continue;
      EXPECT_EQ(got[i].tokens, TestRunner::reference_greedy(reqs[i].prompt, reqs[i].max_tokens, kVocab,
                                                            reqs[i].stop_token_ids))
          << "seed " << seed << " request " << i;
    }
    EXPECT_EQ(piped.kv_cache()->num_used(), 0);
    EXPECT_EQ(plain_runner.pending_read(), 0);
    preemptions += piped.stats().preemptions;
    pending += piped_runner.pending_read();
  }
  EXPECT_GT(preemptions, 0) << "the pools were meant to force preemption";
  EXPECT_GT(pending, 500) << "pipelined steps should feed most decode rows from the device";
}

// A sequence reaching the model's context mid-pipeline ends with kLength at exactly the context, never asking the
// runner for a position past it; max_tokens likewise.
TEST(EnginePipeline, ContextAndMaxTokensEndExactly) {
  for (bool overlap : {false, true}) {
    TestRunner runner(kVocab, /*max_context=*/40);
    runner.enable_device_sampling();
    if (overlap) runner.enable_pipelining();
    Engine e(&runner, small_config(64, 4, 64, 8, overlap));
    ASSERT_TRUE(e.init().ok());
    GenerateRequest a;
    a.id = "ctx";
    a.prompt = std::vector<int32_t>(30, 5);
    a.max_tokens = 100;
    a.sampling.temperature = 0;
    GenerateRequest b = a;
    b.id = "max";
    b.prompt = {1, 2, 3};
    b.max_tokens = 7;
    auto ha = e.submit(a), hb = e.submit(b);
    ASSERT_FALSE(ha.ok()) << "prompt + max_tokens beyond the context is refused at submit";
    a.max_tokens = 10;
    ha = e.submit(a);
    ASSERT_TRUE(ha.ok() && hb.ok()) << ha.status().to_string();
    while (!e.idle()) e.step();
    e.step();
    const Outcome oa = drain(**ha), ob = drain(**hb);
    EXPECT_EQ(oa.tokens, TestRunner::reference_greedy(a.prompt, 10, kVocab));
    EXPECT_EQ(oa.finish, FinishReason::kLength);
    EXPECT_EQ(ob.tokens, TestRunner::reference_greedy(b.prompt, 7, kVocab));
    EXPECT_EQ(ob.finish, FinishReason::kLength);
    EXPECT_EQ(e.kv_cache()->num_used(), 0);
  }
}

// Cancelling requests while their tokens are in flight: the cancelled ones end kCancelled with a prefix of their
// tokens, the rest are untouched, and nothing leaks.
TEST(EnginePipeline, CancelWhileInFlight) {
  Piped p(64);
  std::vector<std::shared_ptr<RequestHandle>> hs;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) {
    prompts.push_back({static_cast<int32_t>(i + 1), 7, 9});
    hs.push_back(*p.engine->submit(greedy_request("c" + std::to_string(i), prompts.back(), 20)));
  }
  for (int k = 0; k < 5; ++k) p.engine->step();
  for (int i = 0; i < 6; i += 2) hs[static_cast<size_t>(i)]->cancel();
  p.finish();
  for (int i = 0; i < 6; ++i) {
    const Outcome o = drain(*hs[static_cast<size_t>(i)]);
    const auto want = TestRunner::reference_greedy(prompts[static_cast<size_t>(i)], 20, kVocab);
    if (i % 2 == 0) {
      EXPECT_EQ(o.finish, FinishReason::kCancelled);
      ASSERT_LE(o.tokens.size(), want.size());
      EXPECT_TRUE(std::equal(o.tokens.begin(), o.tokens.end(), want.begin()));
    } else {
      EXPECT_EQ(o.tokens, want);
    }
  }
  EXPECT_EQ(p.engine->kv_cache()->num_used(), 0);
  EXPECT_EQ(p.runner.outstanding(), 0u);
}

// A step that fails (the device stays healthy) fails its own requests only; a sticky fault fails the engine, every
// request ends with an error, and nothing is left launched.
TEST(EnginePipeline, FailuresEndRequestsCleanly) {
  {
    Piped p(64);
    const std::vector<int32_t> prompt = {3, 4, 5};
    auto hx = *p.engine->submit(greedy_request("x", prompt, 12));
    for (int k = 0; k < 4; ++k) p.engine->step();
    p.runner.fail_next_forward();
    auto hy = *p.engine->submit(greedy_request("y", prompt, 12));
    p.finish();
    const Outcome ox = drain(*hx), oy = drain(*hy);
    EXPECT_EQ(ox.finish, FinishReason::kError) << "x was in the failed step";
    EXPECT_NE(oy.finish, FinishReason::kNone);
    EXPECT_FALSE(p.engine->failed());
    auto hz = *p.engine->submit(greedy_request("z", prompt, 12));
    p.finish();
    EXPECT_EQ(drain(*hz).tokens, TestRunner::reference_greedy(prompt, 12, kVocab));
    EXPECT_EQ(p.engine->kv_cache()->num_used(), 0);
  }
  {
    Piped p(64);
    std::vector<std::shared_ptr<RequestHandle>> hs;
    for (int i = 0; i < 4; ++i)
      hs.push_back(*p.engine->submit(greedy_request("s" + std::to_string(i), {static_cast<int32_t>(i), 1, 2}, 30)));
    for (int k = 0; k < 3; ++k) p.engine->step();
    p.runner.fail_at_call(2);
    for (int k = 0; k < 20 && !p.engine->failed(); ++k) p.engine->step();
    ASSERT_TRUE(p.engine->failed());
    p.engine->step();
    for (auto& h : hs) EXPECT_EQ(drain(*h).finish, FinishReason::kError);
    EXPECT_EQ(p.engine->kv_cache()->num_used(), 0);
  }
}

// The engine thread pipelines too: many concurrent requests through start()/stop() equal the greedy reference.
TEST(EnginePipeline, ThreadedEngineMatchesReference) {
  Piped p(256, 16);
  Engine& e = *p.engine;
  ASSERT_TRUE(e.start().ok());
  std::vector<std::thread> ts;
  std::vector<int> bad(8, 0);
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        const GenerateRequest r = greedy_request("t" + std::to_string(t) + "_" + std::to_string(i),
                                                 {static_cast<int32_t>(t), static_cast<int32_t>(i), 3, 4}, 16);
        auto h = e.submit(r);
        if (!h.ok()) { ++bad[static_cast<size_t>(t)]; continue; }
        std::vector<int32_t> got;
        TokenEvent ev;
        while ((*h)->pop(&ev, std::chrono::seconds(10)) == RequestHandle::Pop::kEvent) {
          if (ev.token >= 0) got.push_back(ev.token);
          if (ev.finish != FinishReason::kNone) break;
        }
        if (got != TestRunner::reference_greedy(r.prompt, 16, kVocab)) ++bad[static_cast<size_t>(t)];
      }
    });
  for (auto& t : ts) t.join();
  e.stop();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(bad[static_cast<size_t>(t)], 0) << "thread " << t;
  EXPECT_GT(p.runner.pending_read(), 0);
}

}  // namespace
}  // namespace citadel::engine
