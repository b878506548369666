// Tokenizer API: loaders agree, special ids and end-of-generation, streaming decode, hostile metadata.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "format/tensor_store.h"
#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab_meta.h"

namespace citadel {
namespace {

using nlohmann::json;

std::unique_ptr<Tokenizer> synthetic(const std::string& family) {
  std::ifstream in(testing::golden("tokenizer/synthetic_bpe.json"));
  std::stringstream ss;
  ss << in.rdbuf();
  json f = json::parse(ss.str());
  auto t = Tokenizer::from_hf_json_text(f["families"][family]["tokenizer_json"].dump(), family);
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  return t.ok() ? std::move(t).value() : nullptr;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    auto b = static_cast<uint8_t>(s[i]);
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

TEST(IncrementalDecoder, HoldsBackIncompleteCharacters) {
  auto t = synthetic("llama3");
  ASSERT_TRUE(t);
  std::string text = "😀 你好 👨‍👩‍👧 é";
  std::vector<int32_t> ids = t->encode(text, false);
  ASSERT_GT(ids.size(), 8u);  // the small vocab splits these into byte tokens
  IncrementalDecoder dec(*t);
  std::string out;
  int held = 0;
  for (int32_t id : ids) {
    std::string piece = dec.push(id);
    EXPECT_TRUE(valid_utf8(piece)) << json(piece).dump();
    if (piece.empty()) ++held;
    out += piece;
  }
  out += dec.flush();
  EXPECT_GT(held, 0);
  EXPECT_EQ(out, text);
}

TEST(IncrementalDecoder, SkipsSpecialTokensUnlessAsked) {
  auto t = synthetic("qwen2");
  ASSERT_TRUE(t);
  std::vector<int32_t> ids = t->encode("<|im_start|>hi<|im_end|>", false, /*parse_special=*/true);
  ASSERT_EQ(ids.front(), t->token_id("<|im_start|>"));
  EXPECT_TRUE(t->is_special(ids.front()));
  EXPECT_TRUE(t->is_eog(t->token_id("<|im_end|>")));
  EXPECT_FALSE(t->is_eog(t->token_id("<|im_start|>")));
  EXPECT_EQ(t->decode(ids, /*skip_special=*/true), "hi");
  EXPECT_EQ(t->decode(ids), "<|im_start|>hi<|im_end|>");
  // Without parse_special the same string is plain text.
  EXPECT_NE(t->encode("<|im_start|>", false, false).front(), t->token_id("<|im_start|>"));
  IncrementalDecoder keep(*t, /*skip_special=*/false), skip(*t, /*skip_special=*/true);
  std::string a, b;
  for (int32_t id : ids) {
    a += keep.push(id);
    b += skip.push(id);
  }
  EXPECT_EQ(a + keep.flush(), "<|im_start|>hi<|im_end|>");
  EXPECT_EQ(b + skip.flush(), "hi");
}

TEST(Tokenizer, ConcurrentEncodeMatchesSerial) {
  auto t = synthetic("smollm");
  ASSERT_TRUE(t);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back("word" + std::to_string(i * 7919) + " 你好 " + std::to_string(i) + "!");
  std::vector<std::vector<int32_t>> want;
  for (const auto& s : texts) want.push_back(t->encode(s, false));
  t->clear_cache();
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 5; ++rep) {
        for (size_t i = 0; i < texts.size(); ++i) mismatches[k] += t->encode(texts[(i + k * 13) % texts.size()], false) != want[(i + k * 13) % texts.size()];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

TEST(TokenizerModels, SmolLM2SpecialIdsAndStoreLoader) {
  std::string path = testing::model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (path.empty()) GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf not found";
  auto a = Tokenizer::from_gguf_file(path);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  auto store = open_gguf(path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  auto b = Tokenizer::from_store(**store);
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  const Tokenizer& t = **a;
  EXPECT_EQ(t.n_vocab(), 49152);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.pad_id(), 2);
  EXPECT_FALSE(t.add_bos());
  EXPECT_EQ(t.pre_tokenizer(), tok::PreTokenizer::kSmollm);
  EXPECT_TRUE(t.is_eog(2));
  EXPECT_TRUE(t.is_eog(t.token_id("<|im_end|>")));
  EXPECT_FALSE(t.is_eog(t.token_id("<|im_start|>")));
  EXPECT_EQ((*b)->n_vocab(), t.n_vocab());
  std::string text = "<|im_start|>user\nWhat is 12345 + 678? 你好 😀<|im_end|>\n";
  EXPECT_EQ(t.encode(text, true, true), (*b)->encode(text, true, true));
  EXPECT_EQ(t.encode(text, true, true).front(), t.token_id("<|im_start|>"));
  EXPECT_EQ(t.token_to_piece(t.token_id("Ġthe")), " the");
}

TEST(TokenizerModels, R1DistillEogAndBos) {
  std::string path = testing::model_file("deepseek-r1-distill-qwen-vocab.gguf");
  if (path.empty()) GTEST_SKIP() << "deepseek-r1-distill-qwen-vocab.gguf not found (make_tokenizer_fixtures.py vocab-gguf)";
  auto t = Tokenizer::from_gguf_file(path);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_TRUE((*t)->add_bos());
  std::vector<int32_t> ids = (*t)->encode("hi", true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), (*t)->bos_id());
  EXPECT_TRUE((*t)->is_eog((*t)->token_id("<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>")));
  // <think> is user-defined: matched even without parse_special.
  EXPECT_EQ((*t)->encode("<think>", false, false), std::vector<int32_t>{(*t)->token_id("<think>")});
}

// A tiny GGUF header with a tokenizer, built by hand.
struct HeaderBuilder {
  std::string b;
  template <typename T> void put(T v) { b.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
  void str(const std::string& s) { put<uint64_t>(s.size()); b += s; }
  void kv_str(const std::string& k, const std::string& v) { str(k); put<uint32_t>(8); str(v); }
  void kv_strs(const std::string& k, const std::vector<std::string>& v) {
    str(k); put<uint32_t>(9); put<uint32_t>(8); put<uint64_t>(v.size());
    for (const auto& s : v) str(s);
  }
};

std::string tiny_header() {
  HeaderBuilder h;
  h.b = "GGUF";
  h.put<uint32_t>(3);
  h.put<uint64_t>(0);
  h.put<uint64_t>(4);
  h.kv_str("tokenizer.ggml.model", "gpt2");
  h.kv_str("tokenizer.ggml.pre", "qwen2");
  std::vector<std::string> tokens = {"a", "b", "ab", "\xC4\xA0", "\xC4\xA0" "a"};
  h.kv_strs("tokenizer.ggml.tokens", tokens);
  h.kv_strs("tokenizer.ggml.merges", {"a b", "\xC4\xA0 a", "zz top"});
  return h.b;
}

TEST(TokenizerHostile, TinyHeaderParsesAndEveryTruncationFailsCleanly) {
  std::string hdr = tiny_header();
  auto m = tok::GgufHeaderMeta::parse(reinterpret_cast<const uint8_t*>(hdr.data()), hdr.size(), "tiny");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  auto spec = tok::vocab_from_meta(*m);
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  auto t = Tokenizer::from_spec(*spec);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ((*t)->encode("ab a", false), (std::vector<int32_t>{2, 4}));
  for (size_t n = 0; n < hdr.size(); ++n) {
    auto r = tok::GgufHeaderMeta::parse(reinterpret_cast<const uint8_t*>(hdr.data()), n, "tiny");
    EXPECT_FALSE(r.ok()) << n;
  }
}

TEST(TokenizerHostile, RandomCorruptionNeverCrashes) {
  std::string hdr = tiny_header();
  std::mt19937 rng(1234);
  int ok = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = hdr;
    int flips = 1 + rng() % 4;
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<char>(rng());
    auto m = tok::GgufHeaderMeta::parse(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "fuzz");
    if (!m.ok()) continue;
    auto spec = tok::vocab_from_meta(*m);
    if (!spec.ok()) continue;
    auto t = Tokenizer::from_spec(*spec);
    if (!t.ok()) continue;
    (*t)->encode("ab a \xFF\xFE zz", true, true);
    ++ok;
  }
  EXPECT_GT(ok, 0);
}

TEST(TokenizerHostile, ClearErrors) {
  auto r = Tokenizer::from_path("/nonexistent/model.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/model.gguf"), std::string::npos);
  auto j = Tokenizer::from_hf_json_text("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", "x.json");
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("x.json"), std::string::npos);
  auto bad = Tokenizer::from_hf_json_text("{not json", "y.json");
  ASSERT_FALSE(bad.ok());
  VocabSpec s;
  s.tokens = {"a"};
  s.pre = "no-such-pre";
  auto u = Tokenizer::from_spec(s);
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.status().message().find("no-such-pre"), std::string::npos);
}

}  // namespace
}  // namespace citadel
