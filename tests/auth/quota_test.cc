// QuotaManager on both backends (SQLite in a temp dir; PostgreSQL through tests/store/pg_fixture.h, skipped with
// the fixture's reason when no server can start). The concurrency tests are the point: a budget is never overrun.
#include "auth/quota.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "auth/schema.h"
#include "tests/auth/state_db_fixture.h"

namespace citadel::auth {
namespace {

using testing::Lim;

// 2023-11-14 22:13:00 UTC: a minute boundary, 6420 s before midnight.
constexpr int64_t kT0 = 1'699'999'980;

class QuotaTest : public testing::StateDbTest {
 protected:
  void SetUp() override {
    StateDbTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    q_ = std::make_unique<QuotaManager>(db_.get());
  }
  void TearDown() override {
    q_.reset();
    StateDbTest::TearDown();
  }

  QuotaDecision reserve(const std::string& id, const std::vector<QuotaScope>& scopes, int64_t tokens, int64_t now,
                        int64_t max_completion = 0, int ttl = 600) {
    auto d = q_->reserve(id, scopes, tokens, max_completion, now, ttl);
    EXPECT_TRUE(d.ok()) << d.status().to_string();
    return d.ok() ? *d : QuotaDecision{false, "error", "", d.status().message(), 0, {}};
  }
  QuotaUsage usage(const std::string& scope, int64_t now) {
    auto u = q_->usage(scope, now);
    EXPECT_TRUE(u.ok()) << u.status().to_string();
    return u.ok() ? *u : QuotaUsage{};
  }

  std::unique_ptr<QuotaManager> q_;
};

QuotaScope scope(const std::string& s, QuotaLimits l) { return QuotaScope{s, l}; }

// "p1-2": built with append (operator+ chains on literals trip a g++ 12 -Wrestrict false positive at -O3).
std::string rid(const char* prefix, std::initializer_list<int> parts) {
  std::string s(prefix);
  bool first = true;
  for (int p : parts) {
    if (!first) s.push_back('-');
    s.append(std::to_string(p));
    first = false;
  }
  return s;
}

TEST_P(QuotaTest, RequestsPerMinuteAndRollOver) {
  const auto k = scope("key:a", Lim().rpm(3));
  for (int i = 0; i < 3; ++i) {
    auto d = reserve(rid("r", {i}), {k}, 10, kT0 + 5);
    ASSERT_TRUE(d.allowed) << d.message;
    EXPECT_EQ(d.info.limit_requests, 3);
    EXPECT_EQ(d.info.remaining_requests, 2 - i);
    EXPECT_EQ(d.info.limit_tokens, -1);
    EXPECT_EQ(d.info.reset_requests_s, 55);
  }
  auto d = reserve("r3", {k}, 10, kT0 + 20);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.limit, "requests_per_minute");
  EXPECT_EQ(d.scope, "key:a");
  EXPECT_EQ(d.retry_after_s, 40);
  EXPECT_EQ(d.info.remaining_requests, 0);
  EXPECT_NE(d.message.find("3 requests per minute"), std::string::npos) << d.message;
  EXPECT_TRUE(reserve("r4", {k}, 10, kT0 + 60).allowed);  // the next minute window
  EXPECT_EQ(usage("key:a", kT0 + 60).requests_this_minute, 1);
  EXPECT_EQ(usage("key:a", kT0 + 60).requests_today, 4);
  EXPECT_EQ(usage("key:a", kT0 + 60).in_flight, 4);
}

TEST_P(QuotaTest, TokensPerMinute) {
  const auto k = scope("key:a", Lim().tpm(100));
  auto d = reserve("a", {k}, 60, kT0);
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(d.info.remaining_tokens, 40);
  d = reserve("b", {k}, 41, kT0 + 59);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.limit, "tokens_per_minute");
  EXPECT_EQ(d.retry_after_s, 1);
  EXPECT_TRUE(reserve("c", {k}, 40, kT0 + 59).allowed);
  // A request that alone exceeds the limit can never pass: retry_after 0 and a message that says so.
  d = reserve("d", {k}, 101, kT0 + 120);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_s, 0);
  EXPECT_NE(d.message.find("this request needs 101 tokens, more than the per-minute limit 100"), std::string::npos)
      << d.message;
}

