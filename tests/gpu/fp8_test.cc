// The fp8 (e4m3) weight format of the CUDA decoder: the host e4m3 codec, and the device quantisers (quantize_fp8 and
// the activation quantiser quantize_rows_fp8) against a CPU twin bit for bit (scales and bytes: ties to even, e4m3
// subnormals, zero rows, tiny scales). gemv_fp8, gemv_silu_fp8 and the cuBLASLt fp8 GEMM are checked against the CPU
// reference by the op-parity harness (tests/ops/, dtype fp8: inputs on the e4m3 grid, gemv 1e-10 fp32 out / 1e-5 bf16
// out, gemm_fp8_lt 1e-7 fp32 out).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <tuple>

#include "gpu_test_util.h"
#include "kernels/cuda/cuda_ops.h"

namespace citadel::gputest {
namespace {

namespace ck = citadel::cuda;

// OCP e4m3: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 subnormal (m * 2^-9); 0x7f/0xff NaN; no inf.
float e4m3_decode(uint8_t b) {
  const int e = (b >> 3) & 15, m = b & 7;
  if ((b & 0x7f) == 0x7f) return NAN;
  const float v = e == 0 ? std::ldexp(float(m), -9) : std::ldexp(float(8 + m), e - 10);
  return (b & 0x80) ? -v : v;
}

// Round to nearest, ties to the even code (= even mantissa), saturating to +-448 (cvt.rn.satfinite), sign kept.
uint8_t e4m3_encode(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const float a = std::fabs(x);
  if (a >= 448.f) return sign | 0x7e;
  static const std::vector<float> value = [] {  // codes 0..0x7e increase with their value
    std::vector<float> v(0x7f);
    for (int c = 0; c < 0x7f; ++c) v[c] = e4m3_decode(uint8_t(c));
    return v;
  }();
  const int lo = int(std::upper_bound(value.begin(), value.end(), a) - value.begin()) - 1;  // value[lo] <= a
  if (value[lo] == a) return sign | uint8_t(lo);
  const float dl = a - value[lo], dh = value[lo + 1] - a;
  const int code = dl < dh ? lo : dh < dl ? lo + 1 : (lo % 2 == 0 ? lo : lo + 1);
  return sign | uint8_t(code);
}

// Host twin of quantize_fp8 / quantize_rows_fp8: per row scale = amax/448, q = e4m3(v / scale) (IEEE division).
void cpu_quant_fp8(const std::vector<float>& W, int N, int K, std::vector<uint8_t>& q, std::vector<float>& sc) {
  q.assign(size_t(N) * K, 0), sc.resize(N);
  for (int n = 0; n < N; ++n) {
    float amax = 0;
    for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(W[size_t(n) * K + k]));
    sc[n] = amax / 448.f;
    if (sc[n] > 0)
      for (int k = 0; k < K; ++k) q[size_t(n) * K + k] = e4m3_encode(W[size_t(n) * K + k] / sc[n]);
  }
}
TEST(CudaFp8, HostCodecRoundTrips) {
  for (int c = 0; c < 256; ++c)
    if ((c & 0x7f) != 0x7f) {
      EXPECT_EQ(e4m3_encode(e4m3_decode(uint8_t(c))), c) << c;
    }
  EXPECT_EQ(e4m3_decode(0x7e), 448.f);
  EXPECT_EQ(e4m3_decode(0x01), std::ldexp(1.f, -9));
  EXPECT_EQ(e4m3_encode(1000.f), 0x7e);
  EXPECT_EQ(e4m3_encode(-1000.f), 0xfe);
  EXPECT_EQ(e4m3_encode(1.0625f), 0x38);  // halfway 1 .. 1.125: even mantissa (1.0)
  EXPECT_EQ(e4m3_encode(1.1875f), 0x3a);  // halfway 1.125 .. 1.25: even mantissa (1.25)
  EXPECT_EQ(e4m3_encode(std::ldexp(1.f, -10)), 0x00);  // halfway 0 .. 2^-9: even (0)
  EXPECT_EQ(e4m3_encode(std::ldexp(3.f, -10)), 0x02);  // halfway 2^-9 .. 2^-8: even (2 * 2^-9)
}

// Rows: random at several magnitudes; all zero; amax 448 (scale exactly 1) with every midpoint between two e4m3
// values (ties) of both signs; one outlier over values that land in the e4m3 subnormals; tiny values (scale ~1e-33).
std::vector<uint16_t> fp8_test_matrix(int N, int K, std::mt19937& rng) {
  auto W = random_bf16(size_t(N) * K, rng, 0.05f);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int n = 0; n < N; ++n) {
    uint16_t* row = &W[size_t(n) * K];
    switch (n % 8) {
      case 1: std::fill(row, row + K, 0); break;
      case 2:
        row[0] = f32_to_bf16(448.f);
        for (int k = 1; k < K; ++k) {
          const int c = (k - 1) % 126;
          const float mid = 0.5f * (e4m3_decode(uint8_t(c)) + e4m3_decode(uint8_t(c + 1)));
          row[k] = f32_to_bf16((k / 126) % 2 ? -mid : mid);  // exact in bf16 (at most 5 significant bits)
        }
        break;
      case 3:
        for (int k = 0; k < K; ++k) row[k] = f32_to_bf16(u(rng) * 1e-3f);
        row[K / 2] = f32_to_bf16(7.f);
        break;
      case 4:
        for (int k = 0; k < K; ++k) row[k] = f32_to_bf16(u(rng) * 1e-30f);
        break;
      case 5:
        for (int k = 0; k < K; ++k) row[k] = f32_to_bf16(u(rng) * 300.f);
        break;
      default: break;
    }
  }
  return W;
}

TEST(CudaFp8, QuantizerBitExact) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  for (auto [N, K] : {std::pair{67, 384}, std::pair{40, 18944}, std::pair{200, 3584}}) {
    const auto W = fp8_test_matrix(N, K, rng);
    std::vector<uint8_t> q;
    std::vector<float> sc;
    cpu_quant_fp8(to_f32(W), N, K, q, sc);
    DevArray<uint16_t> dW(W);
    DevArray<uint8_t> dq(size_t(N) * K), dxq(size_t(N) * K);
    DevArray<float> ds(N), dxs(N);
    ck::quantize_fp8(dW.p, dq.p, ds.p, N, K, nullptr);
    ck::quantize_rows_fp8(dW.p, dxq.p, dxs.p, N, K, nullptr);  // the activation quantizer: the same contract
    const auto gq = dq.download(), gxq = dxq.download();
    const auto gs = ds.download(), gxs = dxs.download();
    size_t bad = 0;
    for (size_t i = 0; i < q.size(); ++i) {
      if (gq[i] != q[i] && bad++ < 5)
        ADD_FAILURE() << "row " << i / K << " k " << i % K << ": device 0x" << std::hex << int(gq[i]) << " host 0x"
                      << int(q[i]) << std::dec << " for w " << bf16_to_f32(W[i]) << " scale " << sc[i / K];
    }
    EXPECT_EQ(bad, 0u) << N << "x" << K;
    EXPECT_EQ(gxq, gq);
    for (int n = 0; n < N; ++n) {
      EXPECT_EQ(gs[n], sc[n]) << "row " << n;
      EXPECT_EQ(gxs[n], sc[n]) << "row " << n;
    }
  }
}

}  // namespace
}  // namespace citadel::gputest
