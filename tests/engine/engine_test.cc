#include "engine/engine.h"

#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "engine/sampler.h"
#include "tests/engine/test_runner.h"

namespace citadel::engine {
namespace {

using testing::TestRunner;
constexpr int kVocab = 64;

// (GCC 12 warns falsely (-Wrestrict) on `"literal" + std::to_string(i)` at -O3.)
std::string name(const char* prefix, int i) {
  std::string s(prefix);
  s += std::to_string(i);
  return s;
}

struct Collected {
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  std::vector<TokenEvent> events;
};

// Non-blocking drain (synchronous mode).
void drain(RequestHandle& h, Collected* c) {
  TokenEvent ev;
  while (h.try_pop(&ev)) {
    if (ev.token >= 0) c->tokens.push_back(ev.token);
    if (ev.finish != FinishReason::kNone) c->finish = ev.finish;
    c->events.push_back(ev);
  }
}

using testing::greedy_request;
using testing::small_config;

std::vector<int32_t> random_prompt(Rng& rng, int len) {
  std::vector<int32_t> p(len);
  for (auto& t : p) t = static_cast<int32_t>(rng.next_u64() % kVocab);
  return p;
}

// Steps until idle; fails the test past max_steps (a hang or starvation).
int run_until_idle(Engine& e, int max_steps = 100000) {
  int steps = 0;
  while (!e.idle()) {
    e.step();
    if (++steps > max_steps) {
      ADD_FAILURE() << "engine did not finish within " << max_steps << " steps";
      break;
    }
    Status inv = e.kv_cache()->check_invariants();
    if (!inv.ok()) {
      ADD_FAILURE() << inv.to_string();
      break;
    }
  }
  return steps;
}

TEST(Engine, BatchedGreedyEqualsReference) {
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(256, 4, 48, 16));
  ASSERT_TRUE(e.init().ok());
  Rng rng(1);
  std::vector<std::shared_ptr<RequestHandle>> hs;
  std::vector<std::vector<int32_t>> want;
  for (int i = 0; i < 16; ++i) {
    auto prompt = random_prompt(rng, 1 + static_cast<int>(rng.next_u64() % 60));
    const int max_tokens = 1 + static_cast<int>(rng.next_u64() % 30);
    want.push_back(TestRunner::reference_greedy(prompt, max_tokens, kVocab));
    auto h = e.submit(greedy_request(name("r", i), prompt, max_tokens));
    ASSERT_TRUE(h.ok()) << h.status().to_string();
    hs.push_back(*h);
  }
  run_until_idle(e);
  for (size_t i = 0; i < hs.size(); ++i) {
    Collected c;
    drain(*hs[i], &c);
    EXPECT_EQ(c.tokens, want[i]) << "request " << i;
    EXPECT_EQ(c.finish, FinishReason::kLength);
    EXPECT_EQ(hs[i]->usage().completion_tokens, static_cast<int>(want[i].size()));
  }
  EXPECT_GT(runner.max_batch_tokens(), 1);
  EXPECT_EQ(e.kv_cache()->num_used(), 0);
  EngineStats st = e.stats();
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.finished_total, 16);
  // Step time sums: every step's forward is part of its step, and steps ran.
  EXPECT_GT(st.steps, 0);
  EXPECT_GT(st.forward_ms_total, 0.0);
  EXPECT_GE(st.step_ms_total, st.forward_ms_total);
}

TEST(Engine, SeededSamplingBatchedEqualsAlone) {
  Rng rng(2);
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 8; ++i) {
    GenerateRequest r;
    r.id = name("s", i);
    r.prompt = random_prompt(rng, 1 + static_cast<int>(rng.next_u64() % 30));
    r.max_tokens = 20;
    r.sampling.temperature = 0.9f;
    r.sampling.top_p = 0.9f;
    r.sampling.presence_penalty = 0.5f;
    r.sampling.repetition_penalty = 1.1f;
    r.sampling.has_seed = true;
    r.sampling.seed = 100 + i;
    r.sampling.top_logprobs = 2;
    reqs.push_back(r);
  }
  std::vector<std::vector<int32_t>> alone;
  for (const auto& r : reqs) {
    TestRunner runner(kVocab);
    Engine e(&runner, small_config(64, 4));
    ASSERT_TRUE(e.init().ok());
    auto h = e.submit(r);
    ASSERT_TRUE(h.ok());
    run_until_idle(e);
    Collected c;
    drain(**h, &c);
    alone.push_back(c.tokens);
    for (const auto& ev : c.events) EXPECT_EQ(ev.top_logprobs.size(), 2u);
  }
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(64, 4, 16, 8));  // tight pool and budget: chunking + preemption
  ASSERT_TRUE(e.init().ok());
  std::vector<std::shared_ptr<RequestHandle>> hs;
  for (const auto& r : reqs) hs.push_back(*e.submit(r));
  run_until_idle(e);
  for (size_t i = 0; i < hs.size(); ++i) {
    Collected c;
    drain(*hs[i], &c);
    EXPECT_EQ(c.tokens, alone[i]) << "request " << i;
  }
}

