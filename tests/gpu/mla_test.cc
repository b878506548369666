// MLA kernel behaviour beyond the op-parity reference (tests/ops covers the values): mla_attention captured once in a
// CUDA graph and replayed with other seq_lens / positions gives what a direct launch gives for those (the grid depends
// only on (T, n_heads)), and every plan of one input agrees with the dispatcher's up to fp32 summation order (the
// tensor-core plan up to its bf16 probabilities).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/mla.h"

namespace citadel::gputest {
namespace {

namespace ck = citadel::cuda;

struct MlaSetup {
  static constexpr int kH = 16, kNope = 128, kRope = 64, kR = 512, kL = kR + kRope, kBs = 16, kMaxBlocks = 80;
  int B = 0;
  std::vector<int32_t> tables;
  DevArray<uint16_t> cache, q_lat, out;
  DevArray<int32_t> d_tables, d_lens, d_pos;
  explicit MlaSetup(int b, std::mt19937& rng)
      : B(b),
        tables(make_tables(b, rng)),
        cache(random_bf16(size_t(b) * kMaxBlocks * kBs * kL, rng, 1.f)),
        q_lat(random_bf16(size_t(b) * kH * kL, rng, 1.f)),
        out(static_cast<size_t>(b) * kH * kR),
        d_tables(tables),
        d_lens(static_cast<size_t>(b)),
        d_pos(static_cast<size_t>(b)) {}
  static std::vector<int32_t> make_tables(int b, std::mt19937& rng) {
    std::vector<int32_t> t(size_t(b) * kMaxBlocks);
    std::iota(t.begin(), t.end(), 0);
    std::shuffle(t.begin(), t.end(), rng);
    return t;
  }
  // Decode: token b is sequence b at position lens[b] - 1.
  void set_lens(const std::vector<int32_t>& lens) {
    d_lens.upload(lens);
    std::vector<int32_t> pos(lens);
    for (int32_t& x : pos) --x;
    d_pos.upload(pos);
  }
  ck::MlaAttention params() const {
    ck::MlaAttention p;
    p.cache = cache.p, p.block_tables = d_tables.p, p.seq_lens = d_lens.p, p.positions = d_pos.p;
    p.max_blocks_per_seq = kMaxBlocks, p.block_size = kBs, p.scale = 0.07f;
    return p;
  }
  static ck::MlaShape shape() { return ck::MlaShape{kH, kNope, kRope, kR}; }
};

TEST(CudaMla, GraphReplayFollowsSeqLens) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  for (int B : {1, 3, 40}) {
    MlaSetup m(B, rng);
    cudaStream_t s;
    ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
    std::vector<int32_t> lens_a(static_cast<size_t>(B)), lens_b(static_cast<size_t>(B));
    for (int b = 0; b < B; ++b) lens_a[b] = 1 + (37 * b + 5) % 200, lens_b[b] = 300 + (997 * b) % 960;
    auto direct = [&](const std::vector<int32_t>& lens) {
      m.set_lens(lens);
      ck::mla_attention(m.params(), MlaSetup::shape(), m.q_lat.p, B, m.out.p, s);
      EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
      return m.out.download();
    };
    const auto want_a = direct(lens_a), want_b = direct(lens_b);
    ASSERT_NE(want_a, want_b);

    m.set_lens(lens_a);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    ck::mla_attention(m.params(), MlaSetup::shape(), m.q_lat.p, B, m.out.p, s);
    ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (const auto* lens : {&lens_a, &lens_b, &lens_a}) {
      m.set_lens(*lens);
      cudaMemset(m.out.p, 0xff, m.out.n * sizeof(uint16_t));
      ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
      EXPECT_EQ(m.out.download(), lens == &lens_b ? want_b : want_a) << "B " << B;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(s);
  }
}

// Every plan (heads per block x cluster size) against the dispatcher's on one decode batch of long contexts.
TEST(CudaMla, PlansAgree) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  const int B = 2;
  MlaSetup m(B, rng);
  m.set_lens({1280, 77});
  ck::mla_attention(m.params(), MlaSetup::shape(), m.q_lat.p, B, m.out.p, nullptr);
  const auto want = to_f32(m.out.download());
  for (int hb : {4, 16})
    for (int splits : {1, 2, 4, 8}) {
      cudaMemset(m.out.p, 0xff, m.out.n * sizeof(uint16_t));
      ck::mla_attention_run(m.params(), MlaSetup::shape(), m.q_lat.p, B, m.out.p, ck::MlaPlan{hb, splits}, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_LT(nmse(to_f32(m.out.download()), want), 1e-5) << "hb " << hb << " splits " << splits;
    }
  cudaMemset(m.out.p, 0xff, m.out.n * sizeof(uint16_t));  // tensor cores: bf16 probabilities
  ck::mla_attention_run(m.params(), MlaSetup::shape(), m.q_lat.p, B, m.out.p, ck::MlaPlan{16, 1, true}, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_LT(nmse(to_f32(m.out.download()), want), 3e-5) << "tensor cores";
}

}  // namespace
}  // namespace citadel::gputest
