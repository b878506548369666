// CUDA kernel checks that are not op-vs-reference parity (that is the op-parity harness, tests/ops/: every kernel
// against the CPU reference ops): the device int8 / int4 weight quantisers against host twins of their documented
// layouts, the fused RoPE + KV write against the separate kernels bit for bit, argmax against a host scan, and the
// tensor-parallel vocabulary kernels (a rank's embedding slice, vocab_unshard) against host loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <utility>

#include "gpu_test_util.h"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::gputest {
namespace {

namespace ck = citadel::cuda;

// CPU quantizers mirroring the documented layouts (cuda_ops.h), to check the device quantizers.
void cpu_quant_int8(const std::vector<float>& W, int N, int K, std::vector<uint8_t>& q, std::vector<float>& sc) {
  q.resize(size_t(N) * K), sc.resize(N);
  for (int n = 0; n < N; ++n) {
    float amax = 0;
    for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(W[size_t(n) * K + k]));
    sc[n] = amax / 127.f;
    const float inv = sc[n] > 0 ? 1.f / sc[n] : 0.f;
    for (int k = 0; k < K; ++k)
      q[size_t(n) * K + k] = uint8_t(int(std::clamp(std::round(W[size_t(n) * K + k] * inv), -127.f, 127.f)) + 128);
  }
}
void cpu_quant_int4(const std::vector<float>& W, int N, int K, std::vector<uint8_t>& q, std::vector<float>& sc) {
  const int G = K / 128;
  q.assign(size_t(ck::int4_weight_bytes(N, K)), 0), sc.resize(size_t(N) * G);
  for (int n = 0; n < N; ++n)
    for (int g = 0; g < G; ++g) {
      float amax = 0;
      for (int k = 0; k < 128; ++k) amax = std::max(amax, std::fabs(W[size_t(n) * K + g * 128 + k]));
      const float s = amax / 7.f, inv = s > 0 ? 1.f / s : 0.f;
      sc[size_t(n) * G + g] = s;
      for (int k = g * 128; k < g * 128 + 128; ++k) {
        const uint32_t nib = uint32_t(int(std::clamp(std::round(W[size_t(n) * K + k] * inv), -8.f, 7.f)) + 8);
        int64_t wb;
        int shift;
        ck::int4_position(K, n, k, &wb, &shift);
        q[size_t(wb) + shift / 8] |= uint8_t(nib << (shift % 8));
      }
    }
}

// The device quantisers against the host twins: at most 0.1% (int8) / 0.2% (int4) of the bytes may differ (a value
// at a rounding midpoint: multiply-by-inverse vs divide), scales equal to fp32 rounding.
TEST(CudaKernels, QuantizersMatchHostTwins) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(100);
  for (auto [N, K] : {std::pair{67, 384}, std::pair{512, 1024}, std::pair{130, 18944 / 4}}) {
    const auto W = random_bf16(size_t(N) * K, rng, 0.05f);
    const auto fW = to_f32(W);
    DevArray<uint16_t> dW(W);
    std::vector<uint8_t> q8;
    std::vector<float> s8;
    cpu_quant_int8(fW, N, K, q8, s8);
    DevArray<uint8_t> dq8(size_t(N) * K);
    DevArray<float> ds8(N);
    ck::quantize_int8(dW.p, dq8.p, ds8.p, N, K, nullptr);
    const auto gq8 = dq8.download();
    size_t mism = 0;
    for (size_t i = 0; i < gq8.size(); ++i) mism += gq8[i] != q8[i];
    EXPECT_LE(mism, gq8.size() / 1000) << "int8 quantizer " << N << "x" << K;
    EXPECT_LT(nmse(ds8.download(), s8), 1e-12);
    if (K % 128 != 0) continue;
    std::vector<uint8_t> q4;
    std::vector<float> s4;
    cpu_quant_int4(fW, N, K, q4, s4);
    DevArray<uint8_t> dq4(size_t(ck::int4_weight_bytes(N, K)));
    DevArray<float> ds4(size_t(N) * K / 128);
    ck::quantize_int4(dW.p, dq4.p, ds4.p, N, K, nullptr);
    const auto gq4 = dq4.download();
    mism = 0;
    for (size_t i = 0; i < gq4.size(); ++i) mism += gq4[i] != q4[i];
    EXPECT_LE(mism, gq4.size() / 500) << "int4 quantizer " << N << "x" << K;
    EXPECT_LT(nmse(ds4.download(), s4), 1e-12);
  }
}