// A runner that samples on its device gets every step whose rows need nothing the host Sampler alone does, with
// the request's sampling fields, its seed (or the engine's) and the index of the token being generated; steps with
// a penalty, logit_bias or logprobs row fall back to logits + the host Sampler.
TEST(Engine, DeviceSamplingGetsEligibleRowsWithSeedAndCounter) {
  TestRunner runner(kVocab);
  runner.enable_device_sampling();
  Engine e(&runner, small_config(64, 4));
  ASSERT_TRUE(e.init().ok());
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  auto g = *e.submit(greedy_request("g", prompt, 6));
  GenerateRequest s;
  s.id = "s", s.prompt = prompt, s.max_tokens = 6;
  s.sampling.temperature = 0.7f, s.sampling.top_k = 9, s.sampling.top_p = 0.8f, s.sampling.min_p = 0.1f;
  s.sampling.has_seed = true, s.sampling.seed = 77;
  auto hs = *e.submit(s);
  run_until_idle(e);
  Collected cg, cs;
  drain(*g, &cg), drain(*hs, &cs);
  EXPECT_EQ(cg.tokens, TestRunner::reference_greedy(prompt, 6, kVocab));
  ASSERT_EQ(cs.tokens.size(), 6u);
  for (uint32_t k = 0; k < 6; ++k) EXPECT_EQ(cs.tokens[k], TestRunner::device_pick(77, k, kVocab)) << k;
  EXPECT_EQ(runner.sampled_calls(), runner.forward_calls());  // every step went through forward_sampled
  int seen = 0;
  for (const RowSampling& r : runner.sampled_rows()) {
    if (r.temperature == 0.f) continue;
    EXPECT_FLOAT_EQ(r.temperature, 0.7f);
    EXPECT_EQ(r.top_k, 9);
    EXPECT_FLOAT_EQ(r.top_p, 0.8f);
    EXPECT_FLOAT_EQ(r.min_p, 0.1f);
    EXPECT_EQ(r.seed, 77u);
    EXPECT_EQ(r.counter, static_cast<uint32_t>(seen++));
  }
  EXPECT_EQ(seen, 6);

  // A penalised request in the batch: once it has generated a token its steps carry edits, more than this runner
  // takes (none), so they sample on the host (forward() without forward_sampled()).
  const int64_t sampled_before = runner.sampled_calls(), forward_before = runner.forward_calls();
  GenerateRequest p = greedy_request("p", prompt, 4);
  p.sampling.presence_penalty = 0.5f;
  auto hp = *e.submit(p);
  auto g2 = *e.submit(greedy_request("g2", prompt, 4));
  run_until_idle(e);
  Collected cp, cg2;
  drain(*hp, &cp), drain(*g2, &cg2);
  EXPECT_EQ(cp.tokens.size(), 4u);
  EXPECT_EQ(cg2.tokens, TestRunner::reference_greedy(prompt, 4, kVocab));
  const int64_t host_steps = (runner.forward_calls() - forward_before) - (runner.sampled_calls() - sampled_before);
  EXPECT_GE(host_steps, 3);  // tokens 2..4 of p
}

