// Device sampling (sample_tokens) against the exact distribution computed here in double: the kept set (top-k by
// value with ties, smallest top-p set, min-p) and its renormalized softmax at the temperature. Many rows of the same logits
// with different counters give an empirical histogram; every draw must be in the kept set and each frequency within
// 5 sigma (+0.002) of its probability. Greedy settings equal the argmax; the same (seed, counter) gives the same id.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "cpu_model.h"
#include "engine/sampler.h"
#include "gpu_test_util.h"
#include "kernels/cuda/cuda_ops.h"
#include "runtime/cuda_decoder.h"

namespace citadel::gputest {
namespace {

namespace ck = citadel::cuda;

// Probability of every id under p (0 outside the kept set).
std::vector<double> ref_probs(const std::vector<float>& x, const ck::SampleParams& p) {
  const int V = int(x.size());
  std::vector<float> sorted(x);
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  float thr = -INFINITY;
  if (p.top_k > 1 && p.top_k < V) thr = sorted[p.top_k - 1];
  const double mx = sorted[0];
  std::vector<double> e(V);
  double z = 0;
  for (int i = 0; i < V; ++i) z += e[i] = std::exp((x[i] - mx) / p.temperature);
  if (p.min_p > 0) thr = std::max(thr, float(mx + p.temperature * std::log(double(p.min_p))));
  if (p.top_p > 0 && p.top_p < 1) {
    double mass = 0;  // walk down distinct values until the mass at or above reaches top_p
    for (size_t j = 0; j < sorted.size(); ++j) {
      mass += std::exp((sorted[j] - mx) / p.temperature);
      if ((j + 1 == sorted.size() || sorted[j + 1] != sorted[j]) && mass >= p.top_p * z) {
        thr = std::max(thr, sorted[j]);
        break;
      }
    }
  }
  double kept = 0;
  for (int i = 0; i < V; ++i)
    if (x[i] >= thr) kept += e[i];
  std::vector<double> pr(V, 0.0);
  for (int i = 0; i < V; ++i)
    if (x[i] >= thr) pr[i] = e[i] / kept;
  return pr;
}

std::vector<int32_t> draw(const std::vector<float>& row, const ck::SampleParams& p, int n) {
  const int V = int(row.size());
  std::vector<float> all(size_t(n) * V);
  std::vector<ck::SampleParams> ps(n, p);
  for (int i = 0; i < n; ++i) {
    std::copy(row.begin(), row.end(), all.begin() + size_t(i) * V);
    ps[i].counter = p.counter + i;
  }
  DevArray<float> dl(all);
  DevArray<ck::SampleParams> dp(ps);
  DevArray<int32_t> out(n);
  cudaMemset(out.p, 0xff, sizeof(int32_t) * n);
  ck::sample_tokens(dl.p, n, V, dp.p, nullptr, nullptr, nullptr, out.p, nullptr);
  return out.download();
}

TEST(CudaSampling, GreedySettingsGiveArgmax) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 3.f);
  std::vector<float> row(49152);
  for (auto& v : row) v = nd(rng);
  const int am = int(std::max_element(row.begin(), row.end()) - row.begin());
  ck::SampleParams p;
  p.temperature = 0.f;
  for (int id : draw(row, p, 4)) EXPECT_EQ(id, am);
  p.temperature = 1.f, p.top_k = 1;
  for (int id : draw(row, p, 4)) EXPECT_EQ(id, am);
}

