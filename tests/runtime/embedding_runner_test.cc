// The host side of the embedding runners, on random in-memory BERT weights (no model file): the input checks and the
// packing both runners share, the runner factory's choice of device (and its errors in a build without CUDA), and
// random_bert_weights itself (deterministic, well conditioned). The CUDA runner against this CPU one:
// tests/gpu/embedding_cuda_test.cc.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "runtime/embedding_runner.h"
#include "runtime/runner_factory.h"

namespace citadel::runtime {
namespace {

ModelConfig tiny_shape() {
  ModelConfig c;
  c.dim = 32, c.n_layers = 2, c.n_heads = 4, c.head_dim = 8, c.ffn_dim = 64, c.n_vocab = 50, c.norm_eps = 1e-12;
  return c;
}

double cosine(const float* a, const float* b, int n) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < n; ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}

TEST(EmbeddingInputs, ChecksLengthsAndIds) {
  EXPECT_TRUE(check_embedding_inputs({{0}, {1, 2, 49}}, 3, 50).ok());
  const Status empty = check_embedding_inputs({{1}, {}}, 3, 50);
  EXPECT_EQ(empty.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.message(), "input 1 has 0 tokens; 1 to 3 are allowed");
  const Status long_one = check_embedding_inputs({{1, 2, 3, 4}}, 3, 50);
  EXPECT_EQ(long_one.message(), "input 0 has 4 tokens; 1 to 3 are allowed");
  const Status high = check_embedding_inputs({{1}, {1, 2, 50}}, 3, 50);
  EXPECT_EQ(high.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(high.message(), "input 1 token 2: id 50 is outside the vocabulary of 50");
  EXPECT_EQ(check_embedding_inputs({{-1}}, 3, 50).message(), "input 0 token 0: id -1 is outside the vocabulary of 50");
  EXPECT_TRUE(check_embedding_inputs({}, 3, 50).ok());
}

TEST(EmbeddingInputs, PacksWholeInputsUpToTheLimit) {
  const std::vector<std::vector<int32_t>> in = {{1, 2}, {3}, {4, 5, 6}, {7, 8, 9, 10, 11}, {12}};
  std::vector<int32_t> tokens = {99}, starts = {99};
  // 2 + 1 fit in 4; adding 3 would not.
  EXPECT_EQ(pack_embedding_inputs(in, 0, in.size(), 4, &tokens, &starts), 2u);
  EXPECT_EQ(tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(starts, (std::vector<int32_t>{0, 2, 3}));
  // An input longer than the limit still goes, alone.
  EXPECT_EQ(pack_embedding_inputs(in, 3, in.size(), 4, &tokens, &starts), 4u);
  EXPECT_EQ(tokens, (std::vector<int32_t>{7, 8, 9, 10, 11}));
  EXPECT_EQ(starts, (std::vector<int32_t>{0, 5}));
  // end bounds the range.
  EXPECT_EQ(pack_embedding_inputs(in, 1, 3, 100, &tokens, &starts), 3u);
  EXPECT_EQ(starts, (std::vector<int32_t>{0, 1, 4}));
}

TEST(EmbeddingInputs, MaxTokensStaysWithinThePositionTable) {
  EXPECT_EQ(embedding_max_tokens({.max_tokens = 0}, 512), 512);
  EXPECT_EQ(embedding_max_tokens({.max_tokens = 256}, 512), 256);
  EXPECT_EQ(embedding_max_tokens({.max_tokens = 1000}, 512), 512);
}

TEST(RandomBertWeights, DeterministicAndWellConditioned) {
  auto a = std::make_unique<CpuEmbeddingRunner>(random_bert_weights(tiny_shape(), 40, 3), EmbeddingRunnerOptions{});
  auto b = std::make_unique<CpuEmbeddingRunner>(random_bert_weights(tiny_shape(), 40, 3), EmbeddingRunnerOptions{});
  auto other = std::make_unique<CpuEmbeddingRunner>(random_bert_weights(tiny_shape(), 40, 4), EmbeddingRunnerOptions{});
  EXPECT_EQ(a->max_tokens(), 40);
  EXPECT_EQ(a->weights().config.arch, "bert");
  EXPECT_EQ(a->weights().config.n_vocab, 50);
  const std::vector<std::vector<int32_t>> in = {{1, 2, 3, 4}, {5, 6, 7, 8, 9, 10}, {1, 2, 3, 5}};
  const int d = a->dim();
  std::vector<float> x(in.size() * d), y(in.size() * d), z(in.size() * d);
  ASSERT_TRUE(a->embed(in, x.data()).ok());
  ASSERT_TRUE(b->embed(in, y.data()).ok());
  ASSERT_TRUE(other->embed(in, z.data()).ok());
  EXPECT_EQ(x, y);  // same seed, same vectors
  EXPECT_NE(x, z);
  for (size_t i = 0; i < in.size(); ++i) {
    double norm = 0;
    for (int j = 0; j < d; ++j) {
      ASSERT_TRUE(std::isfinite(x[i * d + j]));
      norm += double(x[i * d + j]) * x[i * d + j];
    }
    EXPECT_NEAR(norm, 1.0, 1e-5);
  }
  // Inputs differ in their vectors, and one token changed moves a vector less than a different input does.
  const double near = cosine(x.data(), x.data() + 2 * d, d), far = cosine(x.data(), x.data() + d, d);
  EXPECT_LT(far, 0.999);
  EXPECT_GT(near, far);
}

TEST(EmbeddingFactory, PicksTheRunnerByDevice) {
  const std::vector<std::vector<int32_t>> in = {{1, 2, 3}, {4}};
  auto direct = std::make_unique<CpuEmbeddingRunner>(random_bert_weights(tiny_shape(), 40, 9), EmbeddingRunnerOptions{});
  auto made = make_embedding_runner(random_bert_weights(tiny_shape(), 40, 9), {.device = "cpu"});
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  ASSERT_NE(dynamic_cast<CpuEmbeddingRunner*>(made->get()), nullptr);
  std::vector<float> want(2 * 32), got(2 * 32);
  ASSERT_TRUE(direct->embed(in, want.data()).ok());
  ASSERT_TRUE((*made)->embed(in, got.data()).ok());
  EXPECT_EQ(want, got);

  auto tpu = make_embedding_runner(random_bert_weights(tiny_shape(), 40, 9), {.device = "tpu"});
  ASSERT_FALSE(tpu.ok());
  EXPECT_EQ(tpu.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(make_embedding_runner(nullptr, {}).status().code(), StatusCode::kInvalidArgument);

  auto cuda = make_embedding_runner(random_bert_weights(tiny_shape(), 40, 9), {.device = "cuda"});
  if (!cuda_backend_built()) {
    ASSERT_FALSE(cuda.ok());
    EXPECT_EQ(cuda.status().code(), StatusCode::kUnsupported);
    EXPECT_NE(cuda.status().message().find("no CUDA backend"), std::string::npos) << cuda.status().message();
  } else if (!cuda.ok()) {  // a CUDA build on a machine without a device
    EXPECT_EQ(cuda.status().code(), StatusCode::kUnsupported) << cuda.status().to_string();
  }
}

}  // namespace
}  // namespace citadel::runtime
