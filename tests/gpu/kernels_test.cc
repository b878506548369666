// Parity of every CUDA kernel with its scalar CPU reference (ref_ops.h) on fresh random inputs, outputs poisoned
// before each run. NMSE bounds: bf16 outputs of fp32 math 1e-5 (bf16 rounding alone is ~3e-6); attention with bf16
// probabilities (prefill) 1e-4; quantized GEMV against the dequantized weights 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <numeric>
#include <tuple>

#include "kernels/cuda/cuda_ops.h"
#include "ref_ops.h"

namespace citadel::gputest {
namespace {

namespace ck = citadel::cuda;

TEST(CudaKernels, EmbeddingAndArgmax) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(1);
  const int V = 1000, D = 256, T = 7;
  auto table = random_bf16(size_t(V) * D, rng);
  std::vector<int32_t> tok = {0, 999, 5, 17, 5, 400, 123};
  DevArray<uint16_t> dt(table);
  DevArray<int32_t> dtok(tok);
  DevArray<float> out(size_t(T) * D);
  ck::embedding(dt.p, dtok.p, out.p, T, D, V, nullptr);
  auto o = out.download();
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < D; ++i) ASSERT_EQ(o[size_t(t) * D + i], bf16_to_f32(table[size_t(tok[t]) * D + i]));

  const int M = 5, VV = 152064;
  std::vector<float> logits(size_t(M) * VV);
  std::uniform_real_distribution<float> u(-10, 10);
  for (auto& x : logits) x = u(rng);
  logits[3 * VV + 77] = 50.f;
  logits[4 * VV + 10] = 60.f, logits[4 * VV + 9] = 60.f;  // tie: lowest index wins
  DevArray<float> dl(logits);
  DevArray<int32_t> ids(M);
  ck::argmax(dl.p, M, VV, ids.p, nullptr);
  auto got = ids.download();
  for (int m = 0; m < M; ++m) {
    const float* r = &logits[size_t(m) * VV];
    EXPECT_EQ(got[m], int(std::max_element(r, r + VV) - r)) << "row " << m;
  }
}

// Generic kernel (D = 100), the 16-byte kernel with one (128 .. 8192) or two chunks per thread (12288), with and
// without a delta.
TEST(CudaKernels, AddRmsNorm) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(2);
  for (int D : {100, 128, 576, 3584, 12288})
    for (bool with_delta : {true, false}) {
      const int T = 5;
      std::vector<float> res(size_t(T) * D);
      std::uniform_real_distribution<float> u(-3, 3);
      for (auto& x : res) x = u(rng);
      std::vector<float> delta(size_t(T) * D);
      for (auto& x : delta) x = u(rng);
      auto w = random_bf16(D, rng, 2.f);
      DevArray<float> dres(res), ddelta(delta);
      DevArray<uint16_t> dw(w), dout(size_t(T) * D);
      ck::add_rmsnorm(dres.p, with_delta ? ddelta.p : nullptr, dw.p, dout.p, T, D, 1e-6f, nullptr);
      std::vector<float> ref;
      ref_rmsnorm(res, with_delta ? &delta : nullptr, to_f32(w), ref, T, D, 1e-6f);
      EXPECT_LT(nmse(dres.download(), res), 1e-12) << D;
      EXPECT_LT(nmse(to_f32(dout.download()), ref), 1e-5) << D << " delta " << with_delta;
    }
}

TEST(CudaKernels, RopeBothLayouts) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  const int T = 6, H = 4, Dh = 128, stride = H * Dh + 64;
  std::vector<int32_t> pos = {0, 1, 7, 100, 2047, 30000};
  for (bool neox : {false, true}) {
    auto x = random_bf16(size_t(T) * stride, rng);
    DevArray<uint16_t> dx(x);
    DevArray<int32_t> dpos(pos);
    ck::rope(dx.p, T, H, Dh, stride, dpos.p, 10000.f, neox ? ck::RopeLayout::kNeox : ck::RopeLayout::kNorm, nullptr);
    auto ref = to_f32(x);
    ref_rope(ref, T, H, Dh, stride, pos.data(), 10000.f, neox);
    EXPECT_LT(nmse(to_f32(dx.download()), ref), 1e-5) << "neox=" << neox;
  }
}