TEST(CudaSampling, MatchesExactDistribution) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.f, 2.f);
  struct Cfg { int V; float t; int k; float top_p; float min_p = 0.f; };
  for (const Cfg& c : {Cfg{1000, 1.f, 0, 1.f}, Cfg{1000, 0.7f, 5, 1.f}, Cfg{1000, 1.f, 0, 0.8f},
                       Cfg{152064, 0.8f, 40, 0.9f}, Cfg{2000, 1.3f, 50, 0.5f}, Cfg{1000, 1.f, 0, 1.f, 0.05f},
                       Cfg{2000, 0.7f, 100, 0.95f, 0.2f}, Cfg{1001, 0.9f, 7, 0.9f}, Cfg{152064, 0.7f, 0, 1.f},
                       Cfg{999, 1.f, 0, 0.7f, 0.01f},  // odd V: rows not 16-byte aligned (the scalar path)
                       Cfg{20000, 5.f, 0, 0.9f}, Cfg{20000, 5.f, 3000, 1.f},  // flat: top-p over the row, thousands of candidates
                       Cfg{20000, 5.f, 12000, 0.99f}, Cfg{152064, 3.f, 0, 0.95f}}) {  // flat, row search from the bins
    std::vector<float> row(c.V);
    for (auto& v : row) v = nd(rng);
    for (int i = 0; i < 3; ++i) row[size_t(rng() % c.V)] = row[0];  // ties at one value
    ck::SampleParams p;
    p.temperature = c.t, p.top_k = c.k, p.top_p = c.top_p, p.min_p = c.min_p, p.seed = 1234, p.counter = 0;
    const int n = c.V > 100000 ? 4096 : 20000;
    auto ids = draw(row, p, n);
    auto pr = ref_probs(row, p);
    std::vector<int> hist(c.V, 0);
    int outside = 0;
    for (int id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, c.V);
      ++hist[id];
      outside += pr[id] == 0.0;
    }
    EXPECT_EQ(outside, 0) << "V " << c.V << " k " << c.k << " p " << c.top_p << " min_p " << c.min_p;
    double worst = 0;
    for (int i = 0; i < c.V; ++i) {
      const double f = double(hist[i]) / n, sd = std::sqrt(pr[i] * (1 - pr[i]) / n);
      const double excess = std::abs(f - pr[i]) - (5 * sd + 0.002);
      worst = std::max(worst, excess);
    }
    EXPECT_LE(worst, 0.0) << "V " << c.V << " k " << c.k << " p " << c.top_p << " min_p " << c.min_p;
    auto again = draw(row, p, 64);  // determinism: same (seed, counter) -> same id
    for (int i = 0; i < 64; ++i) EXPECT_EQ(again[i], ids[i]);
  }
}

