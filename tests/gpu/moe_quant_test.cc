// The grouped expert GEMVs over int8 / int4 expert weights (moe.h MoeMatrix) against an fp64 host reference on the
// dequantised weights: random bf16 experts quantised by the device quantisers (whose layouts kernels_test.cc checks
// against host twins), random routing, gate|up + SiLU then down. The kernels dequantise to fp32 and accumulate in
// fp32, so they match the reference to fp32 summation order (act is rounded to bf16, as the bf16 kernel stores it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "gpu_test_util.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/moe.h"

namespace citadel::gputest {
namespace {

namespace ck = citadel::cuda;

// One quantised stack [rows][K]: device codes and scales, and the host's dequantised weights.
struct QuantStack {
  DevArray<uint8_t> q;
  DevArray<float> scales;
  std::vector<double> w;  // [rows][K]
  QuantStack(ck::MoeWeightFormat f, int64_t rows, int K, uint32_t seed)
      : q(f == ck::MoeWeightFormat::kInt8 ? size_t(rows) * K : size_t(ck::int4_weight_bytes(int(rows), K))),
        scales(f == ck::MoeWeightFormat::kInt8 ? size_t(rows) : size_t(rows) * (K / 128)),
        w(size_t(rows) * K) {
    DevArray<uint16_t> b(size_t(rows) * K);
    ck::fill_random_bf16(b.p, rows * K, seed, 3.f / std::sqrt(float(K)), nullptr);
    if (f == ck::MoeWeightFormat::kInt8) ck::quantize_int8(b.p, q.p, scales.p, int(rows), K, nullptr);
    else ck::quantize_int4(b.p, q.p, scales.p, int(rows), K, nullptr);
    const auto hq = q.download();
    const auto hs = scales.download();
    for (int64_t n = 0; n < rows; ++n)
      for (int k = 0; k < K; ++k) {
        double v;
        if (f == ck::MoeWeightFormat::kInt8) {
          v = (int(hq[size_t(n) * K + k]) - 128) * double(hs[size_t(n)]);
        } else {
          int64_t wb;
          int shift;
          ck::int4_position(K, int(n), k, &wb, &shift);
          const int nib = (hq[size_t(wb) + shift / 8] >> (shift % 8)) & 0xf;
          v = (nib - 8) * double(hs[size_t(n) * (K / 128) + k / 128]);
        }
        w[size_t(n) * K + k] = v;
      }
  }
  ck::MoeMatrix matrix(ck::MoeWeightFormat f) const { return ck::MoeMatrix{q.p, scales.p, f}; }
};

void check(ck::MoeWeightFormat f, int T, int k, int E, int D, int Fe, uint32_t seed) {
  SCOPED_TRACE(std::string(f == ck::MoeWeightFormat::kInt8 ? "int8" : "int4") + " T " + std::to_string(T) + " k " +
               std::to_string(k) + " E " + std::to_string(E) + " D " + std::to_string(D) + " Fe " +
               std::to_string(Fe));
  std::mt19937 rng(seed);
  const QuantStack gate(f, int64_t(E) * Fe, D, seed + 1), up(f, int64_t(E) * Fe, D, seed + 2),
      down(f, int64_t(E) * D, Fe, seed + 3);
  // Random choices with repeats across tokens (several pairs per expert) and one expert never chosen.
  std::vector<int32_t> ids(size_t(T) * k);
  std::uniform_int_distribution<int> pick(0, E - 2);
  for (auto& id : ids) id = pick(rng);
  std::vector<int32_t> offsets(size_t(E) + 1, 0), pairs(ids.size());
  for (int32_t e : ids) ++offsets[size_t(e) + 1];
  for (int e = 0; e < E; ++e) offsets[size_t(e) + 1] += offsets[size_t(e)];
  std::vector<int32_t> fill(offsets.begin(), offsets.end() - 1);
  for (size_t i = 0; i < ids.size(); ++i) pairs[size_t(fill[size_t(ids[i])]++)] = int32_t(i);
  const auto x = random_bf16(size_t(T) * D, rng);
  DevArray<uint16_t> dx(x), act(size_t(T) * k * Fe);
  DevArray<int32_t> doff(offsets), dpairs(pairs);
  DevArray<float> y(size_t(T) * k * D);
  ck::moe_gate_up_silu(dx.p, doff.p, dpairs.p, T, k, gate.matrix(f), up.matrix(f), E, Fe, D, act.p, nullptr);
  ck::moe_down(act.p, doff.p, dpairs.p, T, k, down.matrix(f), E, D, Fe, y.p, nullptr);
  const auto got_act = act.download();
  const auto got_y = y.download();
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<float> want_act(got_act.size()), want_y(got_y.size()), act_f(got_act.size());
  for (size_t i = 0; i < got_act.size(); ++i) act_f[i] = bf16_to_f32(got_act[i]);
  for (int p = 0; p < T * k; ++p) {
    const int t = p / k, e = ids[size_t(p)];
    for (int n = 0; n < Fe; ++n) {
      double g = 0, u = 0;
      for (int d = 0; d < D; ++d) {
        const double xv = bf16_to_f32(x[size_t(t) * D + d]);
        g += xv * gate.w[(size_t(e) * Fe + n) * D + d], u += xv * up.w[(size_t(e) * Fe + n) * D + d];
      }
      want_act[size_t(p) * Fe + n] = float(g / (1.0 + std::exp(-g)) * u);
    }
    for (int n = 0; n < D; ++n) {  // down from the kernel's own bf16 act: only the down GEMV is under test here
      double s = 0;
      for (int j = 0; j < Fe; ++j) s += double(act_f[size_t(p) * Fe + j]) * down.w[(size_t(e) * D + n) * Fe + j];
      want_y[size_t(p) * D + n] = float(s);
    }
  }
  EXPECT_LE(nmse(act_f, want_act), 2e-5) << "gate|up + SiLU (act rounded to bf16)";
  EXPECT_LE(nmse(got_y, want_y), 1e-9) << "down";
  // The bf16 of the same act values differs by at most bf16 rounding: no row may be far off either.
  double worst = 0;
  for (size_t i = 0; i < act_f.size(); ++i)
    worst = std::max(worst, std::fabs(double(act_f[i]) - want_act[i]) / (std::fabs(double(want_act[i])) + 1e-3));
  EXPECT_LE(worst, 1e-2);
}

TEST(CudaMoeQuant, GroupedGemvsMatchTheDequantisedReference) {
  SKIP_WITHOUT_GPU();
  for (const auto f : {ck::MoeWeightFormat::kInt8, ck::MoeWeightFormat::kInt4}) {
    check(f, 5, 2, 6, 256, 384, 21);     // small: several pairs per expert, one expert idle
    check(f, 1, 8, 66, 2048, 1408, 22);  // V2-Lite decode: 6 routed + 2 shared choices of 66 slots
    check(f, 19, 8, 66, 2048, 1408, 23);  // more than one chunk of 8 pairs for some experts
  }
}

}  // namespace
}  // namespace citadel::gputest
