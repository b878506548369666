// Readiness and drain through the Service (no sockets): /ready tells loading, draining, shutting down and a failed
// device apart; the admin drain refuses new generations with 503 + Retry-After while the in-flight one finishes;
// ending the drain makes the server ready again; /health stays 200 throughout.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "api/debug_model.h"
#include "api/model_loader.h"
#include "api/service.h"
#include "chat/builtin_templates.h"
#include "tests/server/service_send.h"

namespace citadel::api {
namespace {

using server::testing::FakeResponder;
using json = nlohmann::json;

struct Reply {
  int status = 0;
  json body;
  std::string retry_after;
};

Reply call(Service& svc, const std::string& method, const std::string& path, const std::string& body = "") {
  auto r = send(svc, method, path, body);
  EXPECT_TRUE(r->wait()) << "no response to " << path;
  Reply out{r->status(), json::parse(r->body(), nullptr, false), r->header("Retry-After")};
  r->release();
  return out;
}

std::string ready_code(Service& svc) {
  Reply r = call(svc, "GET", "/ready");
  if (r.status == 200) return "ready";
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body["error"]["type"], "service_unavailable");
  return r.body["error"]["code"];
}

const char* kCompletion = R"({"model":"dbg","prompt":"x","max_tokens":3})";

TEST(ServiceReady, LoadingThenReadyHealthAlwaysUp) {
  Service svc;
  EXPECT_EQ(ready_code(svc), "loading");
  EXPECT_EQ(call(svc, "GET", "/health").status, 200);
  Reply gen = call(svc, "POST", "/v1/completions", kCompletion);
  EXPECT_EQ(gen.status, 503);
  ModelLoadOptions o;
  o.model = "debug:bytes";
  o.served_model_name = "dbg";
  auto h = load_model_host(o);
  ASSERT_TRUE(h.ok()) << h.status().message();
  svc.set_host(*h);
  EXPECT_EQ(ready_code(svc), "ready");
  svc.set_draining(true);  // shutdown
  EXPECT_EQ(ready_code(svc), "shutting_down");
  EXPECT_EQ(call(svc, "POST", "/v1/completions", kCompletion).body["error"]["code"], "shutting_down");
  EXPECT_EQ(call(svc, "GET", "/health").status, 200);
}

TEST(ServiceReady, DrainRefusesNewGenerationsLetsInFlightFinishAndEnds) {
  ModelLoadOptions o;
  o.model = "debug:slow";  // 5 ms per step: 60 tokens take ~300 ms, long enough to drain beside
  o.served_model_name = "dbg";
  auto h = load_model_host(o);
  ASSERT_TRUE(h.ok()) << h.status().message();
  Service svc;
  svc.set_host(*h);
  auto inflight = std::make_shared<FakeResponder>();
  server::HttpRequest req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"model":"dbg","prompt":"x","max_tokens":60,"stream":true,"logit_bias":{"256":-100}})";
  svc.handle(req, inflight);
  while ((*h)->engine->stats().generated_tokens_total < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  Reply d = call(svc, "POST", "/admin/v1/drain", "{}");
  ASSERT_EQ(d.status, 200);
  EXPECT_EQ(d.body["draining"], true);
  EXPECT_EQ(d.body["in_flight"], 1);
  EXPECT_EQ(ready_code(svc), "draining");
  Reply refused = call(svc, "POST", "/v1/completions", kCompletion);
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(refused.body["error"]["code"], "draining");
  EXPECT_FALSE(refused.retry_after.empty());
  EXPECT_EQ(call(svc, "POST", "/v1/chat/completions",
                 R"({"model":"dbg","messages":[{"role":"user","content":"x"}]})").status, 503);
  EXPECT_EQ(call(svc, "GET", "/health").status, 200);

  ASSERT_TRUE(inflight->wait());
  EXPECT_EQ(inflight->status(), 200);
  EXPECT_NE(inflight->body().find("[DONE]"), std::string::npos);
  EXPECT_EQ(inflight->body().find("\"error\""), std::string::npos) << inflight->body();
  inflight->release();
  // The in-flight count reaches 0: what a rolling update waits for before it stops the replica.
  for (int i = 0; i < 2000 && call(svc, "GET", "/admin/v1/drain").body["in_flight"] != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(call(svc, "GET", "/admin/v1/drain").body["in_flight"], 0);
  EXPECT_EQ(ready_code(svc), "draining");

  Reply undrain = call(svc, "DELETE", "/admin/v1/drain");
  ASSERT_EQ(undrain.status, 200);
  EXPECT_EQ(undrain.body["draining"], false);
  EXPECT_EQ(ready_code(svc), "ready");
  EXPECT_EQ(call(svc, "POST", "/v1/completions", kCompletion).status, 200);
}

// A runner whose device dies on the first forward (a lost GPU), in front of the debug model.
class DyingRunner : public engine::ModelRunner {
 public:
  explicit DyingRunner(std::unique_ptr<engine::ModelRunner> inner) : inner_(std::move(inner)) {}
  int n_vocab() const override { return inner_->n_vocab(); }
  int max_context() const override { return inner_->max_context(); }
  size_t kv_bytes_per_token() const override { return inner_->kv_bytes_per_token(); }
  Status allocate_kv(int n, int bs) override { return inner_->allocate_kv(n, bs); }
  Status copy_blocks(const std::vector<std::pair<int, int>>& p) override { return inner_->copy_blocks(p); }
  Status forward(const engine::Batch&, float*) override { return Internal("unspecified launch failure"); }
  Status device_status() override { return Internal("device 0: unspecified launch failure (sticky)"); }

 private:
  std::unique_ptr<engine::ModelRunner> inner_;
};

TEST(ServiceReady, FailedDeviceIsNotReadyAndSaysSoOnlyInStats) {
  auto host = std::make_shared<ModelHost>();
  host->served_name = "dbg";
  host->codec = make_debug_codec();
  host->runner = std::make_unique<DyingRunner>(make_debug_runner(256));
  host->max_context = 256;
  host->chat_template = chat::builtin_template("chatml").value();
  engine::EngineConfig ec;
  ec.n_blocks = 64;
  host->engine = std::make_unique<engine::Engine>(host->runner.get(), ec);
  ASSERT_TRUE(host->engine->start().ok());
  Service svc;
  svc.set_host(host);
  EXPECT_EQ(ready_code(svc), "ready");
  Reply first = call(svc, "POST", "/v1/completions", kCompletion);
  EXPECT_GE(first.status, 500);  // the request on the dying device fails cleanly
  EXPECT_EQ(ready_code(svc), "model_failed");
  Reply ready = call(svc, "GET", "/ready");
  EXPECT_EQ(ready.body.dump().find("launch failure"), std::string::npos) << "public /ready leaks the detail";
  Reply next = call(svc, "POST", "/v1/completions", kCompletion);
  EXPECT_EQ(next.status, 503);
  EXPECT_EQ(next.body["error"]["code"], "model_failed");
  json stats = call(svc, "GET", "/api/v1/stats").body;
  EXPECT_EQ(stats["readiness"]["reason"], "model_failed");
  EXPECT_NE(stats["readiness"]["failure"].get<std::string>().find("sticky"), std::string::npos);
  EXPECT_EQ(call(svc, "GET", "/health").status, 200);
  svc.set_admin_drain(true);  // a failed model stays "model_failed" even when also drained
  EXPECT_EQ(ready_code(svc), "model_failed");
}

}  // namespace
}  // namespace citadel::api