class SiluMulTest : public ::testing::TestWithParam<int> {};

// F = 1000: scalar kernel; F = 1024 / 18944: the 16-byte vector kernel.
TEST_P(SiluMulTest, MatchesReference) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(4);
  const int T = 3, F = GetParam();
  auto gu = random_bf16(size_t(T) * 2 * F, rng, 4.f);
  DevArray<uint16_t> dgu(gu), dout(size_t(T) * F);
  ck::silu_mul(dgu.p, dout.p, T, F, nullptr);
  std::vector<float> ref(size_t(T) * F);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < F; ++i)
      ref[size_t(t) * F + i] = ref_silu(bf16_to_f32(gu[size_t(t) * 2 * F + i])) * bf16_to_f32(gu[size_t(t) * 2 * F + F + i]);
  EXPECT_LT(nmse(to_f32(dout.download()), ref), 1e-5);
}
INSTANTIATE_TEST_SUITE_P(Ffn, SiluMulTest, ::testing::Values(1000, 1024, 18944));

TEST(CudaKernels, GemmCublas) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  const int M = 37, N = 200, K = 256;
  auto x = random_bf16(size_t(M) * K, rng), W = random_bf16(size_t(N) * K, rng);
  DevArray<uint16_t> dx(x), dW(W);
  DevArray<float> dy(size_t(M) * N);
  void* h = ck::create_cublas_handle(nullptr, nullptr, 0);
  ck::gemm_bf16(h, dx.p, dW.p, dy.p, true, M, N, K);
  auto ref = ref_matmul(to_f32(x), to_f32(W), nullptr, M, N, K);
  EXPECT_LT(nmse(dy.download(), ref), 1e-6);
  ck::destroy_cublas_handle(h);
}

// cuBLASLt path of the decoder: bias in the epilogue (bf16 out) and fp32 out without bias, tuned and untuned,
// against the fp64 reference; a second call with another bias pointer reuses the cached plan, and an M whose
// power-of-two bucket is tuned already (33 after 37, 400 after 512) reuses that bucket's algorithm.
TEST(CudaKernels, GemmLtBiasEpilogue) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(15);
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&ws, 32 << 20), cudaSuccess);
  for (bool tune : {true, false}) {
    void* ctx = ck::create_gemm_lt(nullptr, ws, 32 << 20, tune);
    for (auto [M, N, K] : {std::tuple{37, 200, 256}, std::tuple{64, 384, 512}, std::tuple{512, 256, 128},
                           std::tuple{33, 200, 256}, std::tuple{400, 256, 128}}) {
      auto x = random_bf16(size_t(M) * K, rng), W = random_bf16(size_t(N) * K, rng);
      DevArray<uint16_t> dx(x), dW(W);
      for (int rep = 0; rep < 2; ++rep) {
        auto b = random_bf16(N, rng, 2.f);
        DevArray<uint16_t> db(b), dy(size_t(M) * N);
        ck::gemm_bf16_lt(ctx, dx.p, dW.p, db.p, dy.p, false, M, N, K);
        auto bf = to_f32(b);
        auto ref = ref_matmul(to_f32(x), to_f32(W), bf.data(), M, N, K);
        EXPECT_LT(nmse(to_f32(dy.download()), ref), 1e-5) << M << "x" << N << "x" << K << " tune " << tune;
      }
      DevArray<float> dyf(size_t(M) * N);
      ck::gemm_bf16_lt(ctx, dx.p, dW.p, nullptr, dyf.p, true, M, N, K);
      auto ref = ref_matmul(to_f32(x), to_f32(W), nullptr, M, N, K);
      EXPECT_LT(nmse(dyf.download(), ref), 1e-6) << M << "x" << N << "x" << K << " fp32 out, tune " << tune;
    }
    ck::destroy_gemm_lt(ctx);
  }
  cudaFree(ws);
}

