// CudaEmbeddingRunner (fp32 BERT encoder on the GPU) against its reference twin, CpuEmbeddingRunner, on the same
// random BertWeights built in memory (the GPU machine has no model files): the all-MiniLM-L6-v2 shape (6 layers, 384
// wide, 12 heads of 32, FFN 1536, vocab 30522, 512 positions) and small shapes whose head widths (16, 128) take the
// attention kernel's other paths. Random batches of 1 to 64 inputs of 1 to 256 tokens: per vector the cosine and the
// largest absolute difference, with stated bounds; batch invariance (an input alone against inside a batch, and
// batches split into several forwards); the CPU runner's errors for bad inputs; the device id. Skips without a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "base/rng.h"
#include "gpu_test_util.h"
#include "runtime/cuda_embedding_runner.h"
#include "runtime/cuda_runner.h"
#include "runtime/embedding_runner.h"
#include "runtime/runner_factory.h"

namespace citadel::gputest {
namespace {

// The stated bounds (fp32 on both sides; only the summation order differs): unit vectors agree to a cosine of
// 1 - 1e-5 and to 1e-4 in every component; the same input alone or inside a batch to 1e-5 (cuBLAS may pick another
// algorithm for another row count, so bit equality is not promised on the GPU).
constexpr double kMinCosine = 0.99999;
constexpr double kMaxAbs = 1e-4;
constexpr double kBatchInvariance = 1e-5;

struct Shape {
  const char* name;
  int64_t dim, n_layers, n_heads, ffn_dim, n_vocab, n_positions;
};
constexpr Shape kMiniLm{"minilm-l6", 384, 6, 12, 1536, 30522, 512};
constexpr Shape kTiny{"tiny (head_dim 16)", 64, 2, 4, 128, 97, 300};
constexpr Shape kWideHeads{"wide heads (head_dim 128)", 256, 1, 2, 512, 300, 300};

std::unique_ptr<BertWeights> weights(const Shape& s, uint64_t seed) {
  ModelConfig c;
  c.dim = s.dim, c.n_layers = s.n_layers, c.n_heads = s.n_heads, c.head_dim = s.dim / s.n_heads;
  c.ffn_dim = s.ffn_dim, c.n_vocab = s.n_vocab, c.norm_eps = 1e-12;
  return random_bert_weights(c, s.n_positions, seed);
}

// n inputs (1..max_inputs when n == 0) of 1 to max_len tokens: mostly short, some long, as real traffic.
std::vector<std::vector<int32_t>> random_batch(Xoshiro256& rng, int64_t n_vocab, int max_len, int n = 0) {
  auto below = [&](uint64_t k) { return static_cast<int>(rng.next() % k); };
  if (n == 0) n = 1 + below(64);
  std::vector<std::vector<int32_t>> batch(static_cast<size_t>(n));
  for (auto& in : batch) {
    const int r = below(10);
    const int len = r < 7 ? 1 + below(std::min(32, max_len)) : r < 9 ? 1 + below(std::min(128, max_len))
                                                                       : 1 + below(max_len);
    for (int t = 0; t < len; ++t) in.push_back(below(static_cast<uint64_t>(n_vocab)));
  }
  return batch;
}

struct Diff {
  double min_cosine = 1.0, max_abs = 0.0;
};
Diff compare(const std::vector<float>& a, const std::vector<float>& b, int d) {
  Diff r;
  for (size_t i = 0; i < a.size() / d; ++i) {
    double ab = 0, aa = 0, bb = 0;
    for (int j = 0; j < d; ++j) {
      const double x = a[i * d + j], y = b[i * d + j];
      ab += x * y, aa += x * x, bb += y * y;
      r.max_abs = std::max(r.max_abs, std::abs(x - y));
    }
    r.min_cosine = std::min(r.min_cosine, ab / std::sqrt(aa * bb));
  }
  return r;
}

class CudaEmbedding : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_GPU(); }