TEST_P(QuotaTest, MaxTokensPerRequest) {
  const auto k = scope("key:a", Lim().max_tokens(2048));
  EXPECT_TRUE(reserve("a", {k}, 3000, kT0, 2048).allowed);
  auto d = reserve("b", {k}, 3000, kT0, 2049);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.limit, "max_tokens_per_request");
  EXPECT_NE(d.message.find("2049"), std::string::npos);
  EXPECT_NE(d.message.find("2048"), std::string::npos);
  EXPECT_EQ(usage("key:a", kT0).requests_this_minute, 1);
}

TEST_P(QuotaTest, DailyTokensResetAtUtcMidnight) {
  const auto k = scope("key:a", Lim().daily(1000));
  const int64_t midnight = kT0 - kT0 % 86400 + 86400;
  EXPECT_TRUE(reserve("a", {k}, 600, kT0).allowed);
  EXPECT_TRUE(reserve("b", {k}, 400, kT0 + 3600).allowed);  // other minute windows, same day
  auto d = reserve("c", {k}, 1, midnight - 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.limit, "daily_tokens");
  EXPECT_EQ(d.retry_after_s, 1);
  d = reserve("c", {k}, 1, kT0 + 100);
  EXPECT_EQ(d.retry_after_s, midnight - kT0 - 100);
  EXPECT_TRUE(reserve("c", {k}, 1000, midnight).allowed);
  d = reserve("e", {k}, 1001, midnight + 1);
  EXPECT_EQ(d.retry_after_s, 0);
  EXPECT_NE(d.message.find("more than the daily limit 1000"), std::string::npos) << d.message;
}

TEST_P(QuotaTest, ConcurrencyAndLeaseExpiry) {
  const auto k = scope("key:a", Lim().concurrent(2));
  EXPECT_TRUE(reserve("a", {k}, 1, kT0, 0, 30).allowed);
  EXPECT_TRUE(reserve("b", {k}, 1, kT0, 0, 60).allowed);
  auto d = reserve("c", {k}, 1, kT0 + 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.limit, "concurrent_requests");
  EXPECT_EQ(d.retry_after_s, 1);
  ASSERT_TRUE(q_->settle("b", 1, kT0 + 2).ok());
  EXPECT_TRUE(reserve("c", {k}, 1, kT0 + 2, 0, 600).allowed);
  EXPECT_FALSE(reserve("d", {k}, 1, kT0 + 29).allowed);
  // Lease "a" was never settled (a crashed replica): its slot comes back at its expiry.
  EXPECT_TRUE(reserve("d", {k}, 1, kT0 + 30).allowed);
  EXPECT_EQ(usage("key:a", kT0 + 30).in_flight, 2);
}

TEST_P(QuotaTest, SettleCorrectsTokensAndIsIdempotent) {
  const auto k = scope("key:a", Lim().tpm(100).daily(150));
  ASSERT_TRUE(reserve("a", {k}, 80, kT0).allowed);
  EXPECT_FALSE(reserve("b", {k}, 80, kT0 + 1).allowed);
  ASSERT_TRUE(q_->settle("a", 20, kT0 + 2).ok());  // used fewer than reserved: budget comes back
  EXPECT_EQ(usage("key:a", kT0 + 2).tokens_this_minute, 20);
  EXPECT_EQ(usage("key:a", kT0 + 2).in_flight, 0);
  ASSERT_TRUE(q_->settle("a", 20, kT0 + 3).ok());  // twice (disconnect race): no change
  ASSERT_TRUE(q_->settle("a", 0, kT0 + 3).ok());
  ASSERT_TRUE(q_->settle("never-reserved", 5, kT0 + 3).ok());
  EXPECT_EQ(usage("key:a", kT0 + 3).tokens_this_minute, 20);
  EXPECT_EQ(usage("key:a", kT0 + 3).tokens_today, 20);
  auto d = reserve("b", {k}, 80, kT0 + 4);
  ASSERT_TRUE(d.allowed) << d.message;
  EXPECT_EQ(d.info.remaining_tokens, 0);
  // Settled more than reserved: the real number counts, in the windows of the reservation.
  ASSERT_TRUE(q_->settle("b", 95, kT0 + 70).ok());
  EXPECT_EQ(usage("key:a", kT0 + 4).tokens_this_minute, 115);
  EXPECT_EQ(usage("key:a", kT0 + 70).tokens_this_minute, 0);
  EXPECT_EQ(usage("key:a", kT0 + 70).tokens_today, 115);
  EXPECT_FALSE(reserve("c", {k}, 36, kT0 + 70).allowed);  // daily: 115 + 36 > 150
  EXPECT_TRUE(reserve("c", {k}, 35, kT0 + 70).allowed);
}

