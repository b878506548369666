// Request parsing and validation: JSON shape, types, ranges, and prompt preparation against a model's context.
#include <gtest/gtest.h>

#include "api/debug_model.h"
#include "api/model_loader.h"
#include "api/openai/request.h"

namespace citadel::api {
namespace {

using ojson = nlohmann::ordered_json;

std::optional<ApiError> chat(const std::string& body, ParsedRequest* r) {
  ojson j;
  if (auto e = parse_json_body(body, &j)) return e;
  return parse_chat_request(j, r);
}

std::optional<ApiError> completion(const std::string& body, ParsedRequest* r) {
  ojson j;
  if (auto e = parse_json_body(body, &j)) return e;
  return parse_completion_request(j, r);
}

TEST(Request, ParsesAFullChatRequest) {
  ParsedRequest r;
  auto e = chat(R"({"model":"m","messages":[{"role":"developer","content":"be brief"},
      {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
      "temperature":0.5,"top_p":0.9,"presence_penalty":1,"frequency_penalty":-1,"seed":42,"n":3,
      "max_completion_tokens":17,"stop":["a","b"],"stream":true,"stream_options":{"include_usage":true},
      "logprobs":true,"top_logprobs":5,"logit_bias":{"7":-100,"9":2.5},"user":"u1"})", &r);
  ASSERT_FALSE(e) << e->message;
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.messages[0]["role"], "system");
  EXPECT_EQ(r.messages[1]["content"], "hi there");
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 1.0f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -1.0f);
  EXPECT_TRUE(r.sampling.has_seed);
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(r.max_tokens, 17);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.sampling.top_logprobs, 5);
  ASSERT_EQ(r.sampling.logit_bias.size(), 2u);
  EXPECT_EQ(r.sampling.logit_bias[0].first, 7);
  EXPECT_FLOAT_EQ(r.sampling.logit_bias[0].second, -100.0f);
  EXPECT_EQ(r.user, "u1");
}

TEST(Request, DefaultsWhenFieldsAreAbsentOrNull) {
  ParsedRequest r;
  auto e = chat(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":null,"stop":null})", &r);
  ASSERT_FALSE(e) << e->message;
  EXPECT_FLOAT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.sampling.top_logprobs, -1);
}

struct BadCase {
  const char* body;
  const char* param;  // expected param ("" = none)
};

TEST(Request, RejectsBadChatRequestsNamingTheField) {
  const BadCase cases[] = {
      {R"({"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":3,"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":"m"})", "messages"},
      {R"({"model":"m","messages":[]})", "messages"},
      {R"({"model":"m","messages":"hi"})", "messages"},
      {R"({"model":"m","messages":[5]})", "messages[0]"},
      {R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})", "messages[0].role"},
      {R"({"model":"m","messages":[{"content":"x"}]})", "messages[0].role"},
      {R"({"model":"m","messages":[{"role":"user"}]})", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"})", "temperature"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":2.5})", "temperature"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0})", "top_p"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"presence_penalty":3})", "presence_penalty"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0})", "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5})", "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":0})", "n"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":1000})", "n"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":[1]})", "stop"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"})", "stream"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":1}})",
       "stream_options.include_usage"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":3})", "top_logprobs"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21})",
       "top_logprobs"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"x":1}})", "logit_bias"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"5":101}})", "logit_bias"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"seed":"1"})", "seed"},
      {"[1,2]", ""},
      {"{\"model\":", ""},
      {"", ""},
  };
  for (const auto& c : cases) {
    ParsedRequest r;
    auto e = chat(c.body, &r);
    ASSERT_TRUE(e) << c.body;
    EXPECT_EQ(e->status, 400) << c.body;
    EXPECT_EQ(e->type, "invalid_request_error");
    EXPECT_EQ(e->param, c.param) << c.body << " -> " << e->message;
    EXPECT_FALSE(e->message.empty());
  }
}

TEST(Request, RejectsDeepNesting) {
  std::string deep = R"({"model":"m","messages":)" + std::string(10000, '[') + std::string(10000, ']') + "}";
  ParsedRequest r;
  auto e = chat(deep, &r);
  ASSERT_TRUE(e);
  EXPECT_NE(e->message.find("nests deeper"), std::string::npos);
}

