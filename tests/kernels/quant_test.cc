// Our reference (de)quantizers against gguf-py (tests/golden/kernels/quant_fixtures.json, made by
// tools/reference/make_quant_fixtures.py) and, for the K-quant quantizers gguf-py lacks, an NMSE bound.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <vector>

#include "kernels/quant/quant.h"
#include "tests/test_util.h"

namespace citadel {
namespace {

std::vector<uint8_t> from_hex(const std::string& s) {
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return out;
}

std::vector<float> floats_from_hex(const std::string& s) {
  std::vector<uint8_t> b = from_hex(s);
  std::vector<float> f(b.size() / 4);
  std::memcpy(f.data(), b.data(), b.size());
  return f;
}

DType dtype_by_name(const std::string& name) {
  for (uint32_t id = 0; id < 40; ++id) {
    const DTypeInfo* info = dtype_info(id);
    if (info && name == info->name) return static_cast<DType>(id);
  }
  ADD_FAILURE() << "unknown dtype " << name;
  return DType::kF32;
}

nlohmann::json load_fixtures() {
  std::ifstream f(testing::golden("kernels/quant_fixtures.json"));
  EXPECT_TRUE(f.good()) << "missing tests/golden/kernels/quant_fixtures.json";
  std::stringstream ss;
  ss << f.rdbuf();
  return nlohmann::json::parse(ss.str());
}

TEST(Quant, DequantizeMatchesGgufPyBitwise) {
  nlohmann::json j = load_fixtures();
  int n_types = 0;
  for (auto& [name, c] : j["dequantize"].items()) {
    const DType t = dtype_by_name(name);
    const int64_t n = c["n"].get<int64_t>();
    std::vector<uint8_t> raw = from_hex(c["raw"].get<std::string>());
    std::vector<float> want = floats_from_hex(c["values"].get<std::string>());
    ASSERT_EQ(raw.size(), dtype_row_bytes(t, n)) << name;
    std::vector<float> got(n);
    ASSERT_TRUE(dequantize_row(t, raw.data(), got.data(), n).ok()) << name;
    for (int64_t i = 0; i < n; ++i) {
      uint32_t a, b;
      std::memcpy(&a, &got[i], 4);
      std::memcpy(&b, &want[i], 4);
      ASSERT_EQ(a, b) << name << " element " << i << ": " << got[i] << " vs gguf-py " << want[i];
    }
    ++n_types;
  }
  EXPECT_EQ(n_types, 13);
}

TEST(Quant, QuantizeMatchesGgufPyBytes) {
  nlohmann::json j = load_fixtures();
  int n_types = 0;
  for (auto& [name, c] : j["quantize"].items()) {
    const DType t = dtype_by_name(name);
    const int64_t n = c["n"].get<int64_t>();
    std::vector<float> x = floats_from_hex(c["input"].get<std::string>());
    std::vector<uint8_t> want = from_hex(c["raw"].get<std::string>());
    ASSERT_EQ(want.size(), dtype_row_bytes(t, n)) << name;
    std::vector<uint8_t> got(want.size());
    ASSERT_TRUE(quantize_row(t, x.data(), got.data(), n).ok()) << name;
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], want[i]) << name << " byte " << i << " (block " << i / dtype_info(t)->block_bytes << ")";
    ++n_types;
  }
  EXPECT_EQ(n_types, 7);
}

double nmse(const std::vector<float>& ref, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return num / den;
}

double roundtrip_nmse(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(dtype_row_bytes(t, x.size()));
  std::vector<float> y(x.size());
  EXPECT_TRUE(quantize_row(t, x.data(), q.data(), x.size()).ok());
  EXPECT_TRUE(dequantize_row(t, q.data(), y.data(), x.size()).ok());
  return nmse(x, y);
}

// K-quants: our own scale search. Bounds: the K-quant must beat the 32-block format of the same bit width (whose
// bytes are checked against gguf-py above), and stay under an absolute NMSE bound for Gaussian weights.
TEST(Quant, KQuantRoundTripError) {
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 0.02f);
  std::vector<float> x(256 * 64);
  for (float& v : x) v = g(rng);
  for (size_t i = 0; i < x.size(); i += 997) x[i] *= 6;  // a few outliers
  const double e41 = roundtrip_nmse(DType::kQ4_1, x), e51 = roundtrip_nmse(DType::kQ5_1, x);
  const double e4k = roundtrip_nmse(DType::kQ4_K, x), e5k = roundtrip_nmse(DType::kQ5_K, x);
  const double e6k = roundtrip_nmse(DType::kQ6_K, x), e80 = roundtrip_nmse(DType::kQ8_0, x);
  std::printf("NMSE q4_1 %.2e q4_K %.2e | q5_1 %.2e q5_K %.2e | q6_K %.2e | q8_0 %.2e\n", e41, e4k, e51, e5k, e6k,
              e80);
  EXPECT_LT(e4k, e41);
  EXPECT_LT(e5k, e51);
  EXPECT_LT(e4k, 6e-3);
  EXPECT_LT(e5k, 1.5e-3);
  EXPECT_LT(e6k, 4e-4);
  EXPECT_LT(e6k, e5k);
}

TEST(Quant, ActivationQuantizers) {
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(512);
  for (float& v : x) v = g(rng);
  std::vector<BlockQ8_0> a(512 / kQK);
  quantize_row_q8_0(x.data(), a.data(), 512);
  std::vector<float> y(512);
  ASSERT_TRUE(dequantize_row(DType::kQ8_0, a.data(), y.data(), 512).ok());
  EXPECT_LT(nmse(x, y), 1e-4);
  std::vector<BlockQ8_K> k(2);
  quantize_row_q8_K(x.data(), k.data(), 512);
  for (int b = 0; b < 2; ++b) {
    for (int g16 = 0; g16 < 16; ++g16) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += k[b].qs[16 * g16 + l];
      EXPECT_EQ(s, k[b].bsums[g16]);
    }
    for (int l = 0; l < 256; ++l) y[256 * b + l] = k[b].d * k[b].qs[l];
  }
  EXPECT_LT(nmse(x, y), 1e-4);
}

TEST(Quant, BadArgumentsAreStatus) {
  float x[33] = {};
  uint8_t buf[64];
  EXPECT_EQ(quantize_row(DType::kQ4_0, x, buf, 33).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dequantize_row(DType::kQ4_K, buf, x, 32).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dequantize_row(DType::kI32, buf, x, 4).code(), StatusCode::kUnsupported);
  EXPECT_EQ(quantize_row(DType::kQ2_K, x, buf, 0).code(), StatusCode::kUnsupported);
  EXPECT_EQ(dequantize_row(DType::kQ8_0, buf, x, -32).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace citadel