TEST_P(QuotaTest, AnyScopeDenyingWritesNothing) {
  const auto key = scope("key:a", Lim().rpm(10).tpm(1000));
  const auto tenant = scope("tenant:t", Lim().tpm(50));
  ASSERT_TRUE(reserve("a", {key, tenant}, 50, kT0).allowed);
  auto d = reserve("b", {key, tenant}, 10, kT0 + 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.scope, "tenant:t");
  EXPECT_EQ(d.info.limit_tokens, 1000);  // headers describe the key
  EXPECT_EQ(d.info.remaining_tokens, 950);
  EXPECT_EQ(usage("key:a", kT0 + 1).requests_this_minute, 1);
  EXPECT_EQ(usage("key:a", kT0 + 1).tokens_this_minute, 50);
  EXPECT_EQ(usage("key:a", kT0 + 1).in_flight, 1);
  ASSERT_TRUE(q_->settle("a", 10, kT0 + 2).ok());
  EXPECT_EQ(usage("tenant:t", kT0 + 2).tokens_this_minute, 10);
  EXPECT_EQ(usage("key:a", kT0 + 2).tokens_this_minute, 10);
  EXPECT_TRUE(reserve("b", {key, tenant}, 40, kT0 + 3).allowed);
}

TEST_P(QuotaTest, UnlimitedAndArguments) {
  const auto k = scope("key:admin", Lim().rpm(-1).tpm(-1));
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(reserve(rid("r", {i}), {k}, 1'000'000, kT0).allowed);
  auto d = reserve("x", {k}, 1, kT0);
  EXPECT_EQ(d.info.limit_requests, -1);
  EXPECT_EQ(d.info.remaining_tokens, -1);
  EXPECT_EQ(q_->reserve("x", {k}, 1, 0, kT0, 60).status().code(), StatusCode::kInvalidArgument);  // id in use
  EXPECT_EQ(q_->reserve("", {k}, 1, 0, kT0, 60).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(q_->reserve("y", {k}, -1, 0, kT0, 60).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(q_->reserve("y", {k, k}, 1, 0, kT0, 60).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(q_->reserve("y", {}, 1, 0, kT0, 60)->allowed);
  auto p = q_->peek(scope("key:b", Lim().rpm(5).tpm(10)), kT0 + 10);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->remaining_requests, 5);
  EXPECT_EQ(p->remaining_tokens, 10);
  EXPECT_EQ(p->reset_tokens_s, 50);
}

TEST_P(QuotaTest, PurgeRemovesOldRowsAndExpiredLeases) {
  const auto k = scope("key:a", Lim().concurrent(5));
  ASSERT_TRUE(reserve("old", {k}, 5, kT0, 0, 10).allowed);
  ASSERT_TRUE(reserve("new", {k}, 5, kT0 + 3 * 86400, 0, 10).allowed);
  ASSERT_TRUE(q_->purge(kT0 + 3 * 86400).ok());
  auto rows = db_->query("SELECT COUNT(*) FROM quota_leases");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(store::as_int((*rows)[0][0]), 1);
  rows = db_->query("SELECT COUNT(*) FROM quota_usage WHERE window_start < ?", {kT0 + 86400});
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(store::as_int((*rows)[0][0]), 0);
  ASSERT_TRUE(q_->settle("old", 1, kT0 + 3 * 86400).ok());  // purged lease: a no-op
}

// 8 threads x 50 reserves against budgets that allow exactly K: exactly K succeed.
TEST_P(QuotaTest, ConcurrentReservesNeverOverrunBudgets) {
  struct Case {
    QuotaLimits limits;
    int64_t tokens;
    int expected;
  };
  const std::vector<Case> cases = {
      {Lim().tpm(1000), 7, 142},  // 142 * 7 = 994
      {Lim().daily(500), 5, 100},
      {Lim().rpm(77), 1, 77},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto k = scope(rid("key:c", {int(c)}), cases[c].limits);
    std::atomic<int> granted{0}, errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i) {
          auto d = q_->reserve(rid("c", {int(c), t, i}), {k},
                               cases[c].tokens, 0, kT0 + 1, 600);
          if (!d.ok()) ++errors;
          else if (d->allowed) ++granted;
        }
      });
    for (auto& t : threads) t.join();
    EXPECT_EQ(errors.load(), 0) << "case " << c;
    EXPECT_EQ(granted.load(), cases[c].expected) << "case " << c;
  }
}

