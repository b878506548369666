// The GPU test binary loads every CUDA kernel when its context starts: CUDA_MODULE_LOADING=EAGER, set here during
// static initialisation, before main and so before the first CUDA call (unless the environment already names a
// mode). The tests that put several tensor-parallel ranks on one device need it (runtime/peer_all_reduce.h: under
// lazy loading a kernel's first launch may wait on another rank's collective kernel that waits on it), and one
// setting for the whole binary keeps every test under the same loading mode.
#include <gtest/gtest.h>

#include <cstdlib>

#include "runtime/peer_all_reduce.h"

namespace {

const bool kEagerSet = [] { return setenv("CUDA_MODULE_LOADING", "EAGER", /*overwrite=*/0) == 0; }();

TEST(CudaModuleLoading, TheTestBinaryLoadsKernelsEagerly) {
  ASSERT_TRUE(kEagerSet);
  EXPECT_TRUE(citadel::runtime::eager_module_loading())
      << "CUDA_MODULE_LOADING=" << std::getenv("CUDA_MODULE_LOADING")
      << " in the environment: the tests with ranks sharing a device will fail (peer_all_reduce.h)";
}

}  // namespace