// Informative: rows of the 7B vocabulary (152064) under the settings users send, as one sampling call of a decode step.
TEST(CudaSampling, Latency) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 2.f);
  struct Cfg { const char* name; float t; int k; float top_p; float min_p; };
  const Cfg cfgs[] = {{"greedy", 0.f, 0, 1.f, 0.f},          {"temperature 0.7", 0.7f, 0, 1.f, 0.f},
                      {"top_k 40", 0.7f, 40, 1.f, 0.f},        {"top_p 0.95", 0.6f, 0, 0.95f, 0.f},
                      {"top_k 40 top_p 0.9", 0.8f, 40, 0.9f, 0.f}, {"min_p 0.05", 0.7f, 0, 1.f, 0.05f}};
  for (int M : {1, 128}) {
    std::vector<float> all(size_t(M) * 152064);
    for (auto& v : all) v = nd(rng);
    DevArray<float> dl(all);
    DevArray<int32_t> out(M);
    for (const Cfg& c : cfgs) {
      ck::SampleParams p;
      p.temperature = c.t, p.top_k = c.k, p.top_p = c.top_p, p.min_p = c.min_p, p.seed = 1;
      DevArray<ck::SampleParams> dp(std::vector<ck::SampleParams>(M, p));
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0), cudaEventCreate(&e1);
      ck::sample_tokens(dl.p, M, 152064, dp.p, nullptr, nullptr, nullptr, out.p, nullptr);
      cudaEventRecord(e0);
      for (int i = 0; i < 20; ++i) ck::sample_tokens(dl.p, M, 152064, dp.p, nullptr, nullptr, nullptr, out.p, nullptr);
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      std::printf("[sampling] M=%d V=152064 %s: %.1f us per call\n", M, c.name, ms * 1000 / 20);
      cudaEventDestroy(e0), cudaEventDestroy(e1);
    }
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// logit_bias and penalties: the host Sampler's stages 1-3 turned into edits (Sampler::logit_edits) and applied by
// the sampling kernel give bit for bit the row Sampler::apply_penalties gives, and greedy rows their argmax (the
// sampled row's +100 bias leaves it one candidate). Logprobs (rows 0 and 2) match engine::log_softmax of the raw
// logits: the chosen token's (an edited one: its raw value is kept) and the top-n ids and values.
TEST(CudaSampling, LogitEditsMatchTheHostSampler) {
  SKIP_WITHOUT_GPU();
  constexpr int V = 50000, M = 3;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 3.f);
  std::vector<float> logits(size_t(M) * V);
  for (auto& v : logits) v = nd(rng);
  std::vector<float> host = logits;
  std::vector<ck::SampleParams> ps(M);
  std::vector<ck::LogitEdit> edits;
  const float rep[M] = {1.3f, 0.7f, 1.f};
  size_t edited = 0;
  for (int m = 0; m < M; ++m) {
    engine::SamplingParams sp;
    sp.temperature = 0.f;
    sp.repetition_penalty = rep[m];
    sp.presence_penalty = 0.4f * m, sp.frequency_penalty = 0.3f;
    for (int i = 0; i < 40; ++i) sp.logit_bias.push_back({int32_t(rng() % V), nd(rng)});
    sp.logit_bias.push_back({int32_t(rng() % V), 100.f});  // this row's argmax after the edits (almost surely)
    engine::Sampler sampler(sp, 1);
    std::vector<int32_t> context;
    for (int i = 0; i < 200; ++i) context.push_back(int32_t(rng() % 300));  // repeats: a window of distinct ids
    for (int i = 0; i < 50; ++i) sampler.accept(int32_t(rng() % 300));
    std::vector<engine::LogitEdit> e;
    sampler.logit_edits(V, context, &e);
    ps[m].repetition_penalty = rep[m];
    ps[m].top_logprobs = m == 0 ? 5 : m == 2 ? 20 : -1;
    if (m == 2) ps[m].temperature = 0.8f, ps[m].top_p = 0.9f, ps[m].seed = 5;
    ps[m].edit_begin = int(edits.size()), ps[m].edit_count = int(e.size());
    for (const auto& x : e) edits.push_back({x.token, x.bias, x.subtract, x.repeat ? 1 : 0});
    sampler.apply_penalties(host.data() + size_t(m) * V, V, context);
    edited += e.size();
  }
  ASSERT_GT(edited, 100u);
  DevArray<float> dl(logits);
  DevArray<ck::SampleParams> dp(ps);
  DevArray<ck::LogitEdit> de(edits);
  DevArray<int32_t> out(M);
  DevArray<float> raw(edits.size());
  DevArray<ck::TokenLogprobs> dlp(M);
  ck::sample_tokens(dl.p, M, V, dp.p, de.p, raw.p, dlp.p, out.p, nullptr);
  const std::vector<ck::TokenLogprobs> lps = dlp.download();
  const std::vector<float> dev = dl.download();
  const std::vector<int32_t> ids = out.download();
  int changed = 0;
  for (size_t i = 0; i < dev.size(); ++i) {
    EXPECT_EQ(dev[i], host[i]) << i;
    changed += host[i] != logits[i];
  }
  EXPECT_GT(changed, 100);
  for (int m = 0; m < M; ++m) {
    const float* r = host.data() + size_t(m) * V;
    EXPECT_EQ(ids[m], int(std::max_element(r, r + V) - r)) << m;
    if (ps[m].top_logprobs < 0) continue;
    std::vector<float> lp(V);
    engine::log_softmax(logits.data() + size_t(m) * V, V, lp.data());
    EXPECT_NEAR(lps[m].logprob, lp[ids[m]], 1e-4) << m;
    std::vector<int32_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return lp[a] > lp[b]; });
    ASSERT_EQ(lps[m].n, ps[m].top_logprobs) << m;
    for (int k = 0; k < lps[m].n; ++k) {
      EXPECT_EQ(lps[m].ids[k], order[k]) << m << " " << k;
      EXPECT_NEAR(lps[m].lps[k], lp[order[k]], 1e-4) << m << " " << k;
    }
  }
}

