// Parity of the fp32 exact-path kernels (src/kernels/cuda/exact.cu) with scalar CPU references on random inputs,
// outputs poisoned (NaN) before each run so that an unwritten element fails.
//
// Bounds: both sides compute in fp32 (the references in fp64), so the only differences are rounding and summation
// order: a relative error of a few fp32 ulps (~1e-7) per value, i.e. an NMSE of ~1e-14..1e-12. The bounds (1e-12 for
// the elementwise kernels, 1e-10 for the reductions over K or over a context of up to 1500 keys) keep two orders of
// magnitude of margin, while any indexing error, a missing bias, a causal offset off by one key or an fp32 RoPE angle
// (~1e-3 rad at position 30000) costs 1e-8 or (much) more. Copies (embedding, gather, residual add, KV writes of V)
// must be exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <tuple>
#include <utility>

#include "kernels/cuda/cuda_ops.h"
#include "ref_ops.h"

namespace citadel::gputest {
namespace {

namespace ck = citadel::cuda;

std::vector<float> random_f32(size_t n, std::mt19937& rng, float scale = 1.f) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

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

// Residual update exact (one fp32 add on both sides); the normalised output within 1e-12 of the fp64 reference.
TEST(CudaExact, AddRmsNorm) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(102);
  for (int D : {100, 896, 4096})
    for (bool with_delta : {true, false}) {
      const int T = 5;
      auto res = random_f32(size_t(T) * D, rng, 3.f), delta = random_f32(size_t(T) * D, rng, 3.f);
      auto w = random_f32(D, rng, 2.f);
      DevArray<float> dres(res), ddelta(delta), dw(w), dout(size_t(T) * D);
      ck::add_rmsnorm_f32(dres.p, with_delta ? ddelta.p : nullptr, dw.p, dout.p, T, D, 1e-6f, nullptr);
      std::vector<float> ref;
      ref_rmsnorm(res, with_delta ? &delta : nullptr, w, ref, T, D, 1e-6f);
      EXPECT_EQ(nmse(dres.download(), res), 0.0) << "residual, D " << D << " delta " << with_delta;
      const double e = nmse(dout.download(), ref);
      EXPECT_LT(e, 1e-12) << "D " << D << " delta " << with_delta;
      std::printf("add_rmsnorm_f32 D %d delta %d: nmse %.2e\n", D, int(with_delta), e);
    }
}

class CudaExactGemv : public ::testing::TestWithParam<int> {};

// M = 1, 3 (one m-block, partly used) and 11 (two m-blocks). K % 4 != 0 and a misaligned x take the scalar kernel.
TEST_P(CudaExactGemv, MatchesFp64Reference) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(103 + GetParam());
  const int M = GetParam();
  struct Shape { int N, K; bool bias; int x_offset; };
  for (Shape sh : {Shape{64, 256, true, 0}, Shape{64, 256, false, 0}, Shape{37, 99, true, 0},
                   Shape{300, 1027, false, 0}, Shape{5, 4096, true, 0}, Shape{130, 256, true, 1}, Shape{7, 3, true, 0}}) {
    const int N = sh.N, K = sh.K;
    auto x = random_f32(size_t(M) * K, rng), W = random_f32(size_t(N) * K, rng), b = random_f32(N, rng);
    std::vector<float> xs(size_t(M) * K + sh.x_offset, 0.f);  // x at an offset: x_offset 1 breaks 16-byte alignment
    std::copy(x.begin(), x.end(), xs.begin() + sh.x_offset);
    DevArray<float> dx(xs), dW(W), db(b), dy(size_t(M) * N);
    ck::gemv_f32(dx.p + sh.x_offset, dW.p, sh.bias ? db.p : nullptr, dy.p, M, N, K, nullptr);
    auto ref = ref_matmul(x, W, sh.bias ? b.data() : nullptr, M, N, K);
    const double e = nmse(dy.download(), ref);
    const std::string what = "M " + std::to_string(M) + " N " + std::to_string(N) + " K " + std::to_string(K) +
                             " bias " + std::to_string(sh.bias) + " x_offset " + std::to_string(sh.x_offset);
    EXPECT_LT(e, 1e-10) << what;
    std::printf("gemv_f32 %s: nmse %.2e\n", what.c_str(), e);
  }
}
INSTANTIATE_TEST_SUITE_P(Batch, CudaExactGemv, ::testing::Values(1, 3, 11));

