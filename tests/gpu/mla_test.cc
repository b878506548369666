// MLA kernel behaviour beyond the op-parity reference (tests/ops covers the values): mla_attention captured once in a
// CUDA graph and replayed with other seq_lens / positions gives what a direct launch gives for those (the grid depends
// only on (T, n_heads)), and every plan of one input agrees with the dispatcher's up to fp32 summation order (the
// tensor-core plan up to its bf16 probabilities).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
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
  for (int splits : {1, 2, 4, 8, 16}) {  // tensor cores: bf16 probabilities (16: a non-portable cluster)
    cudaMemset(m.out.p, 0xff, m.out.n * sizeof(uint16_t));
    ck::mla_attention_run(m.params(), MlaSetup::shape(), m.q_lat.p, B, m.out.p, ck::MlaPlan{16, splits, true}, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_LT(nmse(to_f32(m.out.download()), want), 3e-5) << "tensor cores, splits " << splits;
  }
}

// The tensor-core kernel's early key copies (decode: the first tile's rows but the step's own before the PDL wait)
// give the same bits as copying every key after it: contexts whose own row falls in a rank's first tile or later.
TEST(CudaMla, EarlyKeyCopiesChangeNothing) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  MlaSetup m(2, rng);
  for (const std::vector<int32_t>& lens :
       {std::vector<int32_t>{1280, 77}, std::vector<int32_t>{20, 33}, std::vector<int32_t>{1, 64}})
    for (int splits : {1, 2, 4, 8, 16}) {
      m.set_lens(lens);
      ck::MlaAttention p = m.params();
      std::vector<std::vector<uint16_t>> got;
      for (bool early : {false, true}) {
        p.early_keys = early;
        cudaMemset(m.out.p, 0xff, m.out.n * sizeof(uint16_t));
        ck::mla_attention_run(p, MlaSetup::shape(), m.q_lat.p, 2, m.out.p, ck::MlaPlan{16, splits, true}, nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        got.push_back(m.out.download());
      }
      EXPECT_EQ(got[0], got[1]) << "lens " << lens[0] << ", " << lens[1] << " splits " << splits;
    }
}

// The absorptions' per-head GEMV (small T) against fp64 on the same bf16 inputs: V2/V3's two shapes (W_UK: N 512,
// K 128; W_UV: N 128, K 512), every supported K, T up to the limit, padded strides (the gaps stay untouched), and the
// output rounded to bf16 once (NMSE at bf16 rounding).
TEST(CudaMla, HeadsGemvMatchesFp64) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(44);
  struct S {
    int T, H, N, K;
  };
  for (const S& s : {S{1, 16, 512, 128}, S{8, 16, 512, 128}, S{1, 16, 128, 512}, S{3, 16, 128, 512}, S{2, 3, 64, 64},
                     S{5, 2, 32, 256}, S{4, 7, 16, 1024}}) {
    SCOPED_TRACE("T " + std::to_string(s.T) + " H " + std::to_string(s.H) + " N " + std::to_string(s.N) + " K " +
                 std::to_string(s.K));
    ASSERT_TRUE(ck::heads_gemv_supported(s.T, s.N, s.K));
    const int64_t sx = s.K + 8, ldx = s.H * sx + 16, sy = s.N + 2, ldy = s.H * sy + 1;
    const auto x = random_bf16(size_t(s.T) * ldx, rng);
    const auto w = random_bf16(size_t(s.H) * s.N * s.K, rng, 0.1f);
    DevArray<uint16_t> dx(x), dw(w), y(size_t(s.T) * ldy);
    ck::heads_gemv_bf16(dx.p, ldx, sx, dw.p, y.p, ldy, sy, s.T, s.H, s.N, s.K, nullptr);
    const auto got = y.download();
    std::vector<float> out, ref;
    for (int t = 0; t < s.T; ++t)
      for (int h = 0; h < s.H; ++h) {
        for (int n = 0; n < s.N; ++n) {
          double acc = 0;
          for (int k = 0; k < s.K; ++k)
            acc += double(bf16_to_f32(w[(size_t(h) * s.N + n) * s.K + k])) * bf16_to_f32(x[t * ldx + h * sx + k]);
          ref.push_back(float(acc));
          out.push_back(bf16_to_f32(got[t * ldy + h * sy + n]));
        }
        for (int64_t n = s.N; n < sy && h * sy + n < ldy; ++n) ASSERT_EQ(got[t * ldy + h * sy + n], 0xffff) << n;
      }
    EXPECT_LT(nmse(out, ref), 2e-5);
  }
  EXPECT_FALSE(ck::heads_gemv_supported(ck::kHeadsGemvMaxTokens + 1, 512, 128));
  EXPECT_FALSE(ck::heads_gemv_supported(1, 512, 96));  // K / 8 not a power of two
  EXPECT_FALSE(ck::heads_gemv_supported(1, 4, 128));   // N not a multiple of a warp's 8 rows
}