TEST(Request, ModelDefaultsFillOnlyWhatTheRequestOmits) {
  engine::SamplingParams d;
  d.temperature = 0.6f, d.top_p = 0.95f, d.top_k = 20, d.min_p = 0.05f;
  ParsedRequest omitted, given;
  ASSERT_FALSE(chat(R"({"model":"m","messages":[{"role":"user","content":"x"}]})", &omitted));
  ASSERT_FALSE(chat(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0,"top_p":1,
                      "top_k":0,"min_p":0})", &given));
  apply_sampling_defaults(d, &omitted);
  apply_sampling_defaults(d, &given);
  EXPECT_FLOAT_EQ(omitted.sampling.temperature, 0.6f);
  EXPECT_FLOAT_EQ(omitted.sampling.top_p, 0.95f);
  EXPECT_EQ(omitted.sampling.top_k, 20);
  EXPECT_FLOAT_EQ(omitted.sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(given.sampling.temperature, 0.0f);  // a request's own values win, zeros included
  EXPECT_FLOAT_EQ(given.sampling.top_p, 1.0f);
  EXPECT_EQ(given.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(given.sampling.min_p, 0.0f);
}

TEST(Request, BadBytesAndBadJsonNameTheByte) {
  ParsedRequest r;
  // "\xff" is never valid UTF-8; it is at offset 37 of the body (the 38th byte).
  const std::string bad_utf8 = std::string(R"({"model":"m","messages":[{"content":")") + "\xff" + R"("}]})";
  auto e = chat(bad_utf8, &r);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, "invalid_json");
  EXPECT_EQ(e->message, "request body is not valid UTF-8 at byte offset 37");
  e = chat(R"({"model":"m",})", &r);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->message.rfind("request body is not valid JSON at byte offset 13: ", 0), 0u) << e->message;
  EXPECT_EQ(e->message.find("last read"), std::string::npos) << e->message;
  // Bad bytes outside a string (where the parser would only say "invalid literal") and in a later field.
  e = chat(std::string("{\"model\":\"m\",\xC3(") + "}", &r);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->message, "request body is not valid UTF-8 at byte offset 13");
  e = chat(std::string(R"({"model":"m","messages":[{"role":"user","content":"h\u00e9 )") + "\xC3\xA9" +
               R"("}],"stop":[")" + "\xED\xA0\x80" + R"("]})", &r);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->message, "request body is not valid UTF-8 at byte offset 74") << e->message;
  // A lone surrogate written as a JSON escape is valid UTF-8 but not valid JSON; the parser names it.
  e = chat(R"({"model":"m","messages":[{"role":"user","content":"\ud800"}]})", &r);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->message.rfind("request body is not valid JSON at byte offset ", 0), 0u) << e->message;
  EXPECT_NE(e->message.find("surrogate"), std::string::npos) << e->message;
}

TEST(Request, InvalidUtf8BodyIsA400InTheOpenAiShape) {
  EXPECT_FALSE(invalid_utf8_body(std::string(R"({"a":"\u00e9 )") + "\xC3\xA9" + R"("})"));
  auto e = invalid_utf8_body(std::string("{\"a\":\"") + "\xF4\x90\x80\x80" + "\"}");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->type, "invalid_request_error");
  EXPECT_EQ(e->code, "invalid_json");
  EXPECT_EQ(e->message, "request body is not valid UTF-8 at byte offset 6");
}

TEST(Request, CompletionPromptForms) {
  ParsedRequest a, b, c, d;
  ASSERT_FALSE(completion(R"({"model":"m","prompt":"hello","logprobs":2,"echo":true})", &a));
  EXPECT_EQ(a.prompt_texts, std::vector<std::string>{"hello"});
  EXPECT_TRUE(a.logprobs);
  EXPECT_EQ(a.sampling.top_logprobs, 2);
  EXPECT_TRUE(a.echo);
  ASSERT_FALSE(completion(R"({"model":"m","prompt":[1,2,3]})", &b));
  EXPECT_EQ(b.prompt_token_lists, (std::vector<std::vector<int32_t>>{{1, 2, 3}}));
  ASSERT_FALSE(completion(R"({"model":"m","prompt":["a","b"]})", &c));
  EXPECT_EQ(c.prompt_texts.size(), 2u);
  auto e = completion(R"({"model":"m","prompt":{"x":1}})", &d);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "prompt");
  ParsedRequest f;
  e = completion(R"({"model":"m","prompt":"x","logprobs":true})", &f);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "logprobs");
  ParsedRequest g;
  e = completion(R"({"model":"m","prompt":[-1]})", &g);
  ASSERT_TRUE(e);
}