// logit_bias and penalties reach a device sampler as LogitEdits and logprobs come back with the ids: the same
// tokens and logprobs as the host Sampler, each step's edits those of Sampler::logit_edits. More edits than the
// runner takes keep the host path.
TEST(Engine, DeviceSamplingAppliesLogitEdits) {
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  GenerateRequest p = greedy_request("p", prompt, 8);
  p.sampling.presence_penalty = 0.5f, p.sampling.frequency_penalty = 0.25f, p.sampling.repetition_penalty = 1.3f;
  p.sampling.logit_bias = {{7, 2.5f}, {2, -100.f}};
  auto run = [&](TestRunner* runner, const GenerateRequest& req) {
    Engine e(runner, small_config(64, 4));
    EXPECT_TRUE(e.init().ok());
    auto h = *e.submit(req);
    run_until_idle(e);
    Collected c;
    drain(*h, &c);
    return c;
  };
  TestRunner host(kVocab);
  const std::vector<int32_t> ref = run(&host, p).tokens;
  ASSERT_EQ(ref.size(), 8u);
  EXPECT_NE(ref, TestRunner::reference_greedy(prompt, 8, kVocab));  // the edits change the answer

  TestRunner dev(kVocab);
  dev.enable_device_sampling(1000);
  EXPECT_EQ(run(&dev, p).tokens, ref);
  EXPECT_EQ(dev.sampled_calls(), dev.forward_calls());
  ASSERT_EQ(dev.sampled_rows().size(), 8u);
  const RowSampling& last = dev.sampled_rows().back();
  EXPECT_FLOAT_EQ(last.repetition_penalty, 1.3f);
  std::map<int32_t, LogitEdit> by_token;
  for (const LogitEdit& e : last.edits) EXPECT_TRUE(by_token.emplace(e.token, e).second) << e.token;
  EXPECT_FLOAT_EQ(by_token.at(7).bias, 2.5f);
  EXPECT_FLOAT_EQ(by_token.at(2).bias, -100.f);
  std::map<int32_t, int> counts;  // generated before the last step
  for (size_t i = 0; i + 1 < ref.size(); ++i) ++counts[ref[i]];
  for (const auto& [t, n] : counts) EXPECT_FLOAT_EQ(by_token.at(t).subtract, 0.25f * n + 0.5f) << t;
  for (int32_t t : {3, 1, 4, 5}) EXPECT_TRUE(by_token.at(t).repeat) << t;  // in the 64-token window

  GenerateRequest lp = p;
  lp.sampling.top_logprobs = 3;
  TestRunner host_lp(kVocab), dev_lp(kVocab);
  dev_lp.enable_device_sampling(1000);
  const Collected h = run(&host_lp, lp), d = run(&dev_lp, lp);
  EXPECT_EQ(d.tokens, ref);
  EXPECT_EQ(dev_lp.sampled_calls(), dev_lp.forward_calls());
  ASSERT_EQ(h.events.size(), d.events.size());
  for (size_t i = 0; i < h.events.size(); ++i) {
    if (h.events[i].token < 0) continue;
    EXPECT_FLOAT_EQ(d.events[i].logprob, h.events[i].logprob) << i;
    ASSERT_EQ(d.events[i].top_logprobs.size(), 3u) << i;
    for (size_t k = 0; k < 3; ++k) {
      EXPECT_EQ(d.events[i].top_logprobs[k].token, h.events[i].top_logprobs[k].token) << i;
      EXPECT_FLOAT_EQ(d.events[i].top_logprobs[k].logprob, h.events[i].top_logprobs[k].logprob) << i;
    }
  }
  TestRunner small(kVocab);
  small.enable_device_sampling(2);
  EXPECT_EQ(run(&small, p).tokens, ref);
  EXPECT_LT(small.sampled_calls(), small.forward_calls());  // steps with more than 2 edits: host
}

TEST(Engine, PrefixCacheComputesOnlySuffix) {
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(64, 4));
  ASSERT_TRUE(e.init().ok());
  Rng rng(3);
  auto shared = random_prompt(rng, 60);
  auto a = *e.submit(greedy_request("a", shared, 5));
  run_until_idle(e);
  const int64_t before = runner.tokens_computed();
  auto prompt_b = shared;
  for (int i = 0; i < 7; ++i) prompt_b.push_back(i);
  auto b = *e.submit(greedy_request("b", prompt_b, 5));
  run_until_idle(e);
  // 60 shared tokens = 15 full blocks of 4, all cached: B computes its 7 new prompt tokens + 4 decode steps.
  EXPECT_EQ(runner.tokens_computed() - before, 7 + 4);
  Collected ca, cb;
  drain(*a, &ca);
  drain(*b, &cb);
  EXPECT_EQ(ca.tokens, TestRunner::reference_greedy(shared, 5, kVocab));
  EXPECT_EQ(cb.tokens, TestRunner::reference_greedy(prompt_b, 5, kVocab));
  EXPECT_EQ(b->usage().cached_prompt_tokens, 60);
  EngineStats st = e.stats();
  EXPECT_EQ(st.prefix_hit_tokens, 60);
  EXPECT_EQ(st.prefix_queries, 2);
  EXPECT_GT(st.kv_blocks_cached, 0);
}

