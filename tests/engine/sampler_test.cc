#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "base/cpu_features.h"

namespace citadel::engine {
namespace {

// probs -> logits (log), so that softmax(logits) == probs exactly up to rounding.
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(p > 0 ? static_cast<float>(std::log(p)) : -INFINITY);
  return l;
}

std::vector<float> random_logits(int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> l(n);
  for (auto& x : l) x = static_cast<float>(rng.next_double() * 10.0 - 5.0);
  return l;
}

std::map<int, int> histogram(SamplingParams p, const std::vector<float>& logits, int draws) {
  Sampler s(p, 1234);
  std::map<int, int> h;
  for (int i = 0; i < draws; ++i) ++h[s.sample(logits.data(), static_cast<int>(logits.size()), {}).token];
  return h;
}

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p, 1);
  std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s.sample(l.data(), 4, {}).token, 1);
}

TEST(Sampler, TopK1EqualsGreedy) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    auto l = random_logits(100, seed);
    SamplingParams g;
    g.temperature = 0;
    SamplingParams k;
    k.top_k = 1;
    k.temperature = 1.5f;
    k.seed = seed;
    k.has_seed = true;
    EXPECT_EQ(Sampler(g, 0).sample(l.data(), 100, {}).token, Sampler(k, 0).sample(l.data(), 100, {}).token);
  }
}

TEST(Sampler, TopKKeepsOnlyKMostLikely) {
  auto l = logits_of({0.1, 0.4, 0.05, 0.3, 0.15});
  SamplingParams p;
  p.top_k = 2;
  auto h = histogram(p, l, 4000);
  EXPECT_EQ((std::set<int>{1, 3}), [&] { std::set<int> s; for (auto& [t, c] : h) s.insert(t); return s; }());
  EXPECT_NEAR(h[1] / 4000.0, 0.4 / 0.7, 0.03);
}

TEST(Sampler, TopPKeepsMinimalNucleus) {
  auto l = logits_of({0.5, 0.3, 0.15, 0.05});
  SamplingParams p;
  p.top_p = 0.8f;  // 0.5 + 0.3 reaches 0.8 exactly-ish: nucleus {0, 1}, or {0,1,2} if rounding puts it below
  p.top_p = 0.79f;
  auto h = histogram(p, l, 5000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_GT(h[0], 0);
  EXPECT_GT(h[1], 0);
  EXPECT_NEAR(h[0] / 5000.0, 0.5 / 0.8, 0.03);
  p.top_p = 0.81f;  // needs token 2 too
  h = histogram(p, l, 5000);
  EXPECT_EQ(h.size(), 3u);
  p.top_p = 0.4f;   // the top token alone covers it
  h = histogram(p, l, 500);
  EXPECT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0], 500);
}

TEST(Sampler, TopPOnLargeVocabularyMatchesSortedNucleus) {
  // Exercises the chunked partial sort: nucleus spans more than one 64-token chunk.
  const int n = 5000;
  auto l = random_logits(n, 7);
  for (auto& x : l) x *= 0.3f;  // flat-ish: big nucleus
  SamplingParams p;
  p.top_p = 0.5f;
  std::vector<double> probs(n);
  double z = 0;
  float mx = *std::max_element(l.begin(), l.end());
  for (int i = 0; i < n; ++i) z += probs[i] = std::exp(l[i] - mx);
  std::vector<int> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = i;
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return probs[a] > probs[b]; });
  std::set<int> nucleus;
  double cum = 0;
  for (int id : ids) {
    nucleus.insert(id);
    cum += probs[id] / z;
    if (cum >= 0.5) break;
  }
  ASSERT_GT(nucleus.size(), 64u);
  auto h = histogram(p, l, 20000);
  for (auto& [t, c] : h) EXPECT_TRUE(nucleus.count(t)) << t;
  EXPECT_GT(h.size(), nucleus.size() * 9 / 10);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfMax) {
  auto l = logits_of({0.5, 0.3, 0.12, 0.08});
  SamplingParams p;
  p.min_p = 0.2f;  // threshold 0.1: keeps 0, 1, 2
  auto h = histogram(p, l, 6000);
  EXPECT_EQ(h.size(), 3u);
  EXPECT_EQ(h.count(3), 0u);
  EXPECT_NEAR(h[2] / 6000.0, 0.12 / 0.92, 0.02);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveMultipliesNegativeWithinWindow) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.repetition_window = 3;
  Sampler s(p, 0);
  std::vector<float> l = {4.0f, -1.0f, 2.0f, 1.0f, 6.0f};
  std::vector<int32_t> ctx = {4, 0, 1, 0};  // window = last 3 = {0, 1, 0}; token 4 is outside it
  s.apply_penalties(l.data(), 5, ctx);
  EXPECT_FLOAT_EQ(l[0], 2.0f);   // once per distinct token, not per occurrence
  EXPECT_FLOAT_EQ(l[1], -2.0f);
  EXPECT_FLOAT_EQ(l[2], 2.0f);
  EXPECT_FLOAT_EQ(l[4], 6.0f);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesFollowOpenAI) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sampler s(p, 0);
  s.accept(2);
  s.accept(2);
  s.accept(2);
  s.accept(3);
  std::vector<float> l = {1, 1, 1, 1};
  s.apply_penalties(l.data(), 4, {0, 0, 0});  // prompt tokens do not count
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[1], 1.0f);
  EXPECT_FLOAT_EQ(l[2], 1.0f - 3 * 0.25f - 0.5f);
  EXPECT_FLOAT_EQ(l[3], 1.0f - 0.25f - 0.5f);
}