// fp32 activations through the bf16x3 GEMM: fp32 x off the bf16 grid and an fp32 bias against an fp64 reference on
// the same bf16 weights, plain and SiLU, with scratch for fewer rows than M (several chunks). A single bf16 rounding of
// x gives an NMSE near 1e-6; the three planes stay at the tensor cores' fp32 accumulation noise (measured on the H100:
// 5e-14 at K = 512, 1.7e-11 at K = 4736; SiLU's products about 5x that), well under these bounds.
TEST(CudaKernels, GemmXf32MatchesFp64) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(16);
  std::uniform_real_distribution<float> ud(-1.f, 1.f);
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&ws, 32 << 20), cudaSuccess);
  void* ctx = ck::create_gemm_lt(nullptr, ws, 32 << 20, true);
  for (auto [M, N, K, rows] : {std::tuple{9, 256, 512, 9}, std::tuple{64, 384, 1024, 64},
                               std::tuple{200, 512, 4736, 48}, std::tuple{130, 2 * 272, 1024, 130}}) {
    auto W = random_bf16(size_t(N) * K, rng, 0.05f);
    std::vector<float> x(size_t(M) * K), b(N);
    for (auto& v : x) v = ud(rng);
    for (auto& v : b) v = ud(rng);
    DevArray<uint16_t> dW(W), x3(size_t(3) * rows * K);
    DevArray<float> dx(x), db(b), y(size_t(M) * N), y3(size_t(3) * rows * N);
    const ck::Bf16x3Scratch scratch{x3.p, int64_t(x3.n), y3.p, int64_t(y3.n)};
    const auto ref = ref_matmul(x, to_f32(W), b.data(), M, N, K);
    ck::gemm_xf32_lt(ctx, dx.p, dW.p, db.p, y.p, false, M, N, K, scratch);
    const double e = nmse(y.download(), ref);
    EXPECT_LT(e, 1e-10) << M << "x" << N << "x" << K << " rows " << rows;
    // SiLU: gate columns [0, N/2), up columns [N/2, N), no bias.
    const int F = N / 2;
    const auto sref = ref_swiglu(ref_matmul(x, to_f32(W), nullptr, M, N, K), M, F);
    DevArray<float> act(size_t(M) * F);
    ck::gemm_xf32_lt(ctx, dx.p, dW.p, nullptr, act.p, true, M, N, K, scratch);
    const double es = nmse(act.download(), sref);
    EXPECT_LT(es, 5e-10) << "silu " << M << "x" << N << "x" << K;
    std::printf("gemm_xf32_lt %dx%dx%d (rows %d): nmse %.2e, silu %.2e\n", M, N, K, rows, e, es);
  }
  ck::destroy_gemm_lt(ctx);
  cudaFree(ws);
}

// CPU quantizers mirroring the documented layouts (cuda_ops.h), used to check the device quantizers bit for bit
// and to dequantize for the GEMV references.
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
float int4_at(const std::vector<uint8_t>& q, const std::vector<float>& sc, int K, int n, int k) {
  int64_t wb;
  int shift;
  ck::int4_position(K, n, k, &wb, &shift);
  const uint8_t byte = q[size_t(wb) + shift / 8];
  return float(int((byte >> (shift % 8)) & 0xF) - 8) * sc[size_t(n) * (K / 128) + k / 128];
}

// CPU twin of the int4 GEMV (w4a8, cuda_ops.h): x rounded to int8 per 32 k (scale amax/127, nearest even), the
// integer sum per chunk scaled by weight scale * x scale; fp64 accumulation.
std::vector<float> ref_w4a8(const std::vector<float>& x, const std::vector<uint8_t>& q, const std::vector<float>& sc,
                            int M, int N, int K) {
  std::vector<float> y(size_t(M) * N);
  std::vector<int> xq(K);
  std::vector<float> xs(K / 32);
  for (int m = 0; m < M; ++m) {
    for (int c = 0; c < K / 32; ++c) {
      float amax = 0;
      for (int k = 32 * c; k < 32 * c + 32; ++k) amax = std::max(amax, std::fabs(x[size_t(m) * K + k]));
      xs[c] = amax / 127.f;
      const float inv = amax > 0 ? 127.f / amax : 0.f;
      for (int k = 32 * c; k < 32 * c + 32; ++k) xq[k] = int(std::nearbyint(double(x[size_t(m) * K + k]) * inv));
    }
    for (int n = 0; n < N; ++n) {
      double acc = 0;
      for (int c = 0; c < K / 32; ++c) {
        int dot = 0;
        for (int k = 32 * c; k < 32 * c + 32; ++k) {
          int64_t wb;
          int shift;
          ck::int4_position(K, n, k, &wb, &shift);
          dot += (int((q[size_t(wb) + shift / 8] >> (shift % 8)) & 0xF) - 8) * xq[k];
        }
        acc += double(sc[size_t(n) * (K / 128) + c / 4] * xs[c]) * dot;
      }
      y[size_t(m) * N + n] = float(acc);
    }
  }
  return y;
}

