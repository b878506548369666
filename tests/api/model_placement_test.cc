// A model's placement as load_model_host() checks it before anything is loaded: a CUDA device id on a CPU model or a
// negative one is refused naming the value; a CUDA device in a build without the CUDA backend is refused as such.
#include <gtest/gtest.h>

#include "api/model_loader.h"
#include "runtime/runner_factory.h"

namespace citadel::api {
namespace {

TEST(ModelPlacement, ACudaDeviceIdIsRefusedWhereItCannotApply) {
  ModelLoadOptions o;
  o.model = "debug:bytes";
  o.cuda_device = 1;  // device cpu
  auto cpu = load_model_host(o);
  ASSERT_FALSE(cpu.ok());
  EXPECT_EQ(cpu.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cpu.status().message(),
            "model debug:bytes: cuda_device 1 is set but the model runs on the cpu (device cuda uses it)");
  o.cuda_device = -3;
  auto negative = load_model_host(o);
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().message(), "cuda_device must be 0 or more, got -3");
  o.cuda_device = 0;  // the default is fine on the CPU
  EXPECT_TRUE(load_model_host(o).ok());
  if (runtime::cuda_backend_built()) GTEST_SKIP() << "a CUDA build: tests/gpu/cuda_device_test.cc checks the ids";
  runtime::RunnerOptions ro;
  ro.device = "cuda";
  ro.cuda_device = 1;
  auto r = runtime::make_model_runner("/nonexistent.gguf", ro);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
}

}  // namespace
}  // namespace citadel::api