class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ModelLoadOptions o;
    o.model = "debug:bytes";
    o.max_context = 64;
    auto h = load_model_host(o);
    ASSERT_TRUE(h.ok()) << h.status().message();
    host_ = *h;
  }
  std::shared_ptr<ModelHost> host_;
};

TEST_F(PrepareTest, ChatRendersTemplateAndTokenizes) {
  ParsedRequest r;
  ASSERT_FALSE(chat(R"({"model":"debug:bytes","messages":[{"role":"user","content":"hi"}],"max_tokens":4})", &r));
  PreparedRequest p;
  auto e = prepare_prompts(*host_, r, &p);
  ASSERT_FALSE(e) << e->message;
  ASSERT_EQ(p.prompts.size(), 1u);
  EXPECT_EQ(p.prompts[0].text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(p.prompts[0].tokens.size(), p.prompts[0].text.size() + 1);  // + BOS of the byte codec
  EXPECT_EQ(p.max_tokens, 4);
  EXPECT_FALSE(p.reasoning);
}

TEST_F(PrepareTest, ContextOverflowIs400WithCode) {
  ParsedRequest r;
  ASSERT_FALSE(completion(R"({"model":"m","prompt":"0123456789","max_tokens":60})", &r));
  PreparedRequest p;
  auto e = prepare_prompts(*host_, r, &p);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->code, "context_length_exceeded");
  // Without max_tokens the rest of the context is the budget.
  ParsedRequest r2;
  ASSERT_FALSE(completion(R"({"model":"m","prompt":"0123456789"})", &r2));
  ASSERT_FALSE(prepare_prompts(*host_, r2, &p));
  EXPECT_EQ(p.max_tokens, 64 - 11);
  ParsedRequest r3;
  ASSERT_FALSE(completion(("{\"model\":\"m\",\"prompt\":\"" + std::string(80, 'x') + "\"}").c_str(), &r3));
  e = prepare_prompts(*host_, r3, &p);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, "context_length_exceeded");
}

TEST_F(PrepareTest, TokenIdsAndLogitBiasOutsideTheVocabulary) {
  ParsedRequest r;
  ASSERT_FALSE(completion(R"({"model":"m","prompt":[1,100000]})", &r));
  PreparedRequest p;
  auto e = prepare_prompts(*host_, r, &p);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "prompt");
  ParsedRequest r2;
  ASSERT_FALSE(completion(R"({"model":"m","prompt":"x","logit_bias":{"5000":1}})", &r2));
  e = prepare_prompts(*host_, r2, &p);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "logit_bias");
}

TEST_F(PrepareTest, TemplateErrorIs400) {
  auto bad = chat::ChatTemplate::parse("{{ raise_exception('only user messages') }}");
  ASSERT_TRUE(bad.ok());
  host_->chat_template = *bad;
  ParsedRequest r;
  ASSERT_FALSE(chat(R"({"model":"m","messages":[{"role":"user","content":"x"}]})", &r));
  PreparedRequest p;
  auto e = prepare_prompts(*host_, r, &p);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  EXPECT_NE(e->message.find("only user messages"), std::string::npos) << e->message;
}

TEST(Errors, OpenAIShape) {
  auto body = nlohmann::json::parse(error_body(bad_request("bad \"x\"", "x", "c")));
  EXPECT_EQ(body["error"]["message"], "bad \"x\"");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "x");
  EXPECT_EQ(body["error"]["code"], "c");
  auto nul = nlohmann::json::parse(error_body(not_found("nope", "")));
  EXPECT_TRUE(nul["error"]["param"].is_null());
  EXPECT_TRUE(nul["error"]["code"].is_null());
  auto r = error_response(busy("full"));
  EXPECT_EQ(r.status, 429);
  bool retry = false;
  for (auto& [k, v] : r.headers) retry |= (k == "Retry-After" && v == "1");
  EXPECT_TRUE(retry);
  EXPECT_EQ(from_status(ResourceExhausted("busy")).status, 429);
  EXPECT_EQ(from_status(InvalidArgument("x")).status, 400);
  EXPECT_EQ(from_status(Internal("x")).status, 500);
}

}  // namespace
}  // namespace citadel::api
