// fp32 exact-path kernels (src/kernels/cuda/exact.cu): the contracts the CPU reference cannot state. Their parity
// with the CPU reference ops (embedding_f32, gather_rows_f32, add_rmsnorm_f32, gemv_f32, silu_mul_f32,
// rope_kv_write_f32, paged_attention_f32 decode / prefill / split decode) is the op-parity harness (tests/ops/,
// dtype f32 on the cuda backend, bounds 1e-12 elementwise and 1e-10 for reductions, copies exact).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::gputest {
namespace {

namespace ck = citadel::cuda;

// Token ids outside [0, vocab) give a zero row (the CPU embedding refuses them with a Status instead).
TEST(CudaExact, EmbeddingOutOfRangeGivesZeroRow) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(101);
  for (int D : {100, 256}) {
    const int V = 1000;
    auto table = random_f32(size_t(V) * D, rng);
    std::vector<int32_t> tok = {0, 999, 5, -1, 17, 1000, 5};
    const int T = int(tok.size());
    DevArray<float> dt(table), out(size_t(T) * D);
    DevArray<int32_t> dtok(tok);
    ck::embedding_f32(dt.p, dtok.p, out.p, T, D, V, nullptr);
    auto o = out.download();
    for (int t = 0; t < T; ++t) {
      const bool ok = tok[t] >= 0 && tok[t] < V;
      for (int i = 0; i < D; ++i)
        ASSERT_EQ(o[size_t(t) * D + i], ok ? table[size_t(tok[t]) * D + i] : 0.f) << "t " << t << " i " << i;
    }
  }
}

}  // namespace
}  // namespace citadel::gputest
