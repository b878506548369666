// /v1/embeddings request parsing and response shaping (no model): the input forms, the limits, the OpenAI error
// params, base64 of little-endian float32, dimensions' truncate-and-renormalise; tokenization against a model: an
// input past the model's length cut or refused per embedding_truncate, the per-request token cap.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "api/openai/embeddings.h"

namespace citadel::api {
namespace {

using ojson = nlohmann::ordered_json;

std::optional<ApiError> parse(const std::string& text, EmbeddingRequest* r) {
  return parse_embedding_request(ojson::parse(text), r);
}

TEST(Embeddings, ParsesEveryInputForm) {
  EmbeddingRequest a, b, c, d;
  ASSERT_FALSE(parse(R"({"model":"m","input":"hello"})", &a));
  EXPECT_EQ(a.texts, std::vector<std::string>{"hello"});
  EXPECT_FALSE(a.tokens || a.base64);
  ASSERT_FALSE(parse(R"({"model":"m","input":["x","y"],"encoding_format":"base64","dimensions":8,"user":"u"})", &b));
  EXPECT_EQ(b.size(), 2u);
  EXPECT_TRUE(b.base64);
  EXPECT_EQ(b.dimensions, 8);
  EXPECT_EQ(b.user, "u");
  ASSERT_FALSE(parse(R"({"model":"m","input":[1,2,3],"encoding_format":null})", &c));
  ASSERT_TRUE(c.tokens);
  EXPECT_EQ(c.token_inputs, (std::vector<std::vector<int32_t>>{{1, 2, 3}}));
  ASSERT_FALSE(parse(R"({"model":"m","input":[[1],[2,3]]})", &d));
  EXPECT_EQ(d.token_inputs, (std::vector<std::vector<int32_t>>{{1}, {2, 3}}));
}

TEST(Embeddings, RejectsBadInputWithTheParam) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"input":"a"})", "model"},
      {R"({"model":3,"input":"a"})", "model"},
      {R"({"model":"m"})", "input"},
      {R"({"model":"m","input":""})", "input"},
      {R"({"model":"m","input":[]})", "input"},
      {R"({"model":"m","input":[""]})", "input"},
      {R"({"model":"m","input":[[]]})", "input"},
      {R"({"model":"m","input":["a",[1]]})", "input"},
      {R"({"model":"m","input":[1,"a"]})", "input"},
      {R"({"model":"m","input":[1,-2]})", "input"},
      {R"({"model":"m","input":[1,2.5]})", "input"},
      {R"({"model":"m","input":[1,4294967296]})", "input"},
      {R"({"model":"m","input":true})", "input"},
      {R"({"model":"m","input":"a","encoding_format":"int8"})", "encoding_format"},
      {R"({"model":"m","input":"a","encoding_format":1})", "encoding_format"},
      {R"({"model":"m","input":"a","dimensions":0})", "dimensions"},
      {R"({"model":"m","input":"a","dimensions":1.5})", "dimensions"},
      {R"({"model":"m","input":"a","user":{}})", "user"},
  };
  for (const auto& [body, param] : cases) {
    EmbeddingRequest r;
    const auto e = parse(body, &r);
    ASSERT_TRUE(e.has_value()) << body;
    EXPECT_EQ(e->status, 400) << body;
    EXPECT_EQ(e->param, param) << body;
    EXPECT_EQ(e->type, "invalid_request_error");
  }
}

TEST(Embeddings, AtMost2048Inputs) {
  ojson body = {{"model", "m"}, {"input", std::vector<std::string>(kMaxEmbeddingInputs, "a")}};
  EmbeddingRequest ok, over;
  EXPECT_FALSE(parse_embedding_request(body, &ok));
  body["input"].push_back("a");
  const auto e = parse_embedding_request(body, &over);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->message.find("2048"), std::string::npos) << e->message;
}

TEST(Embeddings, Base64IsRfc4648) {
  EXPECT_EQ(base64_encode("", 0), "");
  EXPECT_EQ(base64_encode("f", 1), "Zg==");
  EXPECT_EQ(base64_encode("fo", 2), "Zm8=");
  EXPECT_EQ(base64_encode("foo", 3), "Zm9v");
  EXPECT_EQ(base64_encode("foobar", 6), "Zm9vYmFy");
  const float one = 1.0f;  // 00 00 80 3f little-endian
  EXPECT_EQ(base64_encode(&one, 4), "AACAPw==");
}

TEST(Embeddings, ResponseShapeDimensionsAndBase64) {
  EmbeddingRequest r;
  r.texts = {"a", "b"};
  const std::vector<float> rows = {0.6f, 0.0f, 0.8f, 0.0f, 1.0f, 0.0f};  // two unit vectors of width 3
  ojson full = embedding_response(r, "m", 3, rows, 7);
  EXPECT_EQ(full["object"], "list");
  EXPECT_EQ(full["model"], "m");
  EXPECT_EQ(full["usage"], (ojson{{"prompt_tokens", 7}, {"total_tokens", 7}}));
  ASSERT_EQ(full["data"].size(), 2u);
  EXPECT_EQ(full["data"][1]["index"], 1);
  EXPECT_EQ(full["data"][1]["object"], "embedding");
  EXPECT_EQ(full["data"][0]["embedding"].size(), 3u);
  r.dimensions = 2;  // [0.6, 0] -> [1, 0]; [0, 1] stays
  ojson cut = embedding_response(r, "m", 3, rows, 7);
  EXPECT_FLOAT_EQ(cut["data"][0]["embedding"][0].get<float>(), 1.0f);
  EXPECT_FLOAT_EQ(cut["data"][1]["embedding"][1].get<float>(), 1.0f);
  r.base64 = true;
  ojson b64 = embedding_response(r, "m", 3, rows, 7);
  const float want[2] = {1.0f, 0.0f};
  EXPECT_EQ(b64["data"][0]["embedding"], base64_encode(want, sizeof(want)));
}