// With a concurrency limit of 3, 8 threads reserving and settling never hold more than 3 grants at once.
TEST_P(QuotaTest, ConcurrencyLimitHoldsUnderContention) {
  const auto k = scope("key:a", Lim().concurrent(3));
  std::atomic<int> in_flight{0}, max_seen{0}, granted{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const std::string id = rid("t", {t, i});
        auto d = q_->reserve(id, {k}, 1, 0, kT0, 600);
        if (!d.ok()) {
          ++errors;
          continue;
        }
        if (!d->allowed) continue;
        ++granted;
        const int now_in = ++in_flight;
        int prev = max_seen.load();
        while (now_in > prev && !max_seen.compare_exchange_weak(prev, now_in)) {
        }
        std::this_thread::yield();
        --in_flight;  // before settle: the lease outlives this thread's count
        if (!q_->settle(id, 1, kT0).ok()) ++errors;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(granted.load(), 0);
  EXPECT_LE(max_seen.load(), 3);
  EXPECT_EQ(usage("key:a", kT0).in_flight, 0);
}

// Two QuotaManagers over two Database connections to one database (two replicas) share the budget exactly.
TEST_P(QuotaTest, ReplicasShareLimits) {
  auto db2 = open();
  ASSERT_TRUE(db2);
  QuotaManager replica(db2.get());
  const auto k = scope("key:shared", Lim().tpm(100).concurrent(60));
  std::atomic<int> granted{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      QuotaManager& m = t % 2 ? replica : *q_;
      for (int i = 0; i < 30; ++i) {
        auto d = m.reserve(rid("p", {t, i}), {k}, 2, 0, kT0, 600);
        if (!d.ok()) ++errors;
        else if (d->allowed) ++granted;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(granted.load(), 50);
  // A settle on one replica frees budget the other sees.
  auto held = db_->query("SELECT request_id FROM quota_leases");
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->size(), 50u);
  ASSERT_TRUE(replica.settle(store::as_text((*held)[0][0]), 0, kT0).ok());
  EXPECT_TRUE(reserve("after", {k}, 2, kT0).allowed);
  EXPECT_FALSE(reserve("after2", {k}, 2, kT0).allowed);
}

TEST_P(QuotaTest, DeferredSettlementIsAppliedBeforeTheNextReservation) {
  const auto k = scope("key:a", Lim().concurrent(1).tpm(1000));
  ASSERT_TRUE(reserve("first", {k}, 500, kT0).allowed);
  EXPECT_FALSE(reserve("blocked", {k}, 10, kT0).allowed);  // the slot is held
  q_->settle_later("first", 40, kT0 + 1);
  // Whether or not the worker ran yet, this reservation sees the slot free and the real 40 tokens.
  auto d = reserve("second", {k}, 100, kT0 + 1);
  ASSERT_TRUE(d.allowed) << d.message;
  EXPECT_EQ(d.info.remaining_tokens, 1000 - 40 - 100);
  q_->settle_later("second", 100, kT0 + 2);
  q_->settle_later("second", 100, kT0 + 2);  // twice: idempotent
  ASSERT_TRUE(q_->flush().ok());
  const QuotaUsage u = usage("key:a", kT0 + 2);
  EXPECT_EQ(u.in_flight, 0);
  EXPECT_EQ(u.tokens_this_minute, 140);
  EXPECT_EQ(u.requests_this_minute, 2);
}

TEST_P(QuotaTest, DeferredSettlementsFromManyThreadsAllLand) {
  const auto k = scope("key:a", Lim().concurrent(1000));
  constexpr int kThreads = 4, kEach = 50;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kEach; ++i) ASSERT_TRUE(reserve(rid("r", {t, i}), {k}, 10, kT0).allowed);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) q_->settle_later(rid("r", {t, i}), 3, kT0 + 1);
    });
  for (auto& th : threads) th.join();
  q_.reset();  // the destructor applies whatever the worker had not yet
  q_ = std::make_unique<QuotaManager>(db_.get());
  const QuotaUsage u = usage("key:a", kT0 + 1);
  EXPECT_EQ(u.in_flight, 0);
  EXPECT_EQ(u.tokens_this_minute, 3 * kThreads * kEach);
}

INSTANTIATE_TEST_SUITE_P(Backends, QuotaTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace citadel::auth
