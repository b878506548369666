// The API end to end without sockets: Service + the debug:bytes model + a real Engine, answered into FakeResponder.
// Checks response shaping (non-streaming and SSE framing), stop strings, seeds, n, logprobs, errors, 429, cancel.
#include <gtest/gtest.h>

#include <sstream>

#include "api/debug_model.h"
#include "api/model_loader.h"
#include "api/service.h"
#include "chat/builtin_templates.h"
#include "tests/server/service_send.h"

namespace citadel::api {
namespace {

using server::testing::FakeResponder;
using json = nlohmann::json;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ModelLoadOptions o;
    o.model = "debug:bytes";
    o.served_model_name = "dbg";
    auto h = load_model_host(o);
    ASSERT_TRUE(h.ok()) << h.status().message();
    host_ = *h;
    svc_.set_host(host_);
  }

  struct Reply {
    int status;
    std::string body;
    bool streaming;
    std::string retry_after;
  };
  Reply call(const std::string& method, const std::string& path, const std::string& body = "") {
    auto r = send(svc_, method, path, body);
    EXPECT_TRUE(r->wait()) << "no response to " << path << " " << body;
    Reply out{r->status(), r->body(), r->streaming(), r->header("Retry-After")};
    r->release();
    return out;
  }
  static std::vector<json> sse_events(const std::string& body, bool* done) {
    std::vector<json> out;
    std::istringstream in(body);
    std::string line;
    *done = false;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      EXPECT_EQ(line.rfind("data: ", 0), 0u) << line;
      const std::string data = line.substr(6);
      if (data == "[DONE]") {
        *done = true;
        continue;
      }
      EXPECT_FALSE(*done) << "data after [DONE]";
      out.push_back(json::parse(data));
    }
    return out;
  }

  std::shared_ptr<ModelHost> host_;
  Service svc_;
};

TEST_F(ServiceTest, ChatNonStreamingShape) {
  auto r = call("POST", "/v1/chat/completions",
                R"({"model":"dbg","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"seed":3})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "dbg");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  const std::string text = j["choices"][0]["message"]["content"];
  const std::string fin = j["choices"][0]["finish_reason"];
  EXPECT_TRUE(fin == "length" || fin == "stop");
  const int completion = j["usage"]["completion_tokens"];
  EXPECT_EQ(j["usage"]["total_tokens"], j["usage"]["prompt_tokens"].get<int>() + completion);
  if (fin == "length") {
    EXPECT_EQ(completion, 8);
    EXPECT_EQ(text.size(), 8u);  // one byte per token in the debug model
  }
}