// The rope work and the W_UK absorption in one launch (mla_rope_absorb) write what mla_rope_kv_write and
// heads_gemv_bf16 write, bit for bit: kv_a in place, the cache rows (a skipped slot included), both parts of q_lat.
TEST(CudaMla, RopeAbsorbEqualsTheTwoLaunches) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(45);
  const ck::MlaShape m{16, 128, 64, 512};
  const int qk = 192, L = 576, r = 512;
  for (int T : {1, 3, ck::kHeadsGemvMaxTokens}) {
    SCOPED_TRACE(T);
    const auto q = random_bf16(size_t(T) * 16 * qk, rng), kv = random_bf16(size_t(T) * L, rng, 2.f);
    const auto kb = random_bf16(size_t(16) * r * 128, rng, 0.1f), w = random_bf16(size_t(r), rng);
    std::vector<float> inv_freq(32);
    for (int i = 0; i < 32; ++i) inv_freq[i] = float(std::pow(10000.0, -i / 32.0));
    std::vector<int32_t> pos(T), slots(T);
    for (int t = 0; t < T; ++t) pos[t] = int32_t(rng() % 4000), slots[t] = t == 1 ? -1 : 3 * t + 2;
    DevArray<uint16_t> dq(q), dkb(kb), dw(w);
    DevArray<float> dfreq(inv_freq);
    DevArray<int32_t> dpos(pos), dslots(slots);
    std::vector<uint16_t> got[2][3];  // [way][kv_a, q_lat, cache]
    for (int way = 0; way < 2; ++way) {
      DevArray<uint16_t> dkv(kv), q_lat(size_t(T) * 16 * L), cache(size_t(3 * T + 3) * L);
      if (way == 0) {
        ck::mla_rope_kv_write(dq.p, dkv.p, q_lat.p, m, T, dpos.p, dfreq.p, 1.f, dw.p, 1e-6f, dslots.p, cache.p,
                              nullptr);
        ck::heads_gemv_bf16(dq.p, 16 * qk, qk, dkb.p, q_lat.p, 16 * L, L, T, 16, r, 128, nullptr);
      } else {
        ck::mla_rope_absorb(dq.p, dkv.p, q_lat.p, m, T, dpos.p, dfreq.p, 1.f, dw.p, 1e-6f, dslots.p, cache.p, dkb.p,
                            nullptr);
      }
      got[way][0] = dkv.download(), got[way][1] = q_lat.download(), got[way][2] = cache.download();
    }
    for (int i = 0; i < 3; ++i) EXPECT_EQ(got[0][i], got[1][i]) << "output " << i;
    int written = 0;  // the q_lat columns of both parts were written (not the poison)
    for (uint16_t v : got[1][1]) written += v != 0xffff;
    EXPECT_EQ(written, T * 16 * L);
  }
}

}  // namespace
}  // namespace citadel::gputest
