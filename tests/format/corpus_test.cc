// The seed corpus (tests/golden/format/corpus/*.bin) was written by gguf-py's GGUFWriter, an independent writer;
// manifest.json records what gguf-py's reader sees. Our reader must see the same, for v3 files and their v2 twins.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "format/tensor_store.h"
#include "tests/test_util.h"

namespace citadel {
namespace {

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::string short_type(const std::string& py) {
  static const std::map<std::string, std::string> kMap = {
      {"uint8", "u8"},   {"int8", "i8"},   {"uint16", "u16"},  {"int16", "i16"},   {"uint32", "u32"},
      {"int32", "i32"},  {"uint64", "u64"}, {"int64", "i64"},  {"float32", "f32"}, {"float64", "f64"},
      {"bool", "bool"},  {"string", "string"}, {"array", "array"}};
  auto it = kMap.find(py);
  return it == kMap.end() ? py : it->second;
}

void check_value(const MetaValue& v, const nlohmann::json& w, const std::string& key) {
  EXPECT_EQ(meta_type_name(v.type), short_type(w["type"].get<std::string>())) << key;
  if (w["type"] == "array") {
    ASSERT_NE(v.as_array(), nullptr) << key;
    const MetaArray& a = *v.as_array();
    ASSERT_EQ(a.size(), w["count"].get<size_t>()) << key;
    for (size_t i = 0; i < w["first"].size(); ++i) {
      if (w["first"][i].is_string()) {
        EXPECT_EQ(*a[i].as_string(), w["first"][i].get<std::string>()) << key;
      } else {
        EXPECT_EQ(a[i].as_int(), w["first"][i].get<int64_t>()) << key;
      }
    }
  } else if (w["value"].is_string()) {
    EXPECT_EQ(*v.as_string(), w["value"].get<std::string>()) << key;
  } else if (w["value"].is_boolean()) {
    EXPECT_EQ(v.as_bool(), w["value"].get<bool>()) << key;
  } else if (w["value"].is_number_unsigned()) {
    EXPECT_EQ(std::get<uint64_t>(v.v), w["value"].get<uint64_t>()) << key;
  } else if (w["value"].is_number_integer()) {
    EXPECT_EQ(v.as_int(), w["value"].get<int64_t>()) << key;
  } else {
    EXPECT_EQ(v.as_float(), w["value"].get<double>()) << key;
  }
}

TEST(GgufCorpus, MatchesGgufPy) {
  const std::string dir = citadel::testing::golden("format/corpus/");
  std::ifstream mf(dir + "manifest.json");
  ASSERT_TRUE(mf.good()) << dir;
  nlohmann::json manifest = nlohmann::json::parse(mf);
  ASSERT_GE(manifest.size(), 4u);
  for (const auto& [file, want] : manifest.items()) {
    for (const std::string& name : {file, file.substr(0, file.size() - 4) + "_v2.bin"}) {
      SCOPED_TRACE(name);
      std::vector<uint8_t> b = read_all(dir + name);
      ASSERT_FALSE(b.empty());
      auto r = parse_gguf(b.data(), b.size(), name);
      ASSERT_TRUE(r.ok()) << r.status().message();
      const TensorStore& s = **r;
      EXPECT_EQ(s.version(), name.find("_v2") != std::string::npos ? 2u : 3u);
      EXPECT_EQ(s.metadata().size(), want["n_kv"].get<size_t>());
      EXPECT_EQ(s.alignment(), want["alignment"].get<uint64_t>());
      if (!s.tensors().empty()) {
        EXPECT_EQ(s.data_offset(), want["data_offset"].get<uint64_t>());
      }
      ASSERT_EQ(s.tensors().size(), want["tensors"].size());
      for (size_t i = 0; i < s.tensors().size(); ++i) {
        const TensorInfo& t = s.tensors()[i];
        const auto& w = want["tensors"][i];
        EXPECT_EQ(t.name, w["name"].get<std::string>());
        EXPECT_EQ(t.shape, w["shape"].get<std::vector<int64_t>>());
        EXPECT_EQ(static_cast<uint32_t>(t.dtype), w["type"].get<uint32_t>());
        EXPECT_EQ(t.offset, w["offset"].get<uint64_t>());
        EXPECT_EQ(t.nbytes, w["nbytes"].get<uint64_t>());
        EXPECT_EQ(t.data[0], w["first_byte"].get<uint8_t>());
      }
      for (const auto& [key, w] : want["meta"].items()) {
        const MetaValue* v = s.meta(key);
        ASSERT_NE(v, nullptr) << key;
        check_value(*v, w, key);
      }
      if (const MetaValue* nested = s.meta("t.arr_nested")) {  // [[1, 2], [3]]
        ASSERT_NE(nested->as_array(), nullptr);
        ASSERT_EQ(nested->as_array()->size(), 2u);
        const MetaArray* inner = (*nested->as_array())[0].as_array();
        ASSERT_NE(inner, nullptr);
        ASSERT_EQ(inner->size(), 2u);
        EXPECT_EQ((*inner)[1].as_int(), 2);
      }
    }
  }
}

}  // namespace
}  // namespace citadel