class GemvTest : public ::testing::TestWithParam<int> {};

TEST_P(GemvTest, AllFormatsMatchReference) {
  SKIP_WITHOUT_GPU();
  const int M = GetParam();
  std::mt19937 rng(100 + M);
  for (auto [N, K] : {std::pair{67, 384}, std::pair{512, 1024}, std::pair{130, 18944 / 4}}) {
    auto x = random_bf16(size_t(M) * K, rng), W = random_bf16(size_t(N) * K, rng, 0.05f);
    auto bias = random_bf16(N, rng);
    const auto fx = to_f32(x), fW = to_f32(W), fb = to_f32(bias);
    DevArray<uint16_t> dx(x), dW(W), db(bias);
    // bf16, fp32 output with bias
    DevArray<float> y32(size_t(M) * N);
    ck::gemv_bf16(dx.p, dW.p, db.p, y32.p, true, M, N, K, nullptr);
    EXPECT_LT(nmse(y32.download(), ref_matmul(fx, fW, fb.data(), M, N, K)), 1e-9) << "bf16 " << N << "x" << K;
    // bf16 weights, fp32 activations and bias (values off the bf16 grid: a bf16 rounding of x would show).
    {
      std::uniform_real_distribution<float> ud(-1.f, 1.f);
      std::vector<float> xf(size_t(M) * K), bf(N);
      for (auto& v : xf) v = ud(rng);
      for (auto& v : bf) v = ud(rng);
      DevArray<float> dxf(xf), dbf(bf), yf(size_t(M) * N);
      ck::gemv_bf16_xf32(dxf.p, dW.p, dbf.p, yf.p, M, N, K, nullptr);
      EXPECT_LT(nmse(yf.download(), ref_matmul(xf, fW, bf.data(), M, N, K)), 1e-12) << "bf16 x fp32 " << N << "x" << K;
    }
    // int8
    std::vector<uint8_t> q8;
    std::vector<float> s8;
    cpu_quant_int8(fW, N, K, q8, s8);
    DevArray<uint8_t> dq8(size_t(N) * K);
    DevArray<float> ds8(N);
    ck::quantize_int8(dW.p, dq8.p, ds8.p, N, K, nullptr);
    auto gq8 = dq8.download();
    size_t mism = 0;
    for (size_t i = 0; i < gq8.size(); ++i) mism += gq8[i] != q8[i];
    EXPECT_LE(mism, gq8.size() / 1000) << "int8 quantizer";
    EXPECT_LT(nmse(ds8.download(), s8), 1e-12);
    std::vector<float> deq(size_t(N) * K);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) deq[size_t(n) * K + k] = float(int(gq8[size_t(n) * K + k]) - 128) * s8[n];
    DevArray<uint16_t> y16(size_t(M) * N);
    ck::gemv_int8(dx.p, dq8.p, ds8.p, db.p, y16.p, false, M, N, K, nullptr);
    EXPECT_LT(nmse(to_f32(y16.download()), ref_matmul(fx, deq, fb.data(), M, N, K)), 1e-5) << "int8";
    // int4
    if (K % 128 == 0) {
      std::vector<uint8_t> q4;
      std::vector<float> s4;
      cpu_quant_int4(fW, N, K, q4, s4);
      DevArray<uint8_t> dq4(size_t(ck::int4_weight_bytes(N, K)));
      DevArray<float> ds4(size_t(N) * K / 128);
      ck::quantize_int4(dW.p, dq4.p, ds4.p, N, K, nullptr);
      auto gq4 = dq4.download();
      mism = 0;
      for (size_t i = 0; i < gq4.size(); ++i) mism += gq4[i] != q4[i];
      EXPECT_LE(mism, gq4.size() / 500) << "int4 quantizer";
      for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) deq[size_t(n) * K + k] = int4_at(gq4, s4, K, n, k);
      DevArray<float> y4(size_t(M) * N);
      ck::gemv_int4(dx.p, dq4.p, ds4.p, nullptr, y4.p, true, M, N, K, nullptr);
      EXPECT_LT(nmse(y4.download(), ref_w4a8(fx, gq4, ds4.download(), M, N, K)), 1e-10) << "int4 (w4a8 twin)";
      // The int8 rounding of x alone (same weights, fp32 x): a bound, not parity.
      EXPECT_LT(nmse(y4.download(), ref_matmul(fx, deq, nullptr, M, N, K)), 1e-4) << "int4 vs fp32 x";
      // int4 vs the unquantized weights: quantization error only (a sanity bound, not parity).
      EXPECT_LT(nmse(y4.download(), ref_matmul(fx, fW, nullptr, M, N, K)), 2e-2);
    }
  }
}
// Fused gate_up + SiLU-mul vs the plain GEMV's fp32 gate/up outputs (already checked above) through silu * up.
TEST_P(GemvTest, SiluFusedMatchesGemv) {
  SKIP_WITHOUT_GPU();
  const int M = GetParam();
  std::mt19937 rng(200 + M);
  for (auto [F, K] : {std::pair{48, 384}, std::pair{272, 1024}, std::pair{80, 18944 / 4}}) {
    const int N = 2 * F;
    auto x = random_bf16(size_t(M) * K, rng), W = random_bf16(size_t(N) * K, rng, 0.08f);
    DevArray<uint16_t> dx(x), dW(W);
    DevArray<uint8_t> dq8(size_t(N) * K), dq4(size_t(ck::int4_weight_bytes(N, K)));
    DevArray<float> ds8(N), ds4(size_t(N) * (K / 128 + 1)), y(size_t(M) * N);
    DevArray<uint16_t> act(size_t(M) * F);
    ck::quantize_int8(dW.p, dq8.p, ds8.p, N, K, nullptr);
    if (K % 128 == 0) ck::quantize_int4(dW.p, dq4.p, ds4.p, N, K, nullptr);
    for (int fmt = 0; fmt < 3; ++fmt) {
      if (fmt == 2 && K % 128 != 0) continue;
      cudaMemset(act.p, 0xff, sizeof(uint16_t) * act.n);
      if (fmt == 0) {
        ck::gemv_bf16(dx.p, dW.p, nullptr, y.p, true, M, N, K, nullptr);
        ck::gemv_silu_bf16(dx.p, dW.p, act.p, M, F, K, nullptr);
      } else if (fmt == 1) {
        ck::gemv_int8(dx.p, dq8.p, ds8.p, nullptr, y.p, true, M, N, K, nullptr);
        ck::gemv_silu_int8(dx.p, dq8.p, ds8.p, act.p, M, F, K, nullptr);
      } else {
        ck::gemv_int4(dx.p, dq4.p, ds4.p, nullptr, y.p, true, M, N, K, nullptr);
        ck::gemv_silu_int4(dx.p, dq4.p, ds4.p, act.p, M, F, K, nullptr);
      }
      const auto ref = ref_swiglu(y.download(), M, F);
      EXPECT_LT(nmse(to_f32(act.download()), ref), 1e-5) << "format " << fmt << " F " << F << " K " << K;
    }
  }
}
// The fp32-activation twin: fp32 x (off the bf16 grid) in, fp32 act out, against fp64 gate / up products of the same
// operands through SiLU (a bf16 rounding of x or of the output would show far above the bound).
TEST_P(GemvTest, SiluFusedXf32MatchesFp64) {
  SKIP_WITHOUT_GPU();
  const int M = GetParam();
  std::mt19937 rng(300 + M);
  std::uniform_real_distribution<float> ud(-1.f, 1.f);
  for (auto [F, K] : {std::pair{48, 384}, std::pair{272, 1024}, std::pair{80, 18944 / 4}}) {
    const int N = 2 * F;
    auto W = random_bf16(size_t(N) * K, rng, 0.08f);
    std::vector<float> x(size_t(M) * K);
    for (auto& v : x) v = ud(rng);
    DevArray<uint16_t> dW(W);
    DevArray<float> dx(x), act(size_t(M) * F);
    cudaMemset(act.p, 0xff, sizeof(float) * act.n);
    ck::gemv_silu_bf16_xf32(dx.p, dW.p, act.p, M, F, K, nullptr);
    const auto ref = ref_swiglu(ref_matmul(x, to_f32(W), nullptr, M, N, K), M, F);
    EXPECT_LT(nmse(act.download(), ref), 1e-12) << "F " << F << " K " << K;
  }
}
INSTANTIATE_TEST_SUITE_P(Batch, GemvTest, ::testing::Values(1, 2, 3, 8, 11));

