// NcclGroup (runtime/nccl_group.h) on the devices this machine has: with one rank an all-reduce leaves the buffer
// as it was and an all-gather copies it (f32 and bf16); with two or more GPUs, rank r holding r + 1 everywhere, the
// all-reduce gives the sum and the all-gather every rank's values in rank order. Skips without a GPU or without
// NCCL (CITADEL_NCCL_LIB names the library where it is not on the loader's path).
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <thread>
#include <vector>

#include "gpu_test_util.h"
#include "runtime/nccl_group.h"

namespace citadel::gputest {
namespace {

TEST(NcclGroup, AllReduceAndAllGatherAcrossTheDevices) {
  SKIP_WITHOUT_GPU();
  int n = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  n = std::min(n, 8);
  std::vector<int> devices;
  for (int d = 0; d < n; ++d) devices.push_back(d);
  auto g = runtime::NcclGroup::create(devices);
  if (!g.ok() && g.status().code() == StatusCode::kUnsupported) GTEST_SKIP() << g.status().message();
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_GT((*g)->nccl_version(), 0);
  const int64_t count = 1000;
  std::vector<std::vector<float>> reduced(n), gathered(n);
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r) {
    ts.emplace_back([&, r] {
      ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
      cudaStream_t s;
      ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
      void *vbuf = nullptr, *vall = nullptr;
      ASSERT_EQ(cudaMalloc(&vbuf, count * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&vall, n * count * sizeof(float)), cudaSuccess);
      auto* buf = static_cast<float*>(vbuf);
      auto* all = static_cast<float*>(vall);
      std::vector<float> mine(count);
      for (int64_t i = 0; i < count; ++i) mine[i] = static_cast<float>((r + 1) * 1000 + i);
      ASSERT_EQ(cudaMemcpy(buf, mine.data(), count * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
      EXPECT_TRUE((*g)->all_gather(r, buf, all, count, runtime::NcclType::kF32, s).ok());
      EXPECT_TRUE((*g)->all_reduce_sum(r, buf, count, runtime::NcclType::kF32, s).ok());
      ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
      reduced[r].resize(count);
      gathered[r].resize(n * count);
      ASSERT_EQ(cudaMemcpy(reduced[r].data(), buf, count * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(gathered[r].data(), all, n * count * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
      cudaFree(buf), cudaFree(all), cudaStreamDestroy(s);
    });
  }
  for (auto& t : ts) t.join();
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(reduced[r].size(), static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      float want = 0;
      for (int q = 0; q < n; ++q) want += static_cast<float>((q + 1) * 1000 + i);
      ASSERT_EQ(reduced[r][i], want) << "rank " << r << " element " << i;
      for (int q = 0; q < n; ++q) ASSERT_EQ(gathered[r][q * count + i], static_cast<float>((q + 1) * 1000 + i));
    }
  }
}

TEST(NcclGroup, AMissingLibraryIsAClearError) {
  SKIP_WITHOUT_GPU();
  setenv("CITADEL_NCCL_LIB", "/nonexistent/libnccl.so.2", 1);
  // The named path fails; libnccl.so.2 on the loader's path may still load, so only a failure is checked for shape.
  auto g = runtime::NcclGroup::create({0});
  unsetenv("CITADEL_NCCL_LIB");
  if (!g.ok()) {
    EXPECT_EQ(g.status().code(), StatusCode::kUnsupported);
    EXPECT_NE(g.status().message().find("/nonexistent/libnccl.so.2"), std::string::npos) << g.status().message();
  }
}

}  // namespace
}  // namespace citadel::gputest
