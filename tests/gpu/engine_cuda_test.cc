// The real engine::Engine driving CudaRunner on the small synthetic model:
//  - one sequence at a time, the engine's greedy tokens equal a hand-driven CudaDecoder loop (same kernels, same
//    step shapes: the runner's batch translation, block tables, slots and logit rows are exact);
//  - batched (continuous batching, chunked prefill) every greedy token is an argmax of the CPU fp32 reference up to
//    bf16 noise (its reference logit within 2% of the logit std of the maximum), and most sequences equal the
//    alone run token for token (different batch shapes round differently, so exact equality is not a contract).
#include <gtest/gtest.h>

#include <functional>
#include <numeric>

#include "cpu_model.h"
#include "engine/engine.h"
#include "gpu_test_util.h"
#include "runtime/cuda_runner.h"
#include "runtime/runner_factory.h"

namespace citadel::gputest {
namespace {

using runtime::CudaDecoder;
using runtime::CudaRunner;
using runtime::CudaRunnerOptions;
using runtime::CudaStep;

constexpr uint32_t kSeed = 77;

CudaRunnerOptions runner_options() {
  CudaRunnerOptions o;
  o.config = small_config();
  o.decoder.max_batch = 8, o.decoder.max_step_tokens = 128, o.decoder.max_seq_len = 256;
  o.decoder.verbose = false;
  o.synthetic_seed = kSeed;
  return o;
}

std::vector<std::vector<int32_t>> run_engine(int max_seqs, const std::vector<std::vector<int32_t>>& prompts,
                                             int max_tokens, float temperature = 0.f,
                                             const std::function<void(engine::SamplingParams*)>& tweak = nullptr,
                                             bool device_sampling = true,
                                             std::vector<std::vector<engine::TokenEvent>>* events = nullptr,
                                             bool overlap = true) {
  auto runner_or = CudaRunner::create(runner_options());
  EXPECT_TRUE(runner_or.ok());
  auto runner = std::move(runner_or).value();
  engine::EngineConfig ec;
  ec.n_blocks = 96, ec.block_size = 16, ec.max_batched_tokens = 64, ec.max_seqs = max_seqs, ec.watermark = 0;
  ec.device_sampling = device_sampling;
  ec.overlap_steps = overlap;
  engine::Engine eng(runner.get(), ec);
  EXPECT_TRUE(eng.init().ok());
  std::vector<std::shared_ptr<engine::RequestHandle>> hs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    engine::GenerateRequest r;
    r.id = "r" + std::to_string(i);
    r.prompt = prompts[i];
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;  // > 0: seeded sampling with every device cut-off
    r.sampling.top_k = 40, r.sampling.top_p = 0.9f, r.sampling.min_p = 0.02f;
    r.sampling.has_seed = true, r.sampling.seed = 1000 + i;
    if (tweak) tweak(&r.sampling);
    auto h = eng.submit(std::move(r));
    EXPECT_TRUE(h.ok()) << h.status().to_string();
    hs.push_back(std::move(h).value());
  }
  for (int guard = 0; guard < 10000 && eng.step(); ++guard) {
  }
  std::vector<std::vector<int32_t>> out(prompts.size());
  if (events) events->assign(prompts.size(), {});
  for (size_t i = 0; i < hs.size(); ++i) {
    engine::TokenEvent ev;
    while (hs[i]->try_pop(&ev)) {
      if (ev.token >= 0) out[i].push_back(ev.token);
      if (events && ev.token >= 0) (*events)[i].push_back(ev);
    }
  }
  return out;
}

std::vector<std::vector<int32_t>> test_prompts() {
  std::mt19937 rng(3);
  std::vector<std::vector<int32_t>> p;
  for (int len : {20, 33, 47, 9, 60}) {
    p.emplace_back(len);
    for (auto& t : p.back()) t = int32_t(rng() % small_config().n_vocab);
  }
  return p;
}

// Greedy generation by hand: whole prompt in one step, then one decode step per token, blocks 0.. in order.
std::vector<int32_t> direct_greedy(CudaDecoder* dec, const std::vector<int32_t>& prompt, int max_tokens) {
  const int W = dec->max_blocks_per_seq();
  std::vector<int32_t> table(W);
  std::iota(table.begin(), table.end(), 0);
  std::vector<int32_t> toks = prompt, out;
  CudaStep s;
  s.tokens = prompt;
  for (int t = 0; t < int(prompt.size()); ++t) s.positions.push_back(t);
  s.query_start = {0, int32_t(prompt.size())};
  s.seq_lens = {int32_t(prompt.size())};
  s.block_tables = table;
  for (int k = 0; k < max_tokens; ++k) {
    std::vector<int32_t> ids;
    EXPECT_TRUE(dec->step(s, &ids, nullptr).ok());
    out.push_back(ids[0]);
    toks.push_back(ids[0]);
    s.tokens = {ids[0]};
    s.positions = {int32_t(toks.size()) - 1};
    s.query_start = {0, 1};
    s.seq_lens = {int32_t(toks.size())};
  }
  return out;
}

TEST(CudaEngine, OneAtATimeEqualsDirectDecoder) {
  SKIP_WITHOUT_GPU();
  const auto prompts = test_prompts();
  const int max_tokens = 12;
  auto got = run_engine(1, prompts, max_tokens);
  auto runner = std::move(CudaRunner::create(runner_options())).value();
  ASSERT_TRUE(runner->allocate_kv(96, 16).ok());
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(got[i], direct_greedy(runner->decoder(), prompts[i], max_tokens)) << "request " << i;
}

TEST(CudaEngine, BatchedGreedyFollowsCpuReference) {
  SKIP_WITHOUT_GPU();
  const auto prompts = test_prompts();
  const int max_tokens = 10;
  auto batched = run_engine(4, prompts, max_tokens);
  auto alone = run_engine(1, prompts, max_tokens);
  const auto c = small_config();
  int same = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(batched[i].size(), size_t(max_tokens)) << "request " << i;
    same += batched[i] == alone[i];
    std::vector<int32_t> seq = prompts[i];
    seq.insert(seq.end(), batched[i].begin(), batched[i].end());
    const auto ref = cpu_forward(c, kSeed, seq);  // teacher-forced fp32 logits for every position
    for (int k = 0; k < max_tokens; ++k) {
      const float* row = &ref[size_t(prompts[i].size() + k - 1) * c.n_vocab];
      double mean = 0, sq = 0;
      for (int v = 0; v < c.n_vocab; ++v) mean += row[v], sq += double(row[v]) * row[v];
      mean /= c.n_vocab;
      const double sd = std::sqrt(sq / c.n_vocab - mean * mean);
      const float best = row[argmax_row(row, c.n_vocab)];
      EXPECT_LE(best - row[batched[i][k]], 0.02 * sd) << "request " << i << " token " << k;
    }
  }
  EXPECT_GE(same, int(prompts.size()) - 1) << "batched == alone for " << same << "/" << prompts.size();
}