// Builds a paged cache for several sequences with scattered blocks, then checks decode and prefill.
struct PagedFixture {
  int n_kv = 4, n_heads = 28, D = 128, bs = 16, max_blocks = 0, n_blocks = 0;
  std::vector<int> lens;
  std::vector<int32_t> tables;
  std::vector<std::vector<float>> K, V;  // per seq [ctx][n_kv][D]
  std::vector<uint16_t> kpool, vpool;

  void build(std::mt19937& rng, std::vector<int> seq_lens) {
    lens = seq_lens;
    const int B = int(lens.size());
    max_blocks = 0;
    for (int l : lens) max_blocks = std::max(max_blocks, (l + bs - 1) / bs);
    n_blocks = B * max_blocks + 3;
    std::vector<int32_t> perm(n_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    tables.assign(size_t(B) * max_blocks, 0);
    const size_t row = size_t(n_kv) * D;
    kpool = random_bf16(size_t(n_blocks) * bs * row, rng);  // garbage in unused slots
    vpool = random_bf16(size_t(n_blocks) * bs * row, rng);
    K.resize(B), V.resize(B);
    int next = 0;
    for (int b = 0; b < B; ++b) {
      for (int i = 0; i < max_blocks; ++i) tables[size_t(b) * max_blocks + i] = perm[next++];
      K[b].resize(size_t(lens[b]) * row), V[b].resize(size_t(lens[b]) * row);
      for (int t = 0; t < lens[b]; ++t) {
        const size_t slot = size_t(tables[size_t(b) * max_blocks + t / bs]) * bs + t % bs;
        for (size_t c = 0; c < row; ++c) {
          K[b][t * row + c] = bf16_to_f32(kpool[slot * row + c]);
          V[b][t * row + c] = bf16_to_f32(vpool[slot * row + c]);
        }
      }
    }
  }
};

TEST(CudaKernels, KvWriteScatters) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  const int T = 5, n_kv = 4, D = 128, stride = 28 * D + 2 * n_kv * D;
  auto src = random_bf16(size_t(T) * stride, rng);
  std::vector<int32_t> slots = {3, 40, -1, 0, 17};
  const int n_slots = 48;
  DevArray<uint16_t> dsrc(src), kp(size_t(n_slots) * n_kv * D), vp(size_t(n_slots) * n_kv * D);
  DevArray<int32_t> ds(slots);
  ck::kv_write(dsrc.p + 28 * D, dsrc.p + 28 * D + n_kv * D, stride, ds.p, kp.p, vp.p, T, n_kv, D, nullptr);
  auto k = kp.download(), v = vp.download();
  for (int t = 0; t < T; ++t) {
    if (slots[t] < 0) continue;
    for (int c = 0; c < n_kv * D; ++c) {
      ASSERT_EQ(k[size_t(slots[t]) * n_kv * D + c], src[size_t(t) * stride + 28 * D + c]);
      ASSERT_EQ(v[size_t(slots[t]) * n_kv * D + c], src[size_t(t) * stride + 28 * D + n_kv * D + c]);
    }
  }
  EXPECT_EQ(k[size_t(1) * n_kv * D], 0xffff);  // untouched slot keeps its poison
}