TEST(Engine, PrefixCacheIsSharedOnlyWithinANamespace) {
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(64, 4));
  ASSERT_TRUE(e.init().ok());
  Rng rng(11);
  const auto prompt = random_prompt(rng, 33);  // 8 full blocks of 4
  auto request = [&](const std::string& id, uint64_t ns) {
    GenerateRequest r = greedy_request(id, prompt, 3);
    r.cache_namespace = ns;
    return r;
  };
  const uint64_t ns_a = prefix_namespace({"m", "", "tenant-a"}), ns_b = prefix_namespace({"m", "", "tenant-b"});
  auto a1 = *e.submit(request("a1", ns_a));
  run_until_idle(e);
  int64_t before = runner.tokens_computed();
  auto b1 = *e.submit(request("b1", ns_b));  // same prompt, other namespace: computed from scratch
  run_until_idle(e);
  EXPECT_EQ(runner.tokens_computed() - before, 33 + 2);
  EXPECT_EQ(b1->usage().cached_prompt_tokens, 0);
  before = runner.tokens_computed();
  auto a2 = *e.submit(request("a2", ns_a));  // same namespace: 8 blocks from the cache
  run_until_idle(e);
  EXPECT_EQ(runner.tokens_computed() - before, 1 + 2);
  EXPECT_EQ(a2->usage().cached_prompt_tokens, 32);
  const auto want = TestRunner::reference_greedy(prompt, 3, kVocab);
  for (auto* h : {&a1, &b1, &a2}) {
    Collected c;
    drain(**h, &c);
    EXPECT_EQ(c.tokens, want);
  }
}

TEST(Engine, RepeatedBlocksInOnePromptAreNotConfused) {
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(64, 4));
  ASSERT_TRUE(e.init().ok());
  std::vector<int32_t> prompt;
  for (int r = 0; r < 4; ++r) prompt.insert(prompt.end(), {1, 2, 3, 4});
  prompt.push_back(9);
  const auto want = TestRunner::reference_greedy(prompt, 6, kVocab);
  for (int round = 0; round < 2; ++round) {
    auto h = *e.submit(greedy_request(name("rep", round), prompt, 6));
    run_until_idle(e);
    Collected c;
    drain(*h, &c);
    EXPECT_EQ(c.finish, FinishReason::kLength) << h->final_status().to_string();
    EXPECT_EQ(c.tokens, want);
  }
  EXPECT_EQ(e.stats().prefix_hit_tokens, 16);
}

TEST(Engine, WholePromptCachedRecomputesLastTokenWithCopyOnWrite) {
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(64, 4));
  ASSERT_TRUE(e.init().ok());
  Rng rng(4);
  auto prompt = random_prompt(rng, 16);  // exactly 4 blocks
  auto a = *e.submit(greedy_request("a", prompt, 12));
  e.step();  // A prefilled, its 4 blocks indexed; A keeps running (holds them)
  const int64_t before = runner.tokens_computed();
  auto b = *e.submit(greedy_request("b", prompt, 12));
  e.step();  // A decodes 1, B computes only its last prompt token, into a private copy of the shared last block
  EXPECT_EQ(runner.tokens_computed() - before, 2);
  EXPECT_EQ(runner.blocks_copied(), 1);
  run_until_idle(e);
  Collected ca, cb;
  drain(*a, &ca);
  drain(*b, &cb);
  const auto want = TestRunner::reference_greedy(prompt, 12, kVocab);
  EXPECT_EQ(ca.tokens, want);
  EXPECT_EQ(cb.tokens, want);
  EXPECT_EQ(e.kv_cache()->num_used(), 0);
}