// The fused rope + KV write equals rope() on the q and k heads followed by kv_write(), bit for bit: head sizes whose
// half divides the block (64, 128, 256) and ones whose does not (80, 96), the 7B shape's 28 + 4 heads (more heads
// than one batch of a thread group), and a token without a slot. A frequency table (inv_freq, mscale 1) holding the
// default frequencies gives the same rows within one bf16 step (host and device powf may differ in the last bit).
TEST(CudaKernels, RopeKvWriteMatchesSeparateKernels) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (const auto& [D, H, n_kv] : {std::tuple{64, 8, 2}, std::tuple{128, 8, 2}, std::tuple{128, 28, 4},
                                   std::tuple{80, 12, 4}, std::tuple{96, 16, 16}, std::tuple{256, 8, 1}}) {
    for (bool neox : {true, false}) {
      SCOPED_TRACE("D " + std::to_string(D) + " H " + std::to_string(H) + (neox ? " neox" : " norm"));
      const int T = 6, stride = (H + 2 * n_kv) * D, n_slots = 40;
      auto src = random_bf16(size_t(T) * stride, rng, 2.f);
      std::vector<int32_t> slots = {3, 39, -1, 0, 17, 5}, pos = {0, 7, 100, 4095, 33, 1};
      const auto layout = neox ? ck::RopeLayout::kNeox : ck::RopeLayout::kNorm;
      const size_t pool = size_t(n_slots) * n_kv * D;
      DevArray<uint16_t> a(src), b(src), c(src), ka(pool), va(pool), kb(pool), vb(pool), kc(pool), vc(pool);
      DevArray<int32_t> ds(slots), dp(pos);
      ck::rope(a.p, T, H, D, stride, dp.p, 1e6f, layout, nullptr);
      ck::rope(a.p + H * D, T, n_kv, D, stride, dp.p, 1e6f, layout, nullptr);
      ck::kv_write(a.p + H * D, a.p + (H + n_kv) * D, stride, ds.p, ka.p, va.p, T, n_kv, D, nullptr);
      ck::rope_kv_write(b.p, T, stride, H, n_kv, D, dp.p, 1e6f, layout, ds.p, kb.p, vb.p, nullptr);
      EXPECT_EQ(a.download(), b.download()) << "rows";
      EXPECT_EQ(ka.download(), kb.download()) << "K pool";
      EXPECT_EQ(va.download(), vb.download()) << "V pool";
      std::vector<float> freq(size_t(D / 2));
      for (int i = 0; i < D / 2; ++i) freq[size_t(i)] = std::pow(1e6f, -2.0f * i / D);
      DevArray<float> df(freq);
      ck::rope_kv_write(c.p, T, stride, H, n_kv, D, dp.p, 1e6f, layout, ds.p, kc.p, vc.p, nullptr, df.p, 1.f);
      // Host and device powf may differ in the last bit, which moves the angle at position 4095 by about 5e-4 rad:
      // up to a bf16 step of the element plus that angle times the pair's size (inputs up to about 6).
      const auto ra = to_f32(a.download()), rc = to_f32(c.download());
      int off = 0;
      for (size_t e = 0; e < ra.size(); ++e)
        off += std::fabs(ra[e] - rc[e]) > std::max(std::fabs(ra[e]), std::fabs(rc[e])) / 64 + 0.01f;
      EXPECT_EQ(off, 0) << "frequency table: elements further from the default frequencies' than the powf noise";
      EXPECT_EQ(va.download(), vc.download()) << "V pool, frequency table";
    }
  }
}

// Two GEMVs over one x in one launch (the MLA query and kv_a projections) write what two gemv_bf16 calls write, bit for
// bit, at one and two rows; the second matrix's rows start where the first's blocks end (odd N1).
TEST(CudaKernels, TwoGemvsInOneLaunchMatchTwoLaunches) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(71);
  for (const auto& [M, N1, N2, K] : {std::tuple{1, 3072, 576, 2048}, std::tuple{2, 1535, 77, 256}}) {
    SCOPED_TRACE("M " + std::to_string(M) + " N1 " + std::to_string(N1));
    DevArray<uint16_t> x(random_bf16(size_t(M) * K, rng)), w1(random_bf16(size_t(N1) * K, rng, 0.05f)),
        w2(random_bf16(size_t(N2) * K, rng, 0.05f));
    DevArray<uint16_t> a1(size_t(M) * N1), a2(size_t(M) * N2), b1(size_t(M) * N1), b2(size_t(M) * N2);
    ck::gemv_bf16(x.p, w1.p, nullptr, a1.p, false, M, N1, K, nullptr);
    ck::gemv_bf16(x.p, w2.p, nullptr, a2.p, false, M, N2, K, nullptr);
    ck::gemv_bf16_two(x.p, w1.p, b1.p, N1, w2.p, b2.p, N2, M, K, nullptr);
    EXPECT_EQ(a1.download(), b1.download());
    EXPECT_EQ(a2.download(), b2.download());
  }
}

