#include "format/gguf_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/half.h"
#include "base/subprocess.h"

namespace citadel {
namespace {
namespace fs = std::filesystem;

std::string tmp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("citadel_gguf_writer_" + std::to_string(getpid()) + "_" + name)).string();
}

std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// A file with one KV of every type and three tensors; returns the writer's expectations.
void build_sample(GgufWriter& w) {
  w.add_string("general.architecture", "llama");
  w.add_u8("t.u8", 200);
  w.add_i8("t.i8", -100);
  w.add_u16("t.u16", 60000);
  w.add_i16("t.i16", -30000);
  w.add_u32("t.u32", 4000000000u);
  w.add_i32("t.i32", -2000000000);
  w.add_f32("t.f32", 0.5f);
  w.add_bool("t.bool", true);
  w.add_u64("t.u64", 1ull << 40);
  w.add_i64("t.i64", -(1ll << 40));
  w.add_f64("t.f64", 0.25);
  w.add_string_array("t.strs", {"a", "", "Ġhello", "<|im_end|>"});
  w.add_i32_array("t.i32s", {1, -2, 3});
  w.add_f32_array("t.f32s", {1.5f, -2.0f});
  w.add_u32_array("t.u32s", {7});
  w.add_u8_array("t.u8s", {1, 2});
  w.add_bool_array("t.bools", {true, false});
  std::vector<float> a(3 * 5);  // [3, 5]
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) - 7.0f;
  ASSERT_TRUE(w.add_tensor("a.weight", DType::kF32, {3, 5}, a.data(), a.size() * 4).ok());
  std::vector<uint16_t> b(2 * 7);  // [2, 7] f16 (odd byte size: exercises padding)
  for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_f16(static_cast<float>(i) * 0.5f);
  ASSERT_TRUE(w.add_tensor("b.weight", DType::kF16, {2, 7}, b.data(), b.size() * 2).ok());
  std::vector<uint8_t> q(2 * sizeof(BlockQ8_0), 0);  // [1, 64] q8_0 = 2 blocks
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(w.add_tensor("c.weight", DType::kQ8_0, {1, 64}, q.data(), q.size()).ok());
}