// Seeded random workloads over a tiny pool: no leak, invariants every step, preemption happens, outputs exact.
TEST(Engine, RandomWorkloadsOnTinyPoolAreExactAndLeakFree) {
  int64_t total_preemptions = 0;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    TestRunner runner(kVocab);
    EngineConfig cfg = small_config(24, 4, 1 + static_cast<int>(seed % 3) * 12, 8);
    Engine e(&runner, cfg);
    ASSERT_TRUE(e.init().ok());
    Rng rng(seed * 7919 + 1);
    std::vector<std::vector<int32_t>> stems = {random_prompt(rng, 12), random_prompt(rng, 20)};
    struct Req { std::shared_ptr<RequestHandle> h; std::vector<int32_t> want; bool cancel; };
    std::vector<Req> reqs;
    int step = 0;
    for (int i = 0; i < 30; ++i) {
      const int len = 1 + static_cast<int>(rng.next_u64() % 40);
      std::vector<int32_t> prompt;
      if (rng.next_u64() % 2) prompt = stems[rng.next_u64() % 2];
      auto extra = random_prompt(rng, len);
      prompt.insert(prompt.end(), extra.begin(), extra.end());
      if (prompt.size() > 60) prompt.resize(60);
      const int max_tokens = 1 + static_cast<int>(rng.next_u64() % 30);
      auto h = e.submit(greedy_request(name("q", i), prompt, max_tokens));
      ASSERT_TRUE(h.ok()) << h.status().to_string();
      reqs.push_back({*h, TestRunner::reference_greedy(prompt, max_tokens, kVocab), rng.next_u64() % 6 == 0});
      for (int k = static_cast<int>(rng.next_u64() % 4); k > 0; --k, ++step) {
        e.step();
        ASSERT_TRUE(e.kv_cache()->check_invariants().ok());
      }
      for (auto& r : reqs)
        if (r.cancel && rng.next_u64() % 3 == 0) r.h->cancel();
    }
    for (auto& r : reqs)
      if (r.cancel) r.h->cancel();
    const int steps = run_until_idle(e, 5000);
    EXPECT_LT(steps, 5000);
    EXPECT_EQ(e.kv_cache()->num_used(), 0) << "seed " << seed;
    EXPECT_EQ(e.kv_cache()->num_free(), 24);
    for (size_t i = 0; i < reqs.size(); ++i) {
      Collected c;
      drain(*reqs[i].h, &c);
      ASSERT_NE(c.finish, FinishReason::kNone) << "seed " << seed << " request " << i;
      if (c.finish == FinishReason::kCancelled) {
        ASSERT_LE(c.tokens.size(), reqs[i].want.size());
        EXPECT_TRUE(std::equal(c.tokens.begin(), c.tokens.end(), reqs[i].want.begin()));
      } else {
        EXPECT_EQ(c.tokens, reqs[i].want) << "seed " << seed << " request " << i;
      }
    }
    total_preemptions += e.stats().preemptions;
  }
  EXPECT_GT(total_preemptions, 0);
}

TEST(Engine, OverloadCompletesOrRejectsBusyAndCancelFreesBlocks) {
  TestRunner runner(kVocab);
  EngineConfig cfg = small_config(24, 4, 32, 4);
  cfg.max_waiting = 6;
  cfg.max_waiting_tokens = 200;
  Engine e(&runner, cfg);
  ASSERT_TRUE(e.init().ok());
  Rng rng(9);
  std::vector<std::shared_ptr<RequestHandle>> accepted;
  std::vector<std::vector<int32_t>> want;
  int busy = 0;
  for (int i = 0; i < 100; ++i) {  // ~10x more tokens than the 96-token pool holds at once
    auto prompt = random_prompt(rng, 20);
    auto h = e.submit(greedy_request(name("o", i), prompt, 10));
    if (h.ok()) {
      accepted.push_back(*h);
      want.push_back(TestRunner::reference_greedy(prompt, 10, kVocab));
    } else {
      EXPECT_EQ(h.status().code(), StatusCode::kResourceExhausted);
      EXPECT_NE(h.status().message().find("busy"), std::string::npos);
      ++busy;
    }
    if (i % 3 == 0) e.step();
    // Admission bounds new requests; preempted ones (at most max_seqs) come back on top of them.
    EXPECT_LE(e.stats().waiting, cfg.max_waiting + cfg.max_seqs);
  }
  EXPECT_GT(busy, 0);
  EXPECT_GT(accepted.size(), 6u);
  EXPECT_EQ(e.stats().rejected_busy_total, busy);
  run_until_idle(e);
  for (size_t i = 0; i < accepted.size(); ++i) {
    Collected c;
    drain(*accepted[i], &c);
    EXPECT_EQ(c.tokens, want[i]);
  }
  EXPECT_EQ(e.kv_cache()->num_used(), 0);
}