TEST_F(ServiceTest, StreamingFramingMatchesNonStreaming) {
  const std::string req = R"({"model":"dbg","messages":[{"role":"user","content":"hello"}],"max_tokens":12,
                              "temperature":0.8,"seed":7)";
  auto plain = call("POST", "/v1/chat/completions", req + "}");
  ASSERT_EQ(plain.status, 200);
  const auto pj = json::parse(plain.body);
  auto s = call("POST", "/v1/chat/completions", req + R"(,"stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_EQ(s.status, 200);
  ASSERT_TRUE(s.streaming);
  bool done = false;
  auto ev = sse_events(s.body, &done);
  ASSERT_TRUE(done);
  ASSERT_GE(ev.size(), 3u);
  // First chunk: the role only. Then content. finish_reason only on the last choice chunk. Then usage with [].
  EXPECT_EQ(ev[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  const std::string id = ev[0]["id"];
  for (size_t i = 0; i < ev.size(); ++i) {
    EXPECT_EQ(ev[i]["id"], id);
    EXPECT_EQ(ev[i]["object"], "chat.completion.chunk");
    EXPECT_EQ(ev[i]["created"], ev[0]["created"]);
    if (i + 1 < ev.size()) {
      EXPECT_TRUE(ev[i]["usage"].is_null());
      ASSERT_EQ(ev[i]["choices"].size(), 1u);
      const bool last_choice_chunk = i + 2 == ev.size();
      EXPECT_EQ(ev[i]["choices"][0]["finish_reason"].is_null(), !last_choice_chunk) << i;
      if (ev[i]["choices"][0]["delta"].contains("content"))
        text += ev[i]["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(ev[ev.size() - 2]["choices"][0]["finish_reason"], pj["choices"][0]["finish_reason"]);
  EXPECT_TRUE(ev.back()["choices"].empty());
  EXPECT_EQ(ev.back()["usage"], pj["usage"].is_null() ? json() : ev.back()["usage"]);
  EXPECT_EQ(ev.back()["usage"]["completion_tokens"], pj["usage"]["completion_tokens"]);
  EXPECT_EQ(text, pj["choices"][0]["message"]["content"]);  // same seed, same text
}

TEST_F(ServiceTest, StopStringsAreCutAcrossTokensAndExcluded) {
  const std::string base = R"({"model":"dbg","prompt":"abc","max_tokens":40,"temperature":0)";
  auto full = json::parse(call("POST", "/v1/completions", base + "}").body);
  const std::string text = full["choices"][0]["text"];
  ASSERT_GE(text.size(), 10u);
  const std::string stop = text.substr(5, 3);  // spans 3 tokens of the byte model
  const size_t cut = text.find(stop);
  for (bool stream : {false, true}) {
    auto r = call("POST", "/v1/completions",
                  base + R"(,"stop":[")" + stop + R"("],"stream":)" + (stream ? "true" : "false") + "}");
    ASSERT_EQ(r.status, 200) << r.body;
    std::string got, fin;
    if (!stream) {
      auto j = json::parse(r.body);
      got = j["choices"][0]["text"];
      fin = j["choices"][0]["finish_reason"];
    } else {
      bool done = false;
      for (auto& e : sse_events(r.body, &done)) {
        got += e["choices"][0]["text"].get<std::string>();
        if (!e["choices"][0]["finish_reason"].is_null()) fin = e["choices"][0]["finish_reason"];
      }
      EXPECT_TRUE(done);
    }
    EXPECT_EQ(got, text.substr(0, cut)) << "stream=" << stream;
    EXPECT_EQ(fin, "stop");
  }
}

TEST_F(ServiceTest, SeedsReproduceAndNChoicesDiffer) {
  const std::string req = R"({"model":"dbg","prompt":"x","max_tokens":16,"temperature":1.0,"seed":11,"n":3})";
  auto a = json::parse(call("POST", "/v1/completions", req).body);
  auto b = json::parse(call("POST", "/v1/completions", req).body);
  ASSERT_EQ(a["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a["choices"][i]["index"], i);
    EXPECT_EQ(a["choices"][i]["text"], b["choices"][i]["text"]);
  }
  EXPECT_NE(a["choices"][0]["text"], a["choices"][1]["text"]);
  EXPECT_EQ(a["usage"]["completion_tokens"].get<int>(),
            b["usage"]["completion_tokens"].get<int>());
}

TEST_F(ServiceTest, Logprobs) {
  auto c = json::parse(call("POST", "/v1/chat/completions",
                            R"({"model":"dbg","messages":[{"role":"user","content":"q"}],"max_tokens":4,
                               "temperature":0,"logprobs":true,"top_logprobs":3})")
                           .body);
  auto content = c["choices"][0]["logprobs"]["content"];
  ASSERT_GE(content.size(), 1u);
  std::string joined;
  for (auto& t : content) {
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    ASSERT_EQ(t["top_logprobs"].size(), 3u);
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
    EXPECT_NEAR(t["top_logprobs"][0]["logprob"].get<double>(), t["logprob"].get<double>(), 1e-6);
    EXPECT_EQ(t["bytes"].size(), t["token"].get<std::string>().size());
    joined += t["token"].get<std::string>();
  }
  EXPECT_EQ(joined, c["choices"][0]["message"]["content"]);
  auto p = json::parse(call("POST", "/v1/completions", R"({"model":"dbg","prompt":"q","max_tokens":3,"logprobs":2,"temperature":0})").body);
  auto lp = p["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"].size(), lp["token_logprobs"].size());
  EXPECT_EQ(lp["tokens"].size(), lp["top_logprobs"].size());
  EXPECT_EQ(lp["text_offset"][0], 0) << p.dump();
}

TEST_F(ServiceTest, InferAndModelsAndHealth) {
  auto r = call("POST", "/api/v1/infer", R"({"prompt":"hi","max_tokens":3})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  EXPECT_TRUE(j["text"].is_string());
  EXPECT_EQ(j["usage"]["completion_tokens"].get<int>() <= 3, true);
  EXPECT_EQ(call("GET", "/health").status, 200);
  EXPECT_EQ(call("GET", "/ready").status, 200);
  auto m = json::parse(call("GET", "/v1/models").body);
  EXPECT_EQ(m["data"][0]["id"], "dbg");
  EXPECT_EQ(call("GET", "/v1/models/dbg").status, 200);
  EXPECT_EQ(call("GET", "/v1/models/other").status, 404);
  auto st = json::parse(call("GET", "/api/v1/stats").body);
  EXPECT_GE(st["engine"]["generated_tokens_total"].get<int>(), 1);
}

TEST_F(ServiceTest, ErrorsHaveTheRightStatus) {
  EXPECT_EQ(call("GET", "/v1/nothing").status, 404);
  EXPECT_EQ(call("GET", "/v1/chat/completions").status, 405);
  EXPECT_EQ(call("POST", "/v1/models").status, 405);
  EXPECT_EQ(call("POST", "/v1/chat/completions", "{not json").status, 400);
  auto r = call("POST", "/v1/chat/completions", R"({"model":"gpt-9","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(r.status, 404);  // as the OpenAI API answers an unknown model
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "model_not_found");
  r = call("POST", "/v1/completions", R"({"model":"dbg","prompt":"x","max_tokens":100000})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "context_length_exceeded");
  svc_.set_draining(true);
  EXPECT_EQ(call("GET", "/ready").status, 503);
  EXPECT_EQ(call("POST", "/v1/completions", R"({"model":"dbg","prompt":"x"})").status, 503);
  svc_.set_host(nullptr);
  svc_.set_draining(false);
  EXPECT_EQ(call("GET", "/ready").status, 503);
  EXPECT_EQ(call("GET", "/health").status, 200);
}

// An engine that never steps (initialized, not started) with room for one waiting request: the second is 429.
TEST(ServiceBusy, QueueFullIs429WithRetryAfter) {
  auto host = std::make_shared<ModelHost>();
  host->served_name = "dbg";
  host->codec = make_debug_codec();
  host->runner = make_debug_runner(256);
  host->max_context = 256;
  host->chat_template = chat::builtin_template("chatml").value();
  engine::EngineConfig ec;
  ec.n_blocks = 64;
  ec.max_waiting = 1;
  host->engine = std::make_unique<engine::Engine>(host->runner.get(), ec);
  ASSERT_TRUE(host->engine->init().ok());
  Service svc;
  svc.set_host(host);
  auto first = std::make_shared<FakeResponder>();
  server::HttpRequest req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"model":"dbg","prompt":"x","max_tokens":2})";
  svc.handle(req, first);
  auto second = std::make_shared<FakeResponder>();
  svc.handle(req, second);
  ASSERT_TRUE(second->wait());
  EXPECT_EQ(second->status(), 429);
  EXPECT_EQ(second->header("Retry-After"), "1");
  EXPECT_EQ(json::parse(second->body())["error"]["type"], "rate_limit_error");
  // The first one completes once the engine steps.
  while (host->engine->step()) {
  }
  ASSERT_TRUE(first->wait());
  EXPECT_EQ(first->status(), 200);
  first->release();
  second->release();
}

// debug:slow (5 ms per engine step): 4000 tokens take 20 s, so the disconnect always lands mid-generation (on the
// instant debug:bytes model the whole generation could finish before the close was seen).
TEST(ServiceDisconnect, DisconnectCancelsTheEngineRequest) {
  ModelLoadOptions o;
  o.model = "debug:slow";
  o.served_model_name = "dbg";
  auto h = load_model_host(o);
  ASSERT_TRUE(h.ok()) << h.status().message();
  std::shared_ptr<ModelHost> host_ = *h;
  Service svc_;
  svc_.set_host(host_);
  auto r = std::make_shared<FakeResponder>();
  server::HttpRequest req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"model":"dbg","prompt":"x","max_tokens":4000,"stream":true,"logit_bias":{"256":-100}})";
  const auto before = host_->engine->stats();
  svc_.handle(req, r);
  while (host_->engine->stats().generated_tokens_total < before.generated_tokens_total + 5)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  r->disconnect();
  // The cancel is counted before the step that made it publishes the running gauge: wait for both.
  for (int i = 0; i < 2000; ++i) {
    const auto s = host_->engine->stats();
    if (s.cancelled_total > before.cancelled_total && s.running == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const auto after = host_->engine->stats();
  EXPECT_EQ(after.cancelled_total, before.cancelled_total + 1);
  EXPECT_LT(after.generated_tokens_total, before.generated_tokens_total + 4000);
  EXPECT_EQ(after.running, 0);
  r->release();
}

}  // namespace
}  // namespace citadel::api