// The engine sizes the KV pool from kv_bytes_per_token(): fp32 K/V in the exact modes, bf16 otherwise.
TEST(CudaEngine, KvBytesPerTokenFollowsTheKvPrecision) {
  CudaRunnerOptions o = runner_options();
  const auto& c = o.config;
  const size_t bf16 = size_t{2} * c.n_layers * c.n_kv_heads * c.head_dim * 2;
  EXPECT_EQ(CudaRunner::create(o).value()->kv_bytes_per_token(), bf16);
  o.decoder.f32_activations = true;
  EXPECT_EQ(CudaRunner::create(o).value()->kv_bytes_per_token(), 2 * bf16);
  o.decoder.f32_activations = false, o.decoder.format = runtime::CudaWeightFormat::kF32;
  EXPECT_EQ(CudaRunner::create(o).value()->kv_bytes_per_token(), 2 * bf16);
}

// No KV budget, a utilisation share instead (serve's default on CUDA): the pool takes what the card has left after
// the weights and activations, keeping (1 - fraction) of its memory free, and the engine runs on it. Both through
// CudaRunner and through make_model_runner, the factory serve uses (its wrapper once lacked the sizing call, so
// `serve --device cuda` refused to start without --kv-memory-mb).
TEST(CudaEngine, KvPoolSizedFromTheCard) {
  SKIP_WITHOUT_GPU();
  for (bool factory : {false, true}) {
    SCOPED_TRACE(factory ? "make_model_runner" : "CudaRunner::create");
    size_t free_b = 0, total_b = 0;
    ASSERT_EQ(cudaMemGetInfo(&free_b, &total_b), cudaSuccess);
    std::unique_ptr<engine::ModelRunner> runner;
    if (factory) {
      runtime::RunnerOptions ro;
      ro.device = "cuda", ro.max_batched_tokens = 64, ro.max_batch = 4;
      auto r = runtime::make_model_runner(synth_gguf(small_config(), 7), ro);
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      runner = std::move(r).value();
    } else {
      runner = std::move(CudaRunner::create(runner_options())).value();
    }
    engine::EngineConfig ec;
    ec.block_size = 16, ec.max_batched_tokens = 64, ec.max_seqs = 4, ec.kv_memory_fraction = 0.5;
    engine::Engine eng(runner.get(), ec);
    const Status init = eng.init();
    ASSERT_TRUE(init.ok()) << init.to_string();
    const double pool = double(eng.kv_cache()->n_blocks()) * 16 * runner->kv_bytes_per_token();
    std::printf("KV pool from the card: %d blocks, %.2f GiB of %.2f GiB total (%.2f GiB free before)\n",
                eng.kv_cache()->n_blocks(), pool / (1 << 30), total_b / double(1 << 30), free_b / double(1 << 30));
    EXPECT_GT(pool, 0.25 * double(total_b) - 0.5 * double(total_b - free_b));  // most of half the card
    EXPECT_LT(pool, 0.5 * double(total_b));
    engine::GenerateRequest r;
    r.id = "r", r.prompt = {1, 2, 3}, r.max_tokens = 4, r.sampling.temperature = 0;
    auto h = eng.submit(std::move(r));
    ASSERT_TRUE(h.ok());
    for (int guard = 0; guard < 100 && eng.step(); ++guard) {
    }
    EXPECT_TRUE((*h)->final_status().ok()) << (*h)->final_status().message();
  }
}

