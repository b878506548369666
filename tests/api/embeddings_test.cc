// /v1/embeddings request parsing and response shaping (no model): the input forms, the limits, the OpenAI error
// params, base64 of little-endian float32, dimensions' truncate-and-renormalise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

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

}  // namespace
}  // namespace citadel::api