// Gates from -8 to 8 plus saturating ones (exp(-a) overflows to inf for a = -100: silu -> -0).
TEST(CudaExact, SiluMul) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(104);
  for (int F : {1000, 1027}) {
    const int T = 3;
    auto gu = random_f32(size_t(T) * 2 * F, rng, 8.f);
    gu[3] = -100.f, gu[4] = 100.f, gu[size_t(2) * F + 5] = 0.f;
    DevArray<float> dgu(gu), dout(size_t(T) * F);
    ck::silu_mul_f32(dgu.p, dout.p, T, F, nullptr);
    std::vector<float> ref(size_t(T) * F);
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < F; ++i) {
        const double g = gu[size_t(t) * 2 * F + i], u = gu[size_t(t) * 2 * F + F + i];
        ref[size_t(t) * F + i] = float(g / (1.0 + std::exp(-g)) * u);
      }
    const double e = nmse(dout.download(), ref);
    EXPECT_LT(e, 1e-12) << "F " << F;
    std::printf("silu_mul_f32 F %d: nmse %.2e\n", F, e);
  }
}

TEST(CudaExact, GatherRows) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(105);
  for (int cols : {100, 256}) {
    const int src_rows = 20;
    auto src = random_f32(size_t(src_rows) * cols, rng);
    std::vector<int32_t> index = {19, 0, 7, 7, 3};
    const int rows = int(index.size());
    DevArray<float> ds(src), dd(size_t(rows) * cols);
    DevArray<int32_t> di(index);
    ck::gather_rows_f32(ds.p, di.p, dd.p, rows, cols, nullptr);
    auto d = dd.download();
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) ASSERT_EQ(d[size_t(r) * cols + c], src[size_t(index[r]) * cols + c]) << r;
  }
}

// The CPU exact mode's RoPE (src/kernels/cpu/rope.cc): angle and cos/sin in fp64, rounded to fp32, rotation in fp32.
void rope_head_cpu(float* hp, int head_dim, int32_t pos, float theta, bool neox) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const double ang = pos * std::pow(double(theta), -2.0 * i / head_dim);
    const float c = float(std::cos(ang)), s = float(std::sin(ang));
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    const float x0 = hp[a], x1 = hp[b];
    hp[a] = x0 * c - x1 * s;
    hp[b] = x0 * s + x1 * c;
  }
}

// Rows [T][stride] = q (H heads) | k (n_kv heads) | v (n_kv heads) | 8 padding columns (must stay). Pools start
// random: slots not written (including token 2's, slot -1) must keep their values.
TEST(CudaExact, RopeKvWriteBothLayouts) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(106);
  for (int D : {64, 128})
    for (bool neox : {false, true}) {
      const int T = 6, H = 8, n_kv = 2, stride = (H + 2 * n_kv) * D + 8, n_slots = 48;
      const float theta = 1e6f;
      auto rows = random_f32(size_t(T) * stride, rng, 2.f);
      auto kpool = random_f32(size_t(n_slots) * n_kv * D, rng), vpool = random_f32(size_t(n_slots) * n_kv * D, rng);
      std::vector<int32_t> slots = {3, 47, -1, 0, 17, 5}, pos = {0, 7, 100, 4095, 30000, 1};
      DevArray<float> dr(rows), dk(kpool), dv(vpool);
      DevArray<int32_t> ds(slots), dp(pos);
      ck::rope_kv_write_f32(dr.p, T, stride, H, n_kv, D, dp.p, theta, neox ? ck::RopeLayout::kNeox : ck::RopeLayout::kNorm,
                            ds.p, dk.p, dv.p, nullptr);
      auto ref = rows;
      auto kref = kpool, vref = vpool;
      for (int t = 0; t < T; ++t) {
        float* r = &ref[size_t(t) * stride];
        for (int h = 0; h < H + n_kv; ++h) rope_head_cpu(r + h * D, D, pos[t], theta, neox);
        if (slots[t] < 0) continue;
        for (int c = 0; c < n_kv * D; ++c) {
          kref[size_t(slots[t]) * n_kv * D + c] = r[H * D + c];
          vref[size_t(slots[t]) * n_kv * D + c] = r[(H + n_kv) * D + c];
        }
      }
      const std::string what = "D " + std::to_string(D) + (neox ? " neox" : " norm");
      const auto got = dr.download();
      const double e = nmse(got, ref), ek = nmse(dk.download(), kref);
      EXPECT_LT(e, 1e-12) << "rows, " << what;
      EXPECT_LT(ek, 1e-12) << "K pool, " << what;
      EXPECT_EQ(nmse(dv.download(), vref), 0.0) << "V pool, " << what;
      for (int t = 0; t < T; ++t)  // V heads and padding untouched
        for (int c = (H + n_kv) * D; c < stride; ++c)
          ASSERT_EQ(got[size_t(t) * stride + c], rows[size_t(t) * stride + c]) << what << " t " << t << " c " << c;
      std::printf("rope_kv_write_f32 %s: nmse rows %.2e, K pool %.2e\n", what.c_str(), e, ek);
    }
}