TEST(Engine, CancelFreesBlocksAtTheNextStep) {
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(24, 4, 64, 4));
  ASSERT_TRUE(e.init().ok());
  Rng rng(10);
  // Cancel half of a full house: after the next step their blocks are back.
  std::vector<std::shared_ptr<RequestHandle>> hs;
  for (int i = 0; i < 4; ++i) hs.push_back(*e.submit(greedy_request(name("c", i), random_prompt(rng, 15), 8)));
  e.step();
  e.step();
  ASSERT_EQ(e.stats().running, 4);
  EXPECT_TRUE(e.cancel("c1").ok());
  hs[3]->cancel();
  EXPECT_EQ(e.cancel("nope").code(), StatusCode::kNotFound);
  e.step();
  EXPECT_EQ(e.stats().running, 2);
  // Step 1 prefilled all four (60 tokens <= budget 64), steps 2 and 3 decoded: each survivor holds KV for 17 tokens.
  const int per_seq = e.kv_cache()->blocks_for(17);
  EXPECT_EQ(e.kv_cache()->num_used(), 2 * per_seq);
  for (int i : {1, 3}) {
    Collected c;
    drain(*hs[i], &c);
    EXPECT_EQ(c.finish, FinishReason::kCancelled);
    EXPECT_EQ(hs[i]->final_status().code(), StatusCode::kCancelled);
  }
  run_until_idle(e);
  EXPECT_EQ(e.kv_cache()->num_used(), 0);
  EXPECT_EQ(e.stats().cancelled_total, 2);
}

TEST(Engine, RejectsImpossibleRequestsWithReasons) {
  TestRunner runner(kVocab, /*max_context=*/200);
  Engine e(&runner, small_config(24, 4));
  ASSERT_TRUE(e.init().ok());
  auto code = [&](GenerateRequest r) { return e.submit(std::move(r)).status(); };
  EXPECT_EQ(code(greedy_request("a", {}, 4)).code(), StatusCode::kInvalidArgument);
  EXPECT_NE(code(greedy_request("a", {1, 64}, 4)).message().find("vocabulary"), std::string::npos);
  EXPECT_NE(code(greedy_request("a", std::vector<int32_t>(150, 1), 100)).message().find("context"), std::string::npos);
  EXPECT_NE(code(greedy_request("a", std::vector<int32_t>(90, 1), 10)).message().find("KV pool"), std::string::npos);
  EXPECT_EQ(code(greedy_request("a", {1}, 0)).code(), StatusCode::kInvalidArgument);
  auto bad = greedy_request("a", {1}, 4);
  bad.sampling.top_k = -3;
  EXPECT_NE(code(bad).message().find("top_k"), std::string::npos);
  ASSERT_TRUE(e.submit(greedy_request("dup", {1, 2}, 4)).ok());
  EXPECT_EQ(code(greedy_request("dup", {1, 2}, 4)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e.stats().rejected_invalid_total, 7);
}

TEST(Engine, StopTokenEndsWithStopAndCarriesTheToken) {
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(32, 4));
  ASSERT_TRUE(e.init().ok());
  std::vector<int32_t> prompt = {5, 6, 7};
  auto full = TestRunner::reference_greedy(prompt, 20, kVocab);
  auto r = greedy_request("s", prompt, 20);
  r.stop_token_ids = {full[3]};
  const auto want = TestRunner::reference_greedy(prompt, 20, kVocab, r.stop_token_ids);
  auto h = *e.submit(r);
  run_until_idle(e);
  Collected c;
  drain(*h, &c);
  EXPECT_EQ(c.tokens, want);
  EXPECT_EQ(c.tokens.back(), full[3]);
  EXPECT_EQ(c.finish, FinishReason::kStop);
}

TEST(Engine, DeadlineAndSlowConsumerEndRequestsNotTheEngine) {
  TestRunner runner(kVocab);
  EngineConfig cfg = small_config(32, 4);
  cfg.event_buffer = 2;
  Engine e(&runner, cfg);
  ASSERT_TRUE(e.init().ok());
  auto late = greedy_request("late", {1, 2, 3}, 5);
  late.deadline = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  auto hl = *e.submit(late);
  auto hs = *e.submit(greedy_request("slow", {4, 5}, 10));  // never drained: buffer of 2 overflows
  run_until_idle(e);
  Collected cl, cs;
  drain(*hl, &cl);
  drain(*hs, &cs);
  EXPECT_EQ(cl.finish, FinishReason::kDeadline);
  EXPECT_TRUE(cl.tokens.empty());
  EXPECT_EQ(cs.finish, FinishReason::kCancelled);
  EXPECT_EQ(cs.tokens.size(), 2u);
  EXPECT_NE(hs->final_status().message().find("too slow"), std::string::npos);
  auto ok = *e.submit(greedy_request("after", {7}, 3));
  run_until_idle(e);
  Collected co;
  drain(*ok, &co);
  EXPECT_EQ(co.tokens, TestRunner::reference_greedy({7}, 3, kVocab));
  EXPECT_EQ(e.kv_cache()->num_used(), 0);
}