// argmax (both kernels: V % 4 == 0 streams float4 rows, other V the scalar scan) against a host scan: the lowest
// index of the maximum, with ties planted across threads, across a float4 and within one, and maxima at both ends.
TEST(CudaKernels, ArgmaxFindsTheLowestIndexOfTheMaximum) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  for (int V : {102400, 151936, 1001, 7, 4}) {
    const int M = 6;
    std::uniform_real_distribution<float> d(-5.f, 5.f);
    std::vector<float> h(size_t(M) * V);
    for (auto& x : h) x = d(rng);
    auto row = [&](int m) { return h.data() + size_t(m) * V; };
    row(1)[V - 1] = 9.f;                                     // the maximum last
    row(2)[0] = 9.f;                                         // the maximum first
    row(3)[V / 2] = row(3)[V / 3] = row(3)[V - 1] = 9.f;     // ties far apart: the lowest wins
    if (V >= 4) row(4)[2] = row(4)[3] = 9.f;                 // a tie inside one float4
    for (int i = 0; i < V; ++i) row(5)[i] = -1.f;            // all equal: index 0
    std::vector<int32_t> want(M);
    for (int m = 0; m < M; ++m) want[m] = int32_t(std::max_element(row(m), row(m) + V) - row(m));
    DevArray<float> dl(h);
    DevArray<int32_t> out(M);
    ck::argmax(dl.p, M, V, out.p, nullptr);
    EXPECT_EQ(out.download(), want) << "V " << V;
  }
}

// Tensor parallelism's vocabulary kernels against host loops: the embedding of a rank's slice (rows first .. first +
// vocab - 1: its tokens' rows, zeros for the others', ids out of range included) and vocab_unshard (the all-gathered
// [ranks][rows][per] columns back into [rows][V], the last slice short), bit for bit.
TEST(CudaKernels, VocabSliceEmbeddingAndUnshardMatchHostLoops) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  const int V = 1003, D = 64, n = 4, per = (V + n - 1) / n;
  const std::vector<int32_t> tokens = {0, 250, 251, 500, 501, 1002, -1, 1003, 377, 752};
  const std::vector<float> table = random_f32(size_t(V) * D, rng);
  for (int r = 0; r < n; ++r) {
    const int first = r * per, held = std::min(V, first + per) - first;
    std::vector<uint16_t> slice(size_t(held) * D);
    for (size_t i = 0; i < slice.size(); ++i) slice[i] = f32_to_bf16(table[size_t(first) * D + i]);
    std::vector<float> want(tokens.size() * D, 0.f);
    for (size_t t = 0; t < tokens.size(); ++t)
      if (tokens[t] >= first && tokens[t] < first + held)
        for (int i = 0; i < D; ++i) want[t * D + i] = bf16_to_f32(slice[size_t(tokens[t] - first) * D + i]);
    DevArray<uint16_t> dt(slice);
    DevArray<int32_t> dtok(tokens);
    DevArray<float> out(tokens.size() * D);
    ck::embedding(dt.p, dtok.p, out.p, int(tokens.size()), D, held, nullptr, first);
    EXPECT_EQ(out.download(), want) << "rank " << r;
  }
  const int rows = 3;
  const std::vector<float> gathered = random_f32(size_t(n) * rows * per, rng);
  std::vector<float> want(size_t(rows) * V);
  for (int row = 0; row < rows; ++row)
    for (int v = 0; v < V; ++v) want[size_t(row) * V + v] = gathered[(size_t(v / per) * rows + row) * per + v % per];
  DevArray<float> dg(gathered), out(size_t(rows) * V);
  ck::vocab_unshard(dg.p, out.p, rows, per, V, n, nullptr);
  EXPECT_EQ(out.download(), want);
}

}  // namespace
}  // namespace citadel::gputest
