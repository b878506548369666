// The CUDA warm-up (runtime/cuda_runner.h warm_up_decoder): it runs every prefill M bucket and every decode batch
// bucket (greedy and sampled) on a fresh decoder without error, and a runner that warmed up gives the same greedy
// tokens through the engine as one that did not (the KV blocks it wrote are written again before they are read;
// GEMM autotuning off in both, so both use the same algorithms).
// Skips without a GPU.
#include <gtest/gtest.h>

#include "cpu_model.h"
#include "engine/engine.h"
#include "gpu_test_util.h"
#include "runtime/cuda_runner.h"

namespace citadel::gputest {
namespace {

runtime::CudaRunnerOptions options(bool warm_up) {
  runtime::CudaRunnerOptions o;
  o.config = small_config();
  o.decoder.max_batch = 6, o.decoder.max_step_tokens = 96, o.decoder.max_seq_len = 256;  // buckets 1..4, 6; 16..64
  o.decoder.verbose = false;
  o.synthetic_seed = 9;
  o.warm_up = warm_up;
  o.decoder.gemm_autotune = false;  // heuristic algorithms: the same in both runners, so the same rounding
  return o;
}

std::vector<std::vector<int32_t>> greedy(bool warm_up) {
  auto runner = runtime::CudaRunner::create(options(warm_up));
  EXPECT_TRUE(runner.ok()) << runner.status().to_string();
  if (!runner.ok()) return {};
  engine::EngineConfig ec;
  ec.n_blocks = 32, ec.block_size = 16, ec.max_batched_tokens = 96, ec.max_seqs = 6, ec.watermark = 0;
  engine::Engine eng(runner->get(), ec);
  EXPECT_TRUE(eng.init().ok());
  std::vector<std::shared_ptr<engine::RequestHandle>> hs;
  for (int i = 0; i < 5; ++i) {
    engine::GenerateRequest r;
    r.id = "r" + std::to_string(i);
    r.prompt = {1, 2, 3, static_cast<int32_t>(7 + i)};
    for (int j = 0; j < 20 * i; ++j) r.prompt.push_back(static_cast<int32_t>((j * 7 + i) % 50 + 1));
    r.max_tokens = 8;
    r.sampling.temperature = 0;
    auto h = eng.submit(std::move(r));
    EXPECT_TRUE(h.ok());
    if (h.ok()) hs.push_back(*h);
  }
  for (int s = 0; s < 1000 && !eng.idle(); ++s) eng.step();
  std::vector<std::vector<int32_t>> out;
  for (auto& h : hs) {
    std::vector<int32_t> ids;
    engine::TokenEvent ev;
    while (h->try_pop(&ev))
      if (ev.token >= 0) ids.push_back(ev.token);
    EXPECT_EQ(ids.size(), 8u);
    out.push_back(ids);
  }
  return out;
}

TEST(CudaWarmUp, RunsEveryBucket) {
  SKIP_WITHOUT_GPU();
  runtime::CudaRunnerOptions o = options(false);
  auto runner = runtime::CudaRunner::create(o);
  ASSERT_TRUE(runner.ok()) << runner.status().to_string();
  ASSERT_TRUE((*runner)->allocate_kv(32, 16).ok());
  auto t = runtime::warm_up_decoder((*runner)->decoder(), o.decoder);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_GT(*t, 0.0);
}

TEST(CudaWarmUp, TokensEqualWithoutWarmUp) {
  SKIP_WITHOUT_GPU();
  const auto cold = greedy(false), warm = greedy(true);
  ASSERT_EQ(cold.size(), 5u);
  EXPECT_EQ(cold, warm);
}

}  // namespace
}  // namespace citadel::gputest
