// A model runner that fails mid-generation (an injected device fault) seen through the API: the requests in flight
// get an OpenAI error (500 JSON, or a final SSE error event), /ready answers 503 {"status": "failed", "reason"},
// /health stays 200, new requests are refused with 503 model_failed, and nothing aborts.
#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "api/debug_model.h"
#include "api/service.h"
#include "chat/builtin_templates.h"
#include "tests/server/service_send.h"

namespace citadel::api {
namespace {

using server::testing::FakeResponder;
using json = nlohmann::json;

// The debug model, with forward call `fail_at` (1-based) and every later call failing as a sticky device error would.
class FaultyRunner : public engine::ModelRunner {
 public:
  FaultyRunner(int fail_at) : inner_(make_debug_runner(256)), fail_at_(fail_at) {}
  int n_vocab() const override { return inner_->n_vocab(); }
  int max_context() const override { return inner_->max_context(); }
  size_t kv_bytes_per_token() const override { return inner_->kv_bytes_per_token(); }
  Status allocate_kv(int n_blocks, int block_size) override { return inner_->allocate_kv(n_blocks, block_size); }
  Status copy_blocks(const std::vector<std::pair<int, int>>& src_dst) override {
    if (calls_ >= fail_at_) return fault();
    return inner_->copy_blocks(src_dst);
  }
  Status forward(const engine::Batch& b, float* logits) override {
    if (++calls_ >= fail_at_) return fault();
    return inner_->forward(b, logits);
  }
  // As a CUDA runner after a sticky error: the device is broken from the fault on.
  Status device_status() override { return calls_ >= fail_at_ ? fault() : OkStatus(); }

 private:
  static Status fault() { return Internal("injected device fault: an illegal memory access was encountered"); }
  std::unique_ptr<engine::ModelRunner> inner_;
  int fail_at_;
  int calls_ = 0;
};

std::shared_ptr<ModelHost> faulty_host(int fail_at) {
  auto host = std::make_shared<ModelHost>();
  host->served_name = "dbg";
  host->codec = make_debug_codec();
  host->runner = std::make_unique<FaultyRunner>(fail_at);
  host->max_context = 256;
  host->chat_template = chat::builtin_template("chatml").value();
  engine::EngineConfig ec;
  ec.n_blocks = 64;
  host->engine = std::make_unique<engine::Engine>(host->runner.get(), ec);
  EXPECT_TRUE(host->engine->init().ok());  // synchronous: the test steps it
  return host;
}

TEST(ServiceFault, RunnerFailureFailsRequestsAndReadyTurns503) {
  auto host = faulty_host(/*fail_at=*/4);
  Service svc;
  svc.set_host(host);
  {
    auto ready = send(svc, "GET", "/ready");
    ASSERT_TRUE(ready->wait());
    EXPECT_EQ(ready->status(), 200);
    ready->release();
  }
  // Greedy: with sampling the fake model sometimes drew <eos> before the injected fault (about 1 run in 20), and the
  // request finished cleanly instead of failing.
  auto plain =
      send(svc, "POST", "/v1/completions", R"({"model":"dbg","prompt":"hello","max_tokens":50,"temperature":0})");
  auto stream = send(svc, "POST", "/v1/chat/completions",
                     R"({"model":"dbg","messages":[{"role":"user","content":"hi"}],"max_tokens":50,)"
                     R"("stream":true,"temperature":0})");
  for (int i = 0; i < 100 && host->engine->step(); ++i) {
  }
  ASSERT_TRUE(host->engine->failed());

  ASSERT_TRUE(plain->wait());
  EXPECT_EQ(plain->status(), 500);
  const json pe = json::parse(plain->body());
  EXPECT_EQ(pe["error"]["type"], "server_error") << plain->body();
  EXPECT_NE(pe["error"]["message"].get<std::string>().find("the model runner failed: injected device fault"),
            std::string::npos) << plain->body();

  ASSERT_TRUE(stream->wait());
  EXPECT_EQ(stream->status(), 200);  // the stream had started: the error is its last event
  const std::string sb = stream->body();
  EXPECT_NE(sb.find("\"choices\""), std::string::npos) << sb;  // tokens from the good steps came first
  const size_t err = sb.rfind("data: {\"error\"");
  ASSERT_NE(err, std::string::npos) << sb;
  std::istringstream rest(sb.substr(err + 6));
  std::string line;
  std::getline(rest, line);
  EXPECT_NE(json::parse(line)["error"]["message"].get<std::string>().find("the model runner failed"),
            std::string::npos);
  plain->release();
  stream->release();

  auto ready = send(svc, "GET", "/ready");
  ASSERT_TRUE(ready->wait());
  EXPECT_EQ(ready->status(), 503);
  const json rj = json::parse(ready->body());
  EXPECT_EQ(rj["error"]["code"], "model_failed");  // the reason code only: /ready is public
  EXPECT_EQ(ready->body().find("injected"), std::string::npos) << ready->body();
  ready->release();
  auto stats = send(svc, "GET", "/api/v1/stats");  // the detail, for who may read stats
  ASSERT_TRUE(stats->wait());
  EXPECT_NE(json::parse(stats->body())["readiness"]["failure"].get<std::string>().find(
                "the model runner failed: injected device fault"),
            std::string::npos) << stats->body();
  stats->release();
  auto health = send(svc, "GET", "/health");
  ASSERT_TRUE(health->wait());
  EXPECT_EQ(health->status(), 200);
  health->release();
  auto later = send(svc, "POST", "/v1/completions", R"({"model":"dbg","prompt":"again","max_tokens":2})");
  ASSERT_TRUE(later->wait());
  EXPECT_EQ(later->status(), 503);
  EXPECT_EQ(json::parse(later->body())["error"]["code"], "model_failed");
  later->release();
}

}  // namespace
}  // namespace citadel::api
