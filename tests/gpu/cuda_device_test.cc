// A model's CUDA device id (CudaDecoderOptions::device): an id the machine lacks is refused at CudaRunner::create,
// before any weight is read, naming the ids there are; a runner on the last device runs the engine from a thread
// whose current device is another one, every call leaves that thread's current device as it found it, and its
// tokens equal a runner's on device 0 (same synthetic weights, same kernels). Skips without a GPU; with one card the
// "last device" is device 0 (the cross-device part then checks the restore only).
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <thread>

#include "cpu_model.h"
#include "engine/engine.h"
#include "gpu_test_util.h"
#include "runtime/cuda_runner.h"

namespace citadel::gputest {
namespace {

runtime::CudaRunnerOptions options(int device) {
  runtime::CudaRunnerOptions o;
  o.config = small_config();
  o.decoder.device = device;
  o.decoder.max_batch = 4, o.decoder.max_step_tokens = 64, o.decoder.max_seq_len = 256;
  o.decoder.verbose = false;
  o.synthetic_seed = 5;
  return o;
}

// Greedy tokens of two prompts through the engine, on a thread whose current device is `thread_device`; also checks
// the thread's current device after every engine step.
std::vector<std::vector<int32_t>> generate(int device, int thread_device) {
  std::vector<std::vector<int32_t>> out;
  std::thread t([&] {
    EXPECT_EQ(cudaSetDevice(thread_device), cudaSuccess);
    auto runner = runtime::CudaRunner::create(options(device));
    ASSERT_TRUE(runner.ok()) << runner.status().to_string();
    engine::EngineConfig ec;
    ec.n_blocks = 32, ec.block_size = 16, ec.max_batched_tokens = 64, ec.max_seqs = 2, ec.watermark = 0;
    engine::Engine eng(runner->get(), ec);
    ASSERT_TRUE(eng.init().ok());
    std::vector<std::shared_ptr<engine::RequestHandle>> hs;
    for (int i = 0; i < 2; ++i) {
      engine::GenerateRequest r;
      r.id = "r" + std::to_string(i);
      r.prompt = {1, 2, 3, static_cast<int32_t>(7 + i)};
      r.max_tokens = 6;
      r.sampling.temperature = 0;
      auto h = eng.submit(std::move(r));
      ASSERT_TRUE(h.ok());
      hs.push_back(*h);
    }
    for (int steps = 0; !eng.idle() && steps < 100; ++steps) {
      eng.step();
      int current = -1;
      EXPECT_EQ(cudaGetDevice(&current), cudaSuccess);
      EXPECT_EQ(current, thread_device);
    }
    for (const auto& h : hs) {
      EXPECT_TRUE(h->final_status().ok()) << h->final_status().to_string();
      std::vector<int32_t> ids;
      engine::TokenEvent ev;
      while (h->try_pop(&ev))
        if (ev.token >= 0) ids.push_back(ev.token);
      out.push_back(ids);
    }
  });
  t.join();
  return out;
}

TEST(CudaDevice, AnIdBeyondTheCountIsRefusedAtCreate) {
  SKIP_WITHOUT_GPU();
  int n = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  for (int bad : {n, n + 7, -1}) {
    auto r = runtime::CudaRunner::create(options(bad));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("cuda device " + std::to_string(bad) + " does not exist"), std::string::npos)
        << r.status().message();
  }
}

TEST(CudaDevice, TheLastDeviceRunsFromAnotherThreadsDeviceAndMatchesDeviceZero) {
  SKIP_WITHOUT_GPU();
  int n = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  const auto on_zero = generate(0, 0);
  const auto on_last = generate(n - 1, 0);
  ASSERT_EQ(on_zero.size(), 2u);
  EXPECT_EQ(on_zero, on_last);
  EXPECT_EQ(on_zero[0].size(), 6u);
}

}  // namespace
}  // namespace citadel::gputest