// Through the decoder (graph-replayed decode): top_k 1 equals greedy; a sampled run is reproducible from its seeds.
std::vector<int32_t> decoder_run(runtime::CudaDecoder* dec, const std::vector<int32_t>& prompt, int steps,
                                 const runtime::CudaSampling* sp) {
  const int W = dec->max_blocks_per_seq();
  runtime::CudaStep s;
  s.block_tables.resize(W);
  std::iota(s.block_tables.begin(), s.block_tables.end(), 0);
  s.tokens = prompt;
  s.positions.resize(prompt.size());
  std::iota(s.positions.begin(), s.positions.end(), 0);
  s.query_start = {0, int(prompt.size())};
  s.seq_lens = {int(prompt.size())};
  std::vector<int32_t> out, next;
  for (int i = 0; i < steps; ++i) {
    if (sp) {
      s.sampling = {*sp};
      s.sampling[0].counter = uint32_t(i);
    }
    EXPECT_TRUE(dec->step(s, &next, nullptr).ok());
    out.push_back(next[0]);
    const int len = s.seq_lens[0];
    s.tokens = {next[0]}, s.positions = {len}, s.query_start = {0, 1}, s.seq_lens = {len + 1};
  }
  return out;
}

TEST(CudaSampling, DecoderStepsSampleOnDevice) {
  SKIP_WITHOUT_GPU();
  runtime::CudaDecoderOptions opt;
  opt.max_batch = 4, opt.max_step_tokens = 64, opt.max_seq_len = 128, opt.kv_blocks = 16, opt.verbose = false;
  auto dec_or = runtime::CudaDecoder::create(small_config(), opt);
  ASSERT_TRUE(dec_or.ok()) << dec_or.status().to_string();
  auto dec = std::move(dec_or).value();
  ASSERT_TRUE(dec->init_synthetic(9).ok());
  const std::vector<int32_t> prompt = {5, 17, 300, 42, 7, 999, 3};
  const auto greedy = decoder_run(dec.get(), prompt, 12, nullptr);
  runtime::CudaSampling k1;
  k1.temperature = 1.f, k1.top_k = 1;
  EXPECT_EQ(decoder_run(dec.get(), prompt, 12, &k1), greedy);
  runtime::CudaSampling hot;
  hot.temperature = 1.5f, hot.top_k = 50, hot.top_p = 0.95f, hot.seed = 77;
  const auto a = decoder_run(dec.get(), prompt, 12, &hot), b = decoder_run(dec.get(), prompt, 12, &hot);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, greedy);  // 12 draws at temperature 1.5 from a flat synthetic model: equal by chance ~never
  runtime::CudaStep bad;
  bad.tokens = {1}, bad.positions = {0}, bad.query_start = {0, 1}, bad.seq_lens = {1};
  bad.block_tables.assign(dec->max_blocks_per_seq(), 0);
  bad.sampling = {hot, hot};  // two entries for one sequence
  EXPECT_FALSE(dec->step(bad, nullptr, nullptr).ok());
  // A logit_bias edit of +1000 on one id decides every token (graph replays included); bad edits are refused.
  runtime::CudaSampling forced;
  forced.edits = {{123, 1000.f, 0.f, false}};
  EXPECT_EQ(decoder_run(dec.get(), prompt, 6, &forced), std::vector<int32_t>(6, 123));
  bad.sampling = {forced};
  bad.sampling[0].edits = {{5, 1.f, 0.f, false}, {5, 1.f, 0.f, false}};  // repeated id
  EXPECT_FALSE(dec->step(bad, nullptr, nullptr).ok());
  bad.sampling[0].edits = {{static_cast<int32_t>(small_config().n_vocab), 1.f, 0.f, false}};  // out of range
  EXPECT_FALSE(dec->step(bad, nullptr, nullptr).ok());
  EXPECT_GE(dec->max_logit_edits(), 1024);
}

}  // namespace
}  // namespace citadel::gputest