// request_timeout_s (serve's --request-timeout-s) gives every request without a deadline of its own one: a request
// that has run past it ends with kDeadline; one with its own later deadline, and a short one, finish normally.
TEST(Engine, RequestTimeoutIsTheDefaultDeadline) {
  TestRunner runner(kVocab);
  EngineConfig cfg = small_config(32, 4);
  cfg.request_timeout_s = 0.05;
  Engine e(&runner, cfg);
  ASSERT_TRUE(e.init().ok());
  auto quick = *e.submit(greedy_request("quick", {1, 2}, 3));
  run_until_idle(e);
  auto slow = *e.submit(greedy_request("slow", {1, 2, 3}, 20));
  auto own = greedy_request("own", {4, 5}, 20);
  own.deadline = std::chrono::steady_clock::now() + std::chrono::hours(1);
  auto hown = *e.submit(own);
  std::this_thread::sleep_for(std::chrono::milliseconds(80));  // both pass the 50 ms default before their first step
  run_until_idle(e);
  Collected cq, cs, co;
  drain(*quick, &cq);
  drain(*slow, &cs);
  drain(*hown, &co);
  EXPECT_EQ(cq.finish, FinishReason::kLength);
  EXPECT_EQ(cs.finish, FinishReason::kDeadline);
  EXPECT_TRUE(cs.tokens.empty());
  EXPECT_EQ(co.finish, FinishReason::kLength);
  EXPECT_EQ(co.tokens.size(), 20u);
}

TEST(Engine, NotifyCallbackRunsOncePerEvent) {
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(32, 4));
  ASSERT_TRUE(e.init().ok());
  int calls = 0;
  auto r = greedy_request("n", {1, 2, 3}, 7);
  r.on_event = [&calls] { ++calls; };
  auto h = *e.submit(r);
  run_until_idle(e);
  Collected c;
  drain(*h, &c);
  EXPECT_EQ(c.events.size(), 7u);
  EXPECT_EQ(calls, 7);
}

TEST(Engine, HigherPriorityIsAdmittedFirst) {
  TestRunner runner(kVocab);
  Engine e(&runner, small_config(32, 4, 64, /*max_seqs=*/1));
  ASSERT_TRUE(e.init().ok());
  auto low = *e.submit(greedy_request("low", {1, 2}, 3));
  auto hi_req = greedy_request("high", {3, 4}, 3);
  hi_req.priority = 5;
  auto high = *e.submit(hi_req);
  e.step();
  Collected cl, ch;
  drain(*low, &cl);
  drain(*high, &ch);
  EXPECT_TRUE(cl.tokens.empty());
  EXPECT_EQ(ch.tokens.size(), 1u);
  run_until_idle(e);
}