// Paged fp32 cache of several sequences: blocks of block_size tokens drawn from a shuffled pool, the tables' unused
// entries pointing at spare blocks of garbage (reading past a context gives wrong values, not a fault).
struct PagedF32 {
  int n_kv = 4, D = 128, bs = 16, max_blocks = 0, n_blocks = 0;
  std::vector<int> lens;
  std::vector<int32_t> tables;
  std::vector<std::vector<float>> K, V;  // per sequence [ctx][n_kv][D]
  std::vector<float> kpool, vpool;       // [n_blocks][bs][n_kv][D]

  void build(std::mt19937& rng, std::vector<int> seq_lens) {
    lens = std::move(seq_lens);
    const int B = int(lens.size());
    max_blocks = 0;
    int used = 0;
    for (int l : lens) max_blocks = std::max(max_blocks, (l + bs - 1) / bs), used += (l + bs - 1) / bs;
    n_blocks = used + 5;
    std::vector<int32_t> perm(n_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const size_t row = size_t(n_kv) * D;
    kpool = random_f32(size_t(n_blocks) * bs * row, rng);
    vpool = random_f32(size_t(n_blocks) * bs * row, rng);
    tables.assign(size_t(B) * max_blocks, 0);
    int next = 0;
    std::uniform_int_distribution<int> spare(used, n_blocks - 1);
    K.resize(B), V.resize(B);
    for (int b = 0; b < B; ++b) {
      const int nb = (lens[b] + bs - 1) / bs;
      for (int i = 0; i < max_blocks; ++i) tables[size_t(b) * max_blocks + i] = i < nb ? perm[next++] : perm[spare(rng)];
      K[b].resize(size_t(lens[b]) * row), V[b].resize(size_t(lens[b]) * row);
      for (int t = 0; t < lens[b]; ++t) {
        const size_t slot = size_t(tables[size_t(b) * max_blocks + t / bs]) * bs + t % bs;
        std::copy_n(&kpool[slot * row], row, &K[b][t * row]);
        std::copy_n(&vpool[slot * row], row, &V[b][t * row]);
      }
    }
  }
};

struct AttnShape { int D, n_heads, n_kv; };

// Decode (seq < 0): query b is sequence b's newest token and sees its whole context. GQA 28/4 at head_dim 128, 16/2
// at 64 and 8/1 at 256; contexts of 1 token, a partial block, whole blocks, 300 and 1500 tokens. Each shape runs the
// one-pass kernel (bound 0) and the split one (paged_attention_f32_decode) with a bound equal to the longest context
// (partitions of a few dozen keys, 32 splits) and a larger one (splits past the short contexts are empty): every run
// matches the fp64 reference and gives the same bits twice.
TEST(CudaExact, PagedAttentionDecode) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(107);
  for (AttnShape sh : {AttnShape{128, 28, 4}, AttnShape{64, 16, 2}, AttnShape{256, 8, 1}}) {
    PagedF32 f;
    f.D = sh.D, f.n_kv = sh.n_kv;
    f.build(rng, {1, 37, 64, 300, 1500});
    const int B = int(f.lens.size()), H = sh.n_heads, q_stride = H * sh.D + 64;
    auto q = random_f32(size_t(B) * q_stride, rng, 2.f);
    DevArray<float> dk(f.kpool), dv(f.vpool), dq(q), out(size_t(B) * H * sh.D);
    DevArray<float> ws(size_t(ck::f32_decode_workspace_floats(B, H, sh.D)));
    DevArray<int32_t> dt(f.tables), dl(std::vector<int32_t>(f.lens.begin(), f.lens.end()));
    ck::PagedAttention p;
    p.block_tables = dt.p, p.seq_lens = dl.p, p.max_blocks_per_seq = f.max_blocks, p.block_size = f.bs;
    p.n_heads = H, p.n_kv_heads = sh.n_kv, p.head_dim = sh.D, p.scale = 1.f / std::sqrt(float(sh.D));
    for (int bound : {0, 1500, 4096}) {
      auto run = [&] {
        if (bound == 0)
          ck::paged_attention_f32(p, dk.p, dv.p, -1, dq.p, q_stride, B, out.p, nullptr);
        else
          ck::paged_attention_f32_decode(p, dk.p, dv.p, dq.p, q_stride, B, bound, out.p, ws.p, nullptr);
      };
      run();
      const auto o = out.download();
      cudaMemset(out.p, 0xff, sizeof(float) * out.n);  // a second run must give the same bits
      run();
      EXPECT_EQ(nmse(out.download(), o), 0.0) << "not deterministic, D " << sh.D << " bound " << bound;
      for (int b = 0; b < B; ++b) {
        std::vector<float> qb(q.begin() + size_t(b) * q_stride, q.begin() + size_t(b) * q_stride + H * sh.D), ref;
        ref_attention(qb, f.K[b], f.V[b], ref, 1, f.lens[b], H, sh.n_kv, sh.D, p.scale);
        std::vector<float> ob(o.begin() + size_t(b) * H * sh.D, o.begin() + size_t(b + 1) * H * sh.D);
        const double e = nmse(ob, ref);
        EXPECT_LT(e, 1e-10) << "seq " << b << " ctx " << f.lens[b] << " D " << sh.D << " bound " << bound;
        if (bound == 0)
          std::printf("paged_attention_f32 decode D %d G %d ctx %d: nmse %.2e\n", sh.D, H / sh.n_kv, f.lens[b], e);
      }
    }
  }
}