// The fused rope + KV write equals rope() on the q and k heads followed by kv_write(), bit for bit.
TEST(CudaKernels, RopeKvWriteMatchesSeparateKernels) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (int D : {64, 128}) {
    for (bool neox : {true, false}) {
      const int T = 6, H = 8, n_kv = 2, stride = (H + 2 * n_kv) * D, n_slots = 40;
      auto src = random_bf16(size_t(T) * stride, rng, 2.f);
      std::vector<int32_t> slots = {3, 39, -1, 0, 17, 5}, pos = {0, 7, 100, 4095, 33, 1};
      const auto layout = neox ? ck::RopeLayout::kNeox : ck::RopeLayout::kNorm;
      DevArray<uint16_t> a(src), b(src), ka(size_t(n_slots) * n_kv * D), va(size_t(n_slots) * n_kv * D),
          kb(size_t(n_slots) * n_kv * D), vb(size_t(n_slots) * n_kv * D);
      DevArray<int32_t> ds(slots), dp(pos);
      ck::rope(a.p, T, H, D, stride, dp.p, 1e6f, layout, nullptr);
      ck::rope(a.p + H * D, T, n_kv, D, stride, dp.p, 1e6f, layout, nullptr);
      ck::kv_write(a.p + H * D, a.p + (H + n_kv) * D, stride, ds.p, ka.p, va.p, T, n_kv, D, nullptr);
      ck::rope_kv_write(b.p, T, stride, H, n_kv, D, dp.p, 1e6f, layout, ds.p, kb.p, vb.p, nullptr);
      EXPECT_EQ(a.download(), b.download()) << "rows, D " << D;
      EXPECT_EQ(ka.download(), kb.download()) << "K pool, D " << D;
      EXPECT_EQ(va.download(), vb.download()) << "V pool, D " << D;
    }
  }
}