// A model of width 4 reading at most 6 tokens; text is one token per byte (id = byte + 10), [CLS] = 1, [SEP] = 2.
class ByteCodec : public TextCodec {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool) const override {
    std::vector<int32_t> out;
    if (add_special) out.push_back(1);
    for (unsigned char c : text) out.push_back(c + 10);
    if (add_special) out.push_back(2);
    return out;
  }
  std::unique_ptr<StreamDecoder> decoder() const override { return nullptr; }
  std::string piece(int32_t) const override { return ""; }
  std::vector<int32_t> eog_ids() const override { return {}; }
  int32_t n_vocab() const override { return 300; }
  std::string bos_text() const override { return ""; }
  std::string eos_text() const override { return ""; }
};

class WidthFour : public engine::EmbeddingRunner {
 public:
  int dim() const override { return 4; }
  int max_tokens() const override { return 6; }
  Status embed(const std::vector<std::vector<int32_t>>&, float*) override { return Unsupported("not run here"); }
};

std::unique_ptr<ModelHost> small_model() {
  auto h = std::make_unique<ModelHost>();
  h->served_name = "mini";
  h->codec = std::make_unique<ByteCodec>();
  h->embed_runner = std::make_unique<WidthFour>();
  h->cls_id = 1, h->sep_id = 2;
  return h;
}

std::optional<ApiError> tokenize(const ModelHost& h, const std::string& body, std::vector<std::vector<int32_t>>* out) {
  EmbeddingRequest r;
  if (auto e = parse(body, &r)) return e;
  return tokenize_embedding_inputs(h, r, out);
}

TEST(Embeddings, LongInputsAreCutLikeThePipelineByDefault) {
  auto model = small_model();
  const ModelHost& h = *model;
  std::vector<std::vector<int32_t>> out;
  ASSERT_FALSE(tokenize(h, R"({"model":"mini","input":["abcd","abcdefg"]})", &out));
  EXPECT_EQ(out, (std::vector<std::vector<int32_t>>{{1, 107, 108, 109, 110, 2}, {1, 107, 108, 109, 110, 2}}));
  ASSERT_FALSE(tokenize(h, R"({"model":"mini","input":[[1,50,51,52,53,54,55,2],[60]]})", &out));
  EXPECT_EQ(out, (std::vector<std::vector<int32_t>>{{1, 50, 51, 52, 53, 2}, {1, 60, 2}}));
}

TEST(Embeddings, LongInputsAreA400WhenTruncationIsOff) {
  auto model = small_model();
  ModelHost& h = *model;
  h.embedding_truncate = false;
  std::vector<std::vector<int32_t>> out;
  ASSERT_FALSE(tokenize(h, R"({"model":"mini","input":["abcd","wxyz"]})", &out));  // exactly 6: fine
  auto e = tokenize(h, R"({"model":"mini","input":["abcd","abcde"]})", &out);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->code, "context_length_exceeded");
  EXPECT_EQ(e->param, "input");
  EXPECT_NE(e->message.find("'input[1]' is 7 tokens"), std::string::npos) << e->message;
  EXPECT_NE(e->message.find("at most 6 tokens per input"), std::string::npos) << e->message;
  e = tokenize(h, R"({"model":"mini","input":[9,9,9,9,9]})", &out);  // + [CLS] [SEP]: 7
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->message.find("'input' is 7 tokens"), std::string::npos) << e->message;
}

TEST(Embeddings, TheRequestTokenCapCountsWhatTheModelWouldRead) {
  auto model = small_model();
  ModelHost& h = *model;
  std::mt19937 rng(21);
  for (int trial = 0; trial < 200; ++trial) {
    h.embedding_truncate = rng() % 2;
    h.embedding_max_request_tokens = 3 + rng() % 40;
    ojson body = {{"model", "mini"}, {"input", ojson::array()}};
    int64_t want = 0;
    bool too_long = false;
    for (int i = 0, n = 1 + rng() % 8; i < n; ++i) {
      const size_t len = 1 + rng() % 8;
      body["input"].push_back(std::string(len, 'q'));
      want += static_cast<int64_t>(std::min<size_t>(len + 2, 6));  // the reference: specials, then the cut
      too_long |= len + 2 > 6;
    }
    std::vector<std::vector<int32_t>> out;
    const std::string text = body.dump();
    const auto e = tokenize(h, text, &out);
    if (too_long && !h.embedding_truncate) {
      ASSERT_TRUE(e.has_value()) << text;
      EXPECT_EQ(e->code, "context_length_exceeded");
      continue;
    }
    if (want <= h.embedding_max_request_tokens) {
      ASSERT_FALSE(e.has_value()) << text << " " << e->message;
      int64_t got = 0;
      for (const auto& x : out) got += static_cast<int64_t>(x.size());
      EXPECT_EQ(got, want);
      continue;
    }
    ASSERT_TRUE(e.has_value()) << text;
    EXPECT_EQ(e->status, 400);
    EXPECT_EQ(e->code, "too_many_tokens");
    EXPECT_EQ(e->param, "input");
    EXPECT_NE(e->message.find("holds " + std::to_string(want) + " tokens"), std::string::npos) << e->message;
    EXPECT_NE(e->message.find("at most " + std::to_string(h.embedding_max_request_tokens) + " tokens per request"),
              std::string::npos) << e->message;
  }
}

}  // namespace
}  // namespace citadel::api
