// The middleware chain end to end without sockets: Service + Access over a real SQLite state store + the debug model.
// Exactly one ExchangeRecord per exchange (also for 401/403/404/405, the transport's own 413, streams and client
// disconnects), usage in the record equal to the engine's counts, quota reservations settled at the end.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "api/model_loader.h"
#include "api/service.h"
#include "auth/key_store.h"
#include "auth/quota.h"
#include "auth/schema.h"
#include "store/database.h"
#include "tests/server/fake_responder.h"

namespace citadel::api {
namespace {

using server::testing::FakeResponder;
using json = nlohmann::json;

class AccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("citadel-access-" + std::to_string(::getpid()) + "-" +
                                                     std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    auto db = store::open_sqlite((dir_ / "state.db").string());
    ASSERT_TRUE(db.ok()) << db.status().message();
    db_ = std::move(*db);
    ASSERT_TRUE(store::migrate(*db_, auth::state_migrations()).ok());
    keys_ = std::make_unique<auth::KeyStore>(db_.get());
    quotas_ = std::make_unique<auth::QuotaManager>(db_.get());
    AccessOptions ao;
    ao.keys = keys_.get(), ao.quotas = quotas_.get();
    svc_ = std::make_unique<Service>(std::make_shared<Access>(ao));
    svc_->add_observer([this](const ExchangeRecord& rec, const RequestContext&) {
      std::lock_guard<std::mutex> l(mu_);
      records_.push_back(rec);
    });
    ModelLoadOptions o;
    o.model = "debug:slow";
    o.served_model_name = "dbg";
    auto h = load_model_host(o);
    ASSERT_TRUE(h.ok()) << h.status().message();
    svc_->set_host(*h);
    admin_ = make_key(auth::Role::kAdmin, {});
  }
  void TearDown() override {
    for (auto& r : keep_) r->release();
    keep_.clear();
    svc_.reset();
    quotas_.reset();
    keys_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string make_key(auth::Role role, auth::QuotaLimits limits) {
    auth::NewKey nk;
    nk.name = "test";
    nk.role = role;
    nk.limits = limits;
    auto k = keys_->create(nk, static_cast<int64_t>(std::time(nullptr)));
    EXPECT_TRUE(k.ok()) << k.status().message();
    return k->second;
  }

  server::HttpRequest request(const std::string& method, const std::string& path, const std::string& key,
                              const std::string& body = "") {
    server::HttpRequest req;
    req.method = method;
    req.path = req.target = path;
    req.body = body;
    req.request_id = "req-" + std::to_string(++ids_);
    req.received_at = now_seconds();
    if (!key.empty()) req.headers.push_back({"authorization", "Bearer " + key});
    return req;
  }

  struct Reply {
    int status;
    std::string body;
    std::shared_ptr<FakeResponder> r;
  };
  Reply call(server::HttpRequest req, bool wait = true) {
    auto r = std::make_shared<FakeResponder>();
    // Held until TearDown: a handler's state may outlive the exchange and must never drop the last reference on
    // the responder's own thread (it would join itself).
    keep_.push_back(r);
    svc_->handle(req, r);
    if (wait) {
      EXPECT_TRUE(r->wait());
    }
    return {r->status(), r->body(), r};
  }
  std::vector<ExchangeRecord> records() {
    std::lock_guard<std::mutex> l(mu_);
    return records_;
  }
  // Records arrive on the responder's thread right after the response: wait for n of them (bounded).
  std::vector<ExchangeRecord> wait_records(size_t n) {
    for (int i = 0; i < 5000 && records().size() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return records();
  }

  static inline std::atomic<int> counter_{0};
  std::filesystem::path dir_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<auth::KeyStore> keys_;
  std::unique_ptr<auth::QuotaManager> quotas_;
  std::unique_ptr<Service> svc_;
  std::string admin_;
  int ids_ = 0;
  std::mutex mu_;
  std::vector<ExchangeRecord> records_;
  std::vector<std::shared_ptr<FakeResponder>> keep_;
};

TEST_F(AccessTest, OneRecordPerExchangeWhateverTheOutcome) {
  struct Case {
    server::HttpRequest req;
    int status;
  };
  const std::string guest = make_key(auth::Role::kGuest, {});
  server::HttpRequest too_big = request("", "", "");
  too_big.transport_status = 413;
  too_big.transport_error = "request body exceeds 8388608 bytes";
  std::vector<Case> cases = {
      {request("GET", "/health", ""), 200},
      {request("GET", "/v1/models", ""), 401},
      {request("GET", "/v1/models", "ck-000000000000-" + std::string(43, 'A')), 401},
      {request("GET", "/v1/models", guest), 200},
      {request("GET", "/api/v1/stats", guest), 403},
      {request("GET", "/v1/nothing", admin_), 404},
      {request("DELETE", "/v1/models", admin_), 405},
      {too_big, 413},
  };
  for (auto& c : cases) {
    Reply rep = call(c.req);
    EXPECT_EQ(rep.status, c.status) << c.req.path << " " << rep.body;
    if (c.status >= 400) {
      EXPECT_EQ(json::parse(rep.body)["error"].size(), 4u) << rep.body;
    }
    rep.r->release();
  }
  auto recs = wait_records(cases.size());
  ASSERT_EQ(recs.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(recs[i].status, cases[i].status) << i;
    EXPECT_EQ(recs[i].request_id, cases[i].req.request_id);
  }
  EXPECT_EQ(recs[1].error_code, "invalid_api_key");
  EXPECT_TRUE(recs[1].principal_id.empty());
  EXPECT_EQ(recs[3].role, "guest");
  EXPECT_EQ(recs[3].route, "/v1/models");
  EXPECT_EQ(recs[4].error_code, "permission_denied");
  EXPECT_EQ(recs[7].error_code, "request_too_large");
}

TEST_F(AccessTest, RecordCarriesTheEnginesCountsAndQuotaHeaders) {
  auth::QuotaLimits lim;
  lim.requests_per_minute = 100;
  const std::string key = make_key(auth::Role::kDeveloper, lim);
  for (bool stream : {false, true}) {
    json body = {{"model", "dbg"}, {"prompt", "hello"}, {"max_tokens", 5}, {"stream", stream},
                 {"stream_options", {{"include_usage", true}}}, {"ignore_eos", true}};
    if (!stream) body.erase("stream_options");
    Reply rep = call(request("POST", "/v1/completions", key, body.dump()));
    ASSERT_EQ(rep.status, 200) << rep.body;
    EXPECT_EQ(rep.r->header("x-ratelimit-limit-requests"), "100");
    EXPECT_FALSE(rep.r->header("x-ratelimit-remaining-tokens").empty());
    rep.r->release();
  }
  auto recs = wait_records(2);
  ASSERT_EQ(recs.size(), 2u);
  for (const auto& rec : recs) {
    EXPECT_EQ(rec.completion_tokens, 5);
    EXPECT_EQ(rec.prompt_tokens, 6);  // BOS + 5 bytes
    EXPECT_EQ(rec.model, "dbg");
    EXPECT_EQ(rec.finish_reason, "length");
  }
  EXPECT_FALSE(recs[0].streamed);
  EXPECT_TRUE(recs[1].streamed);
  // Settled: nothing in flight, and the minute's tokens are the real 11 per request.
  ASSERT_TRUE(quotas_->flush().ok());  // settlements are applied off the I/O thread
  auto u = quotas_->usage("key:" + recs[0].key_id, static_cast<int64_t>(std::time(nullptr)));
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->in_flight, 0);
  if (u->requests_this_minute == 2) {  // (unless the minute just rolled)
    EXPECT_EQ(u->tokens_this_minute, 22);
  }
}

TEST_F(AccessTest, DisconnectSettlesTheLeaseWithTheCountsSoFar) {
  auth::QuotaLimits lim;
  lim.concurrent_requests = 1;
  const std::string key = make_key(auth::Role::kGuest, lim);
  json body = {{"model", "dbg"}, {"prompt", "a long story"}, {"max_tokens", 2000}, {"stream", true},
               {"ignore_eos", true}};
  Reply first = call(request("POST", "/v1/completions", key, body.dump()), /*wait=*/false);
  for (int i = 0; i < 5000 && first.r->body().size() < 200; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Reply second = call(request("POST", "/v1/completions", key, body.dump()));
  EXPECT_EQ(second.status, 429) << second.body;
  EXPECT_EQ(second.r->header("Retry-After"), "1");
  second.r->release();
  first.r->disconnect();
  auto recs = wait_records(2);
  ASSERT_EQ(recs.size(), 2u);
  const ExchangeRecord& gone = recs[0].status == 499 ? recs[0] : recs[1];
  EXPECT_EQ(gone.status, 499);
  EXPECT_TRUE(gone.client_disconnected);
  EXPECT_GT(gone.completion_tokens, 0);
  EXPECT_LT(gone.completion_tokens, 2000);
  ASSERT_TRUE(quotas_->flush().ok());
  auto u = quotas_->usage("key:" + gone.key_id, static_cast<int64_t>(std::time(nullptr)));
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->in_flight, 0);
  first.r->release();
  Reply third = call(request("POST", "/v1/completions", key, json{{"model", "dbg"}, {"prompt", "x"}, {"max_tokens", 1}}.dump()));
  EXPECT_EQ(third.status, 200) << third.body;
  third.r->release();
}

TEST_F(AccessTest, EveryRouteNamesAPermissionAndOnlyHealthAndReadyArePublic) {
  std::set<std::string> pub;
  for (const auto& r : svc_->routes().routes())
    if (r.permission == auth::Permission::kPublic) pub.insert(r.method + " " + r.pattern);
  EXPECT_EQ(pub, (std::set<std::string>{"GET /health", "GET /ready"}));
  EXPECT_GE(svc_->routes().routes().size(), 18u);
}

}  // namespace
}  // namespace citadel::api