TEST(Sampler, LogitBiasAddsAndCanForceOrBan) {
  SamplingParams p;
  p.temperature = 0;
  p.logit_bias = {{3, 100.0f}};
  std::vector<float> l = {5, 4, 3, 0};
  EXPECT_EQ(Sampler(p, 0).sample(l.data(), 4, {}).token, 3);
  p.logit_bias = {{0, -INFINITY}};
  EXPECT_EQ(Sampler(p, 0).sample(l.data(), 4, {}).token, 1);
  Sampler s(p, 0);
  std::vector<float> m = {1, 2};
  p.logit_bias = {{1, 0.5f}};
  Sampler(p, 0).apply_penalties(m.data(), 2, {});
  EXPECT_FLOAT_EQ(m[1], 2.5f);
}

TEST(Sampler, SameSeedSameOutputDifferentSeedDifferent) {
  auto l = random_logits(50, 3);
  SamplingParams p;
  p.has_seed = true;
  p.seed = 42;
  auto run = [&](SamplingParams q) {
    Sampler s(q, 999);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(l.data(), 50, {}).token);
    return out;
  };
  EXPECT_EQ(run(p), run(p));
  SamplingParams q = p;
  q.seed = 43;
  EXPECT_NE(run(p), run(q));
}

TEST(Sampler, LogprobsAreRawLogSoftmaxAndSumToOne) {
  auto l = random_logits(30, 11);
  SamplingParams p;
  p.temperature = 0.3f;
  p.top_logprobs = 30;
  p.logit_bias = {{0, 50.0f}};  // processing must not leak into reported logprobs
  Sampler s(p, 5);
  SampleResult r = s.sample(l.data(), 30, {});
  EXPECT_EQ(r.token, 0);
  ASSERT_EQ(r.top.size(), 30u);
  double sum = 0;
  for (const auto& t : r.top) sum += std::exp(static_cast<double>(t.logprob));
  EXPECT_NEAR(sum, 1.0, 1e-5);
  for (size_t i = 1; i < r.top.size(); ++i) EXPECT_GE(r.top[i - 1].logprob, r.top[i].logprob);
  std::vector<float> lp(30);
  log_softmax(l.data(), 30, lp.data());
  EXPECT_FLOAT_EQ(r.logprob, lp[0]);
  const int best = static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
  EXPECT_EQ(r.top[0].token, best);
}

TEST(Sampler, ValidationNamesTheField) {
  SamplingParams p;
  p.top_p = 1.5f;
  Status st = validate_sampling_params(p, 10);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("top_p"), std::string::npos);
  p = {};
  p.logit_bias = {{10, 1.0f}};
  EXPECT_NE(validate_sampling_params(p, 10).message().find("logit_bias"), std::string::npos);
  p = {};
  p.temperature = -1;
  EXPECT_FALSE(validate_sampling_params(p, 10).ok());
  p = {};
  EXPECT_TRUE(validate_sampling_params(p, 10).ok());
}