TEST(Engine, ThreadedSubmitFromManyThreadsAndGracefulStop) {
  TestRunner runner(kVocab);
  EngineConfig cfg = small_config(48, 4, 32, 8);
  cfg.max_waiting = 1000;
  Engine e(&runner, cfg);
  ASSERT_TRUE(e.start().ok());
  constexpr int kThreads = 4, kPer = 6;
  std::vector<std::thread> threads;
  std::vector<int> mismatches(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(100 + t);
      for (int i = 0; i < kPer; ++i) {
        auto prompt = random_prompt(rng, 1 + static_cast<int>(rng.next_u64() % 30));
        const int max_tokens = 1 + static_cast<int>(rng.next_u64() % 12);
        auto h = e.submit(greedy_request(name("t", t * 100 + i), prompt, max_tokens));
        if (!h.ok()) { ++mismatches[t]; continue; }
        std::vector<int32_t> got;
        TokenEvent ev;
        while ((*h)->pop(&ev, std::chrono::seconds(10)) == RequestHandle::Pop::kEvent) {
          if (ev.token >= 0) got.push_back(ev.token);
          if (ev.finish != FinishReason::kNone) break;
        }
        if (got != TestRunner::reference_greedy(prompt, max_tokens, kVocab)) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
  // A long request, then stop with an immediate deadline: it is cancelled, the thread joins.
  auto h = e.submit(greedy_request("long", {1, 2, 3}, 150));
  ASSERT_TRUE(h.ok());
  TokenEvent ev;
  ASSERT_EQ((*h)->pop(&ev, std::chrono::seconds(10)), RequestHandle::Pop::kEvent);
  e.stop(std::chrono::steady_clock::now());
  FinishReason last = FinishReason::kNone;
  while ((*h)->try_pop(&ev)) last = ev.finish;
  EXPECT_TRUE(last == FinishReason::kCancelled || last == FinishReason::kLength);
  EXPECT_TRUE((*h)->finished());
  EXPECT_EQ(e.submit(greedy_request("x", {1}, 1)).status().code(), StatusCode::kResourceExhausted);
  EngineStats st = e.stats();
  EXPECT_EQ(st.running + st.waiting, 0);
  EXPECT_EQ(st.kv_blocks_used, 0);
}

TEST(Engine, KvPoolSizedFromMemoryBudget) {
  TestRunner runner(kVocab);  // 64 bytes per token
  EngineConfig cfg;
  cfg.block_size = 16;
  cfg.kv_memory_bytes = 64 * 16 * 100 + 5;
  Engine e(&runner, cfg);
  ASSERT_TRUE(e.init().ok());
  EXPECT_EQ(e.kv_cache()->n_blocks(), 100);
  EngineConfig none;
  Engine e2(&runner, none);
  EXPECT_EQ(e2.init().code(), StatusCode::kInvalidArgument);
}

// kv_memory_fraction without a byte budget: the runner sizes the pool from its device (the CUDA runner: the card's
// memory left after weights and activations); a runner without that (the CPU) is a clear error, not a tiny pool.
TEST(Engine, KvPoolSizedByTheRunnersDevice) {
  struct DeviceRunner : TestRunner {
    using TestRunner::TestRunner;
    Result<int> allocate_kv_from_memory(int block_size, double fraction) override {
      asked_fraction = fraction;
      RETURN_IF_ERROR(allocate_kv(int(fraction * 1000), block_size));
      return int(fraction * 1000);
    }
    double asked_fraction = 0;
  };
  DeviceRunner runner(kVocab);
  EngineConfig cfg;
  cfg.block_size = 16;
  cfg.kv_memory_fraction = 0.25;
  Engine e(&runner, cfg);
  ASSERT_TRUE(e.init().ok());
  EXPECT_EQ(runner.asked_fraction, 0.25);
  EXPECT_EQ(e.kv_cache()->n_blocks(), 250);
  cfg.kv_memory_bytes = 64 * 16 * 7;  // an explicit budget wins
  DeviceRunner explicit_runner(kVocab);
  Engine e2(&explicit_runner, cfg);
  ASSERT_TRUE(e2.init().ok());
  EXPECT_EQ(explicit_runner.asked_fraction, 0.0);
  EXPECT_EQ(e2.kv_cache()->n_blocks(), 7);
  TestRunner cpu(kVocab);
  EngineConfig frac_only;
  frac_only.kv_memory_fraction = 0.9;
  Engine e3(&cpu, frac_only);
  const Status st = e3.init();
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("explicit budget only (kv_memory_mb)"), std::string::npos) << st.message();
}

TEST(Engine, KvPoolSummarySaysWhatFits) {
  // 20 blocks of 16 = 320 tokens at 36864 B/token: no request of 1000 tokens, none at 8192; the line says so.
  const std::string small = kv_pool_summary(20, 16, 36864, 8192);
  EXPECT_NE(small.find("320 tokens (0.01 GiB): 0 requests of ~1000 tokens or 0 at the full 8192-token context"),
            std::string::npos) << small;
  EXPECT_NE(small.find("longer than 320 tokens is refused"), std::string::npos) << small;
  // 4096 blocks of 16 = 65536 tokens; 1000 tokens take 63 blocks (1008 tokens): 65 fit; 8 at 8192.
  const std::string big = kv_pool_summary(4096, 16, 1 << 15, 8192);
  EXPECT_NE(big.find("65536 tokens (2.00 GiB): 65 requests of ~1000 tokens or 8 at the full 8192-token"),
            std::string::npos) << big;
  EXPECT_EQ(big.find("refused"), std::string::npos) << big;
}

}  // namespace
}  // namespace citadel::engine