  // Both runners over the same weights: the CPU one owns them, the CUDA one uploads them.
  void make(const Shape& s, runtime::EmbeddingRunnerOptions opts, uint64_t seed = 7) {
    cpu_ = std::make_unique<runtime::CpuEmbeddingRunner>(weights(s, seed), opts);
    auto g = runtime::CudaEmbeddingRunner::create(cpu_->weights(), opts);
    ASSERT_TRUE(g.ok()) << g.status().to_string();
    gpu_ = std::move(*g);
    ASSERT_EQ(gpu_->dim(), cpu_->dim());
    ASSERT_EQ(gpu_->max_tokens(), cpu_->max_tokens());
  }

  // Random batches through both runners; returns the worst differences over all of them.
  Diff run_batches(const Shape& s, int n_batches, uint64_t seed) {
    Xoshiro256 rng(seed);
    Diff worst;
    const int d = cpu_->dim();
    for (int b = 0; b < n_batches; ++b) {
      // The first batch: 64 inputs; the second: one input of the longest length; then random.
      auto batch = b == 0 ? random_batch(rng, s.n_vocab, 256, 64) : random_batch(rng, s.n_vocab, 256, b == 1 ? 1 : 0);
      if (b == 1) batch[0].resize(256, 5);
      std::vector<float> want(batch.size() * d), got(batch.size() * d, -1.0f);
      EXPECT_TRUE(cpu_->embed(batch, want.data()).ok());
      const Status st = gpu_->embed(batch, got.data());
      EXPECT_TRUE(st.ok()) << st.to_string();
      const Diff df = compare(want, got, d);
      EXPECT_GT(df.min_cosine, kMinCosine) << s.name << " batch " << b << " (" << batch.size() << " inputs)";
      EXPECT_LT(df.max_abs, kMaxAbs) << s.name << " batch " << b << " (" << batch.size() << " inputs)";
      worst.min_cosine = std::min(worst.min_cosine, df.min_cosine);
      worst.max_abs = std::max(worst.max_abs, df.max_abs);
    }
    std::printf("[%s] cuda vs cpu over %d batches: worst cosine %.9f (1 - cos = %.3g), max abs %.3g\n", s.name,
                n_batches, worst.min_cosine, 1.0 - worst.min_cosine, worst.max_abs);
    return worst;
  }

  std::unique_ptr<runtime::CpuEmbeddingRunner> cpu_;
  std::unique_ptr<runtime::CudaEmbeddingRunner> gpu_;
};

TEST_F(CudaEmbedding, MiniLmShapeMatchesTheCpuRunner) {
  make(kMiniLm, {.max_tokens = 256});
  run_batches(kMiniLm, 6, 11);
}

TEST_F(CudaEmbedding, SmallShapesMatchTheCpuRunner) {
  for (const Shape& s : {kTiny, kWideHeads}) {
    make(s, {.max_tokens = 256});
    run_batches(s, 8, 12);
  }
}

TEST_F(CudaEmbedding, UnnormalisedPoolingMatchesTheCpuRunner) {
  make(kTiny, {.max_tokens = 256, .normalize = false});
  Xoshiro256 rng(13);
  const auto batch = random_batch(rng, kTiny.n_vocab, 256, 20);
  const int d = cpu_->dim();
  std::vector<float> want(batch.size() * d), got(batch.size() * d);
  ASSERT_TRUE(cpu_->embed(batch, want.data()).ok());
  ASSERT_TRUE(gpu_->embed(batch, got.data()).ok());
  double norm = 0;
  for (int j = 0; j < d; ++j) norm += double(want[j]) * want[j];
  EXPECT_GT(std::abs(std::sqrt(norm) - 1.0), 1e-3) << "the mean is not a unit vector: this checks pooling alone";
  const Diff df = compare(want, got, d);
  EXPECT_GT(df.min_cosine, kMinCosine);
  EXPECT_LT(df.max_abs, kMaxAbs * std::sqrt(norm));
}