// Every argmax / max_value version against its one-pass reference on random rows: coarse values (ties common), fine
// values (no ties), NaN, -inf, +inf, -0 beside +0, all NaN, all -inf, -inf mixed with NaN, the max placed in the last
// partial block; lengths around the 8-, 16- and 32-wide blocks and vocabulary sizes.
TEST(Sampler, FastArgmaxAndMaxMatchReferenceOnRandomRows) {
  const bool avx2 = cpu_features().avx2;
  if (!avx2) std::printf("note: this CPU has no AVX2; argmax_avx2 is not checked here\n");
  std::mt19937 rng(7);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  int checked = 0;
  for (int n : {0, 1, 2, 5, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33, 39, 40, 63, 65, 100, 257, 32000, 32003, 152064}) {
    for (int trial = 0; trial < 24; ++trial) {
      std::uniform_int_distribution<int> level(-8, 8), pick(0, std::max(n - 1, 0));
      std::uniform_real_distribution<float> fine(-30.f, 30.f);
      std::vector<float> x(n);
      const int kind = trial % 8;
      for (float& v : x) v = kind == 5 ? fine(rng) : static_cast<float>(level(rng)) * 0.5f;
      for (int k = 0; n > 0 && k < 1 + n / 50; ++k) {
        if (kind == 1) x[pick(rng)] = nan;
        if (kind == 2) x[pick(rng)] = -inf;
        if (kind == 3) x[pick(rng)] = trial % 2 ? inf : nan;
      }
      if (kind == 4 && trial % 16 == 4) std::fill(x.begin(), x.end(), nan);
      if (kind == 4 && trial % 16 == 12) std::fill(x.begin(), x.end(), -inf);
      if (kind == 6)  // -inf and NaN only: the first -inf wins
        for (float& v : x) v = rng() % 2 ? nan : -inf;
      if (kind == 7 && n > 0) {  // zeros of both signs as the max, and a tie in the tail
        for (float& v : x) v = -1.f - static_cast<float>(rng() % 4);
        for (int k = 0; k < 3; ++k) x[pick(rng)] = rng() % 2 ? 0.f : -0.f;
        x[n - 1] = 0.f;
      }
      const int32_t want = argmax_ref(x.data(), n);
      const float want_max = max_value_ref(x.data(), n);
      auto same_max = [&](float got) {  // equal as values (the sign of a zero max may differ); -inf for no value
        return got == want_max || (std::isinf(got) && std::isinf(want_max) && got < 0 && want_max < 0);
      };
      ASSERT_EQ(argmax(x.data(), n), want) << "n " << n << " trial " << trial;
      ASSERT_EQ(argmax_portable(x.data(), n), want) << "n " << n << " trial " << trial;
      ASSERT_TRUE(same_max(max_value(x.data(), n))) << "n " << n << " trial " << trial;
      ASSERT_TRUE(same_max(max_value_portable(x.data(), n))) << "n " << n << " trial " << trial;
      if (avx2) {
        ASSERT_EQ(argmax_avx2(x.data(), n), want) << "n " << n << " trial " << trial;
        ASSERT_TRUE(same_max(max_value_avx2(x.data(), n))) << "n " << n << " trial " << trial;
      }
      if (n > 0 && !std::isnan(x[want])) {
        ASSERT_TRUE(same_max(x[want]));
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 24 * 24);
  const std::vector<float> tie = {1.f, 3.f, 3.f, nan, 3.f, 3.f, 3.f, 3.f, 3.f, 3.f};
  for (auto* f : {&argmax, &argmax_portable, &argmax_ref}) EXPECT_EQ(f(tie.data(), 10), 1);
  if (avx2) {
    EXPECT_EQ(argmax_avx2(tie.data(), 10), 1);
  }
  const std::vector<float> zeros = {-1.f, -0.f, 0.f, -0.f, 0.f, -2.f, -3.f, -4.f, -5.f};
  EXPECT_EQ(argmax_ref(zeros.data(), 9), 1);
  if (avx2) {
    EXPECT_EQ(argmax_avx2(zeros.data(), 9), 1);
  }
  EXPECT_EQ(argmax(zeros.data(), 9), 1);
  const std::vector<float> all_nan(9, nan);
  EXPECT_EQ(argmax(all_nan.data(), 9), 0);
  EXPECT_TRUE(std::isinf(max_value(all_nan.data(), 9)) && max_value(all_nan.data(), 9) < 0);
  EXPECT_EQ(argmax(nullptr, 0), 0);
}

}  // namespace
}  // namespace citadel::engine