// Prefill (seq >= 0): the n_q queries are the last n_q tokens of sequence seq (causal, bottom-right aligned): a whole
// prompt, 45 new tokens after a 255-token cached prefix, one token after 1499, 200 after 1300. The reference shifted
// by one key (each query seeing one token less) must be far outside the bound: the test catches a wrong causal offset.
TEST(CudaExact, PagedAttentionPrefillCausal) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(108);
  // 128 and 64: the query-tiled kernel; 256: the one-query-per-block kernel.
  for (AttnShape sh : {AttnShape{128, 28, 4}, AttnShape{64, 9, 3}, AttnShape{256, 8, 1}}) {
    PagedF32 f;
    f.D = sh.D, f.n_kv = sh.n_kv;
    f.build(rng, {37, 300, 1500});
    const int H = sh.n_heads, q_stride = H * sh.D + 32;
    DevArray<float> dk(f.kpool), dv(f.vpool);
    DevArray<int32_t> dt(f.tables), dl(std::vector<int32_t>(f.lens.begin(), f.lens.end()));
    ck::PagedAttention p;
    p.block_tables = dt.p, p.seq_lens = dl.p, p.max_blocks_per_seq = f.max_blocks, p.block_size = f.bs;
    p.n_heads = H, p.n_kv_heads = sh.n_kv, p.head_dim = sh.D, p.scale = 1.f / std::sqrt(float(sh.D));
    for (auto [seq, n_q] : {std::tuple{0, 37}, std::tuple{1, 45}, std::tuple{2, 1}, std::tuple{2, 200}}) {
      auto q = random_f32(size_t(n_q) * q_stride, rng, 2.f);
      DevArray<float> dq(q), out(size_t(n_q) * H * sh.D);
      ck::paged_attention_f32(p, dk.p, dv.p, seq, dq.p, q_stride, n_q, out.p, nullptr);
      std::vector<float> qc(size_t(n_q) * H * sh.D), ref;
      for (int i = 0; i < n_q; ++i)
        std::copy_n(&q[size_t(i) * q_stride], H * sh.D, &qc[size_t(i) * H * sh.D]);
      const int ctx = f.lens[seq];
      ref_attention(qc, f.K[seq], f.V[seq], ref, n_q, ctx, H, sh.n_kv, sh.D, p.scale);
      const double e = nmse(out.download(), ref);
      EXPECT_LT(e, 1e-10) << "seq " << seq << " n_q " << n_q << " D " << sh.D;
      std::printf("paged_attention_f32 prefill D %d seq %d ctx %d n_q %d: nmse %.2e\n", sh.D, seq, ctx, n_q, e);
      if (ctx - 1 >= n_q) {  // sensitivity: the same queries against a context one token shorter
        std::vector<float> shifted;
        ref_attention(qc, f.K[seq], f.V[seq], shifted, n_q, ctx - 1, H, sh.n_kv, sh.D, p.scale);
        EXPECT_GT(nmse(shifted, ref), 1e-7) << "the bound would not catch an off-by-one causal mask";
      }
    }
  }
}

}  // namespace
}  // namespace citadel::gputest