// Seeded sampling through the engine runs on the device (CudaRunner::forward_sampled): full length, ids in range,
// the same tokens again for the same seeds, and not the greedy answer everywhere.
TEST(CudaEngine, SeededDeviceSamplingIsReproducible) {
  SKIP_WITHOUT_GPU();
  const auto prompts = test_prompts();
  const auto a = run_engine(8, prompts, 12, 0.9f), b = run_engine(8, prompts, 12, 0.9f);
  const auto greedy = run_engine(8, prompts, 12);
  int differs = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(a[i].size(), 12u) << i;
    for (int32_t t : a[i]) EXPECT_TRUE(t >= 0 && t < small_config().n_vocab);
    EXPECT_EQ(a[i], b[i]) << i;
    differs += a[i] != greedy[i];
  }
  EXPECT_GT(differs, 0);
}

// logit_bias, penalties and logprobs on the device (logit edits and log-softmax in the sampling kernel): the same
// greedy tokens as the host Sampler gives on the same logits (EngineConfig::device_sampling false), logprobs within
// fp32 summation noise of its double-accumulated ones, and not the plain greedy answer.
TEST(CudaEngine, PenalisedSamplingOnDeviceEqualsHost) {
  SKIP_WITHOUT_GPU();
  const auto prompts = test_prompts();
  auto penalised = [](engine::SamplingParams* s) {
    s->repetition_penalty = 1.5f, s->presence_penalty = 1.f, s->frequency_penalty = 0.5f;
    s->logit_bias = {{7, 3.f}, {11, -2.f}};
    s->top_logprobs = 4;
  };
  std::vector<std::vector<engine::TokenEvent>> dev_ev, host_ev;
  const auto device = run_engine(8, prompts, 16, 0.f, penalised, true, &dev_ev);
  const auto host = run_engine(8, prompts, 16, 0.f, penalised, false, &host_ev);
  const auto plain = run_engine(8, prompts, 16);
  int differs = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(device[i].size(), 16u) << i;
    EXPECT_EQ(device[i], host[i]) << i;
    differs += device[i] != plain[i];
    for (size_t k = 0; k < std::min(dev_ev[i].size(), host_ev[i].size()); ++k) {
      EXPECT_NEAR(dev_ev[i][k].logprob, host_ev[i][k].logprob, 1e-4) << i << " " << k;
      ASSERT_EQ(dev_ev[i][k].top_logprobs.size(), 4u);
      for (size_t j = 0; j < 4; ++j) {
        EXPECT_EQ(dev_ev[i][k].top_logprobs[j].token, host_ev[i][k].top_logprobs[j].token) << i << " " << k;
        EXPECT_NEAR(dev_ev[i][k].top_logprobs[j].logprob, host_ev[i][k].top_logprobs[j].logprob, 1e-4);
      }
    }
  }
  EXPECT_GT(differs, 0);
}