TEST(GgufWriter, LayoutHeaderAndAlignment) {
  GgufWriter w;
  build_sample(w);
  const std::string p = tmp_path("layout.gguf");
  ASSERT_TRUE(w.write_file(p).ok());
  const std::string bytes = read_all(p);
  ASSERT_EQ(bytes.size(), w.file_bytes());
  EXPECT_EQ(bytes.substr(0, 4), "GGUF");
  uint32_t version;
  uint64_t nt, nkv;
  std::memcpy(&version, bytes.data() + 4, 4);
  std::memcpy(&nt, bytes.data() + 8, 8);
  std::memcpy(&nkv, bytes.data() + 16, 8);
  EXPECT_EQ(version, 3u);
  EXPECT_EQ(nt, 3u);
  EXPECT_EQ(nkv, 19u);  // 18 + general.alignment
  EXPECT_EQ(w.header_bytes() % 32, 0u);
  for (const auto& t : w.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
  // f16 tensor is 28 bytes: next tensor starts at the next multiple of 32, zero padded.
  EXPECT_EQ(w.tensors()[2].offset, w.tensors()[1].offset + 32);
  for (int i = 28; i < 32; ++i) EXPECT_EQ(bytes[w.header_bytes() + w.tensors()[1].offset + i], 0);
  // a.weight data at the data section start.
  float first;
  std::memcpy(&first, bytes.data() + w.header_bytes(), 4);
  EXPECT_EQ(first, -7.0f);
  fs::remove(p);
}

TEST(GgufWriter, RejectsBadInput) {
  GgufWriter w;
  float x[4] = {};
  EXPECT_FALSE(w.add_tensor("x", DType::kF32, {2, 2}, x, 12).ok());       // wrong byte count
  EXPECT_FALSE(w.declare_tensor("q", DType::kQ4_0, {2, 16}).ok());        // not a block multiple
  EXPECT_FALSE(w.declare_tensor(std::string(65, 'n'), DType::kF32, {1}).ok());
  EXPECT_FALSE(w.declare_tensor("r", DType::kF32, {1, 1, 1, 1, 1}).ok());
  EXPECT_FALSE(w.declare_tensor("f8", DType::kF8E4M3, {4}).ok());         // a safetensors-only dtype: no GGUF id
  ASSERT_TRUE(w.add_tensor("x", DType::kF32, {2, 2}, x, 16).ok());
  EXPECT_FALSE(w.add_tensor("x", DType::kF32, {2, 2}, x, 16).ok());       // duplicate
  w.add_u32("k", 1);
  w.add_u32("k", 2);
  EXPECT_FALSE(w.write_file(tmp_path("dup.gguf")).ok());                  // duplicate key
  EXPECT_FALSE(fs::exists(tmp_path("dup.gguf")));
}

TEST(GgufWriter, StreamingNeedsEveryByte) {
  const std::string p = tmp_path("stream.gguf");
  {
    GgufWriter w;
    ASSERT_TRUE(w.declare_tensor("t", DType::kF32, {4, 8}).ok());
    ASSERT_TRUE(w.begin(p).ok());
    std::vector<float> row(8, 1.0f);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(w.write_tensor_data(row.data(), 32).ok());
    EXPECT_FALSE(w.finish().ok());  // one row missing: no file
  }
  EXPECT_FALSE(fs::exists(p));
  GgufWriter w;
  ASSERT_TRUE(w.declare_tensor("t", DType::kF32, {4, 8}).ok());
  ASSERT_TRUE(w.begin(p).ok());
  std::vector<float> all(32, 2.0f);
  ASSERT_TRUE(w.write_tensor_data(all.data(), 128).ok());
  EXPECT_FALSE(w.write_tensor_data(all.data(), 4).ok());  // too many
  ASSERT_TRUE(w.finish().ok());
  EXPECT_EQ(fs::file_size(p), w.file_bytes());
  fs::remove(p);
}

// Reads the sample back with the independent python `gguf` package.
TEST(GgufWriter, ReadBackByPythonGguf) {
  auto probe = run_process({"python3", "-c", "import gguf, numpy"});
  if (!probe.ok() || probe->exit_code != 0) GTEST_SKIP() << "python3 with the gguf package is not available";
  GgufWriter w;
  build_sample(w);
  const std::string p = tmp_path("py.gguf");
  ASSERT_TRUE(w.write_file(p).ok());
  const char* script = R"PY(
import json, sys, gguf
r = gguf.GGUFReader(sys.argv[1])
out = {"kv": {}, "tensors": {}}
for k, f in r.fields.items():
    if k.startswith("GGUF."):
        continue
    out["kv"][k] = f.contents()
for t in r.tensors:
    out["tensors"][t.name] = {"type": int(t.tensor_type), "shape": [int(x) for x in reversed(list(t.shape))],
                              "nbytes": int(t.n_bytes), "first": [float(x) for x in t.data.reshape(-1)[:3]]}
print(json.dumps(out))
)PY";
  auto r = run_process({"python3", "-c", script, p});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->exit_code, 0) << r->output;
  const auto j = nlohmann::json::parse(r->output.substr(r->output.find('{')));
  const auto& kv = j["kv"];
  EXPECT_EQ(kv["general.architecture"], "llama");
  EXPECT_EQ(kv["general.alignment"], 32);
  EXPECT_EQ(kv["t.u8"], 200);
  EXPECT_EQ(kv["t.i8"], -100);
  EXPECT_EQ(kv["t.u16"], 60000);
  EXPECT_EQ(kv["t.i16"], -30000);
  EXPECT_EQ(kv["t.u32"], 4000000000u);
  EXPECT_EQ(kv["t.i32"], -2000000000);
  EXPECT_EQ(kv["t.f32"], 0.5);
  EXPECT_EQ(kv["t.bool"], true);
  EXPECT_EQ(kv["t.u64"], 1ull << 40);
  EXPECT_EQ(kv["t.i64"], -(1ll << 40));
  EXPECT_EQ(kv["t.f64"], 0.25);
  EXPECT_EQ(kv["t.strs"], nlohmann::json::array({"a", "", "Ġhello", "<|im_end|>"}));
  EXPECT_EQ(kv["t.i32s"], nlohmann::json::array({1, -2, 3}));
  EXPECT_EQ(kv["t.f32s"], nlohmann::json::array({1.5, -2.0}));
  EXPECT_EQ(kv["t.u32s"], nlohmann::json::array({7}));
  EXPECT_EQ(kv["t.u8s"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(kv["t.bools"], nlohmann::json::array({true, false}));
  const auto& ts = j["tensors"];
  EXPECT_EQ(ts["a.weight"]["shape"], nlohmann::json::array({3, 5}));
  EXPECT_EQ(ts["a.weight"]["type"], 0);
  EXPECT_EQ(ts["a.weight"]["first"], nlohmann::json::array({-7.0, -6.0, -5.0}));
  EXPECT_EQ(ts["b.weight"]["shape"], nlohmann::json::array({2, 7}));
  EXPECT_EQ(ts["b.weight"]["first"], nlohmann::json::array({0.0, 0.5, 1.0}));
  EXPECT_EQ(ts["c.weight"]["type"], 8);
  EXPECT_EQ(ts["c.weight"]["nbytes"], 68);
  fs::remove(p);
}

}  // namespace
}  // namespace citadel