// Both decode kernels (tensor-core and SIMT) at the 7B head layout (G = 7), SmolLM2's (D 64, G 3) and G = 16 (the
// mma path's second A-row half), with one split, many splits, 16-token partitions and splits past the context end.
// The mma path rounds probabilities to bf16 for P V: bound 3e-5 (bf16 output rounding alone is ~3e-6).
TEST(CudaKernels, PagedDecodeSplitK) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(8);
  struct Shape { int D, n_heads, n_kv; };
  for (Shape sh : {Shape{128, 28, 4}, Shape{64, 9, 3}, Shape{128, 32, 2}}) {
    PagedFixture f;
    f.D = sh.D, f.n_heads = sh.n_heads, f.n_kv = sh.n_kv;
    f.build(rng, {1, 17, 300, 64, 1000});
    const int B = int(f.lens.size()), H = f.n_heads;
    const int q_stride = H * f.D + 256;
    auto q = random_bf16(size_t(B) * q_stride, rng);
    DevArray<uint16_t> dk(f.kpool), dv(f.vpool), dq(q);
    DevArray<int32_t> dt(f.tables), dl(std::vector<int32_t>(f.lens.begin(), f.lens.end()));
    ck::PagedAttention p;
    p.k_pool = dk.p, p.v_pool = dv.p, p.block_tables = dt.p, p.seq_lens = dl.p, p.max_blocks_per_seq = f.max_blocks;
    p.block_size = f.bs, p.n_heads = H, p.n_kv_heads = f.n_kv, p.head_dim = f.D;
    p.scale = 1.f / std::sqrt(float(f.D));
    struct Run { bool mma; int splits, partition; };
    for (Run r : {Run{false, 1, 1024}, Run{false, 8, 128}, Run{false, 40, 32}, Run{true, 1, 1024}, Run{true, 8, 128},
                  Run{true, 40, 32}, Run{true, 63, 16}, Run{true, 32, 64}}) {
      if (!r.mma && H / f.n_kv > 8 && r.partition > 256) continue;  // SIMT scores of G x partition exceed 48 KB
      const std::string what = std::string(r.mma ? "mma" : "simt") + " D " + std::to_string(f.D) + " G " +
                               std::to_string(H / f.n_kv) + " splits " + std::to_string(r.splits) + " partition " +
                               std::to_string(r.partition);
      DevArray<uint16_t> out(size_t(B) * H * f.D);
      DevArray<float> ws(std::max<int64_t>(1, ck::decode_workspace_floats(B, H, f.D, r.splits)));
      cudaMemset(ws.p, 0, sizeof(float) * ws.n);
      auto run = [&] {
        if (r.mma) {
          ASSERT_TRUE(ck::decode_mma_supported(p, r.partition));
          ck::paged_attention_decode_mma(p, dq.p, q_stride, out.p, B, r.splits, r.partition, ws.p, nullptr);
        } else {
          ck::paged_attention_decode_simt(p, dq.p, q_stride, out.p, B, r.splits, r.partition, ws.p, nullptr);
        }
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      };
      run();
      auto o1 = out.download();
      cudaMemset(out.p, 0xff, sizeof(uint16_t) * out.n);  // second call: the merge counters must be back at zero
      run();
      auto o2 = out.download();
      EXPECT_EQ(o1, o2) << what;
      auto o = to_f32(o2);
      double worst = 0;
      for (int b = 0; b < B; ++b) {
        std::vector<float> qb(size_t(H) * f.D), ref;
        for (int i = 0; i < H * f.D; ++i) qb[i] = bf16_to_f32(q[size_t(b) * q_stride + i]);
        ref_attention(qb, f.K[b], f.V[b], ref, 1, f.lens[b], H, f.n_kv, f.D, p.scale);
        std::vector<float> ob(o.begin() + size_t(b) * H * f.D, o.begin() + size_t(b + 1) * H * f.D);
        const double e = nmse(ob, ref);
        worst = std::max(worst, e);
        EXPECT_LT(e, r.mma ? 3e-5 : 1e-5) << "seq " << b << " " << what;
      }
      std::printf("decode %s: worst nmse %.2e\n", what.c_str(), worst);
    }
  }
}