namespace citadel::api {
namespace {

// The last reference to a host can go away inside its own engine's callback (a stream's final event, e.g. after an
// unload or a shutdown): the engine thread cannot join itself, so the host hands its engines to a helper thread
// instead of aborting the process ("Resource deadlock avoided").
TEST(ModelHostLifetime, LastReferenceDroppedOnTheEngineThread) {
  ModelLoadOptions o;
  o.model = "debug:bytes";
  auto loaded = load_model_host(o);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  auto holder = std::make_shared<std::shared_ptr<ModelHost>>(std::move(*loaded));
  engine::Engine* eng = (*holder)->engine.get();
  std::atomic<bool> dropped{false};
  engine::GenerateRequest g;
  g.id = "last-ref";
  g.prompt = {1, 2, 3};
  g.max_tokens = 3;
  std::shared_ptr<engine::RequestHandle> handle;
  std::mutex mu;
  g.on_event = [holder, &dropped, &handle, &mu] {
    std::lock_guard<std::mutex> l(mu);
    if (!handle || !handle->finished() || dropped) return;
    handle.reset();
    holder->reset();  // the last reference: ~ModelHost runs here, on the engine thread
    dropped = true;
  };
  {
    std::lock_guard<std::mutex> l(mu);
    auto h = eng->submit(std::move(g));
    ASSERT_TRUE(h.ok()) << h.status().message();
    handle = *h;
  }
  for (int i = 0; i < 500 && !dropped; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(dropped.load());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the helper thread ends the engine
}

}  // namespace
}  // namespace citadel::api