// Pipelined steps (EngineConfig::overlap_steps: CudaDecoder::launch / collect, each decode row's input token read on
// the device from the previous step's draw) give exactly the tokens and logprobs of one step at a time: without stop
// tokens both modes run the same batches, so even the bf16 rounding is the same.
TEST(CudaEngine, PipelinedStepsEqualOneStepAtATime) {
  SKIP_WITHOUT_GPU();
  const auto prompts = test_prompts();
  auto lp = [](engine::SamplingParams* s) {
    s->top_logprobs = 3;
    s->logit_bias = {{5, 1.f}};
  };
  for (float temperature : {0.f, 0.9f}) {
    std::vector<std::vector<engine::TokenEvent>> piped_ev, plain_ev;
    const auto piped = run_engine(8, prompts, 20, temperature, lp, true, &piped_ev, true);
    const auto plain = run_engine(8, prompts, 20, temperature, lp, true, &plain_ev, false);
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_EQ(piped[i].size(), 20u) << i;
      EXPECT_EQ(piped[i], plain[i]) << "temperature " << temperature << " request " << i;
      for (size_t k = 0; k < std::min(piped_ev[i].size(), plain_ev[i].size()); ++k) {
        EXPECT_EQ(piped_ev[i][k].logprob, plain_ev[i][k].logprob) << i << " " << k;
        ASSERT_EQ(piped_ev[i][k].top_logprobs.size(), 3u);
        EXPECT_EQ(piped_ev[i][k].top_logprobs[0].token, plain_ev[i][k].top_logprobs[0].token);
      }
    }
  }
}

TEST(CudaEngine, CopyBlocksAndBadInput) {
  SKIP_WITHOUT_GPU();
  auto runner = std::move(CudaRunner::create(runner_options())).value();
  engine::Batch b;
  EXPECT_FALSE(runner->forward(b, nullptr).ok());  // before allocate_kv
  ASSERT_TRUE(runner->allocate_kv(8, 16).ok());
  EXPECT_EQ(runner->max_context(), 128);  // capped by the pool
  EXPECT_TRUE(runner->copy_blocks({{1, 2}, {3, 4}}).ok());
  EXPECT_FALSE(runner->copy_blocks({{1, 8}}).ok());
  b.tokens = {1}, b.positions = {0}, b.seq_of_token = {0}, b.slots = {0}, b.query_start = {0, 1}, b.seq_lens = {1};
  b.block_tables = {0}, b.max_blocks = 1, b.block_size = 8, b.logit_rows = {0};
  std::vector<float> lg(small_config().n_vocab);
  EXPECT_FALSE(runner->forward(b, lg.data()).ok());  // block size mismatch
  b.block_size = 16;
  EXPECT_TRUE(runner->forward(b, lg.data()).ok());
}

}  // namespace
}  // namespace citadel::gputest