// An input alone gives the vector it gets inside a batch; a batch split into several forwards (max_batch_tokens
// smaller than the batch) gives the vectors of one forward.
TEST_F(CudaEmbedding, BatchInvariance) {
  make(kMiniLm, {.max_tokens = 256});
  auto split = runtime::CudaEmbeddingRunner::create(cpu_->weights(), {.max_tokens = 256, .max_batch_tokens = 300});
  ASSERT_TRUE(split.ok()) << split.status().to_string();
  Xoshiro256 rng(17);
  const auto batch = random_batch(rng, kMiniLm.n_vocab, 256, 40);
  const int d = gpu_->dim();
  std::vector<float> whole(batch.size() * d), pieces(batch.size() * d), solo(d);
  ASSERT_TRUE(gpu_->embed(batch, whole.data()).ok());
  ASSERT_TRUE((*split)->embed(batch, pieces.data()).ok());
  EXPECT_LT(compare(whole, pieces, d).max_abs, kBatchInvariance);
  double worst = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    ASSERT_TRUE(gpu_->embed({batch[i]}, solo.data()).ok());
    for (int j = 0; j < d; ++j) worst = std::max(worst, double(std::abs(solo[j] - whole[i * d + j])));
  }
  EXPECT_LT(worst, kBatchInvariance);
  std::printf("[minilm-l6] alone vs in a batch of %zu: max abs %.3g\n", batch.size(), worst);
}

// The CPU runner's checks, shared: the same codes and messages; the runner keeps working afterwards.
TEST_F(CudaEmbedding, BadInputsGetTheCpuRunnersErrors) {
  make(kTiny, {.max_tokens = 32});
  const int d = gpu_->dim();
  std::vector<float> out(3 * d);
  const std::vector<std::vector<std::vector<int32_t>>> bad = {
      {{}}, {{1, 2}, std::vector<int32_t>(33, 1)}, {{1, 97, 2}}, {{1, -1, 2}}, {{3}, {4, 5}, {}}};
  for (const auto& batch : bad) {
    const Status want = cpu_->embed(batch, out.data());
    const Status got = gpu_->embed(batch, out.data());
    EXPECT_EQ(want.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(got.code(), want.code());
    EXPECT_EQ(got.message(), want.message());
  }
  std::vector<float> a(d), b(d);
  ASSERT_TRUE(cpu_->embed({{1, 2, 3}}, a.data()).ok());
  ASSERT_TRUE(gpu_->embed({{1, 2, 3}}, b.data()).ok());
  EXPECT_GT(compare(a, b, d).min_cosine, kMinCosine);
}

// A missing device id is refused before anything is allocated; the factory builds the CUDA runner for device cuda;
// every call leaves the calling thread's current device as it found it.
TEST_F(CudaEmbedding, DeviceIdAndFactory) {
  const int n = runtime::cuda_device_count();
  auto missing = runtime::CudaEmbeddingRunner::create(*weights(kTiny, 1), {.device = "cuda", .cuda_device = n});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("does not exist"), std::string::npos) << missing.status().message();

  const int last = n - 1;
  auto r = runtime::make_embedding_runner(weights(kTiny, 1), {.max_tokens = 64, .device = "cuda", .cuda_device = last});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  auto* cuda_runner = dynamic_cast<runtime::CudaEmbeddingRunner*>(r->get());
  ASSERT_NE(cuda_runner, nullptr);
  EXPECT_EQ(cuda_runner->cuda_device(), last);
  EXPECT_GT(cuda_runner->device_bytes(), int64_t{97} * 64 * 4);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  std::vector<float> out(64);
  ASSERT_TRUE((*r)->embed({{1, 2, 3}}, out.data()).ok());
  int current = -1;
  ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, 0);

  auto cpu = runtime::make_embedding_runner(weights(kTiny, 1), {.max_tokens = 64});
  ASSERT_TRUE(cpu.ok());
  EXPECT_NE(dynamic_cast<runtime::CpuEmbeddingRunner*>(cpu->get()), nullptr);
  std::vector<float> want(64);
  ASSERT_TRUE((*cpu)->embed({{1, 2, 3}}, want.data()).ok());
  EXPECT_GT(compare(want, out, 64).min_cosine, kMinCosine);
}

}  // namespace
}  // namespace citadel::gputest
