// Batched == alone through the real Engine and the real CpuRunner: concurrent greedy requests of mixed lengths
// (sharing a prefix, so the prefix cache and copy-on-write are exercised, and with a small token budget, so chunked
// prefill mixes with decode) give exactly the tokens each gives when run alone. The CPU kernels compute each output
// row independently of the batch, so the comparison is exact.
#include <gtest/gtest.h>

#include <filesystem>

#include "base/rng.h"
#include "model/synth.h"
#include "model_test_util.h"
#include "tests/test_util.h"

namespace citadel {
namespace {

namespace fs = std::filesystem;
using model_testing::synth_file;

// Four prompts: two share a 37-token prefix (not block aligned), one repeats another exactly, one is short.
std::vector<std::vector<int32_t>> mixed_prompts(int n_vocab, uint64_t seed) {
  Xoshiro256 rng(seed);
  auto rand_ids = [&](int n) {
    std::vector<int32_t> v(n);
    for (auto& t : v) t = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(n_vocab));
    return v;
  };
  std::vector<int32_t> shared = rand_ids(37);
  std::vector<int32_t> a = shared, b = shared;
  for (int32_t t : rand_ids(9)) a.push_back(t);
  for (int32_t t : rand_ids(21)) b.push_back(t);
  return {a, b, rand_ids(3), a};
}

void check_batched_equals_alone(const ModelWeights& w, int n_new, int budget) {
  const auto prompts = mixed_prompts(static_cast<int>(w.config.n_vocab), 7);
  const std::vector<int> max_tokens = {n_new, n_new / 2 + 1, n_new, n_new - 3};
  runtime::CpuRunner runner(&w, runtime::CpuRunnerOptions{budget, 0});
  auto together = model_testing::engine_greedy(&runner, prompts, max_tokens, 64, budget);
  ASSERT_EQ(together.size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    runtime::CpuRunner solo_runner(&w);
    auto alone = model_testing::engine_greedy(&solo_runner, {prompts[i]}, {max_tokens[i]}, 64);
    ASSERT_EQ(alone.size(), 1u);
    EXPECT_EQ(together[i], alone[0]) << "request " << i;
    EXPECT_EQ(static_cast<int>(alone[0].size()), max_tokens[i]);
    // And straight through the runner without the engine (identity block table, one token per step).
    model_testing::SoloRunner direct(&w, static_cast<int>(prompts[i].size()) + max_tokens[i]);
    EXPECT_EQ(direct.greedy(prompts[i], max_tokens[i]), alone[0]) << "request " << i;
  }
}

TEST(Batched, SynthTinyLlamaEqualsAlone) {
  const std::string path = synth_file("llama", "tiny", 5, "f32");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  check_batched_equals_alone(**w, 20, 16);
  fs::remove(path);
}

TEST(Batched, SynthTinyQwen2Q8EqualsAlone) {
  const std::string path = synth_file("qwen2", "tiny", 6, "q8_0");
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  check_batched_equals_alone(**w, 20, 24);
  fs::remove(path);
}

TEST(Batched, SmolLM2EqualsAlone) {
  const std::string path = testing::model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (path.empty()) GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf not found (make test pulls it)";
  auto w = load_model(path, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  check_batched_equals_alone(**w, 12, 32);
}

}  // namespace
}  // namespace citadel