// head_dim 128 (qwen2-7B heads: 28 q / 4 kv) and 64 (SmolLM2: 9 q / 3 kv, G = 3).
TEST(CudaKernels, PagedPrefillCausalWithPrefix) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  for (auto [D, H, n_kv] : {std::tuple{128, 28, 4}, std::tuple{64, 9, 3}}) {
    PagedFixture f;
    f.D = D, f.n_heads = H, f.n_kv = n_kv;
    f.build(rng, {200, 77, 130});
    ck::PagedAttention p;
    DevArray<uint16_t> dk(f.kpool), dv(f.vpool);
    DevArray<int32_t> dt(f.tables), dl(std::vector<int32_t>(f.lens.begin(), f.lens.end()));
    p.k_pool = dk.p, p.v_pool = dv.p, p.block_tables = dt.p, p.seq_lens = dl.p, p.max_blocks_per_seq = f.max_blocks;
    p.block_size = f.bs, p.n_heads = H, p.n_kv_heads = f.n_kv, p.head_dim = f.D;
    p.scale = 1.f / std::sqrt(float(D));
    const int n_qs[3] = {200, 77, 5};  // whole prompt, whole prompt, 5 new tokens after a 125-token cached prefix
    for (int b = 0; b < 3; ++b) {
      const int n_q = n_qs[b], q_stride = H * f.D + 128;
      auto q = random_bf16(size_t(n_q) * q_stride, rng);
      std::vector<float> qf(size_t(n_q) * H * f.D), ref;
      for (int i = 0; i < n_q; ++i)
        for (int c = 0; c < H * f.D; ++c) qf[size_t(i) * H * f.D + c] = bf16_to_f32(q[size_t(i) * q_stride + c]);
      ref_attention(qf, f.K[b], f.V[b], ref, n_q, f.lens[b], H, f.n_kv, f.D, p.scale);
      for (bool mma : {true, false}) {  // mma.sync kernel (used) and the wmma twin
        DevArray<uint16_t> dq(q), out(size_t(n_q) * H * f.D);
        if (mma)
          ck::paged_attention_prefill(p, b, dq.p, q_stride, n_q, out.p, nullptr);
        else
          ck::paged_attention_prefill_wmma(p, b, dq.p, q_stride, n_q, out.p, nullptr);
        const double e = nmse(to_f32(out.download()), ref);
        std::printf("prefill %s seq %d head_dim %d: nmse %.2e\n", mma ? "mma" : "wmma", b, D, e);
        EXPECT_LT(e, 1e-4) << "seq " << b << " head_dim " << D << (mma ? " mma" : " wmma");
      }
    }
  }
}

}  // namespace
}  // namespace citadel::gputest
