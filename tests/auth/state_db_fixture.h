// A migrated state database on either backend for the auth tests (parameter "sqlite": a file in a fresh temp
// directory; "postgres": a fresh database on the test PostgreSQL server, or a skip with the reason), and Lim, a
// QuotaLimits builder (designated initializers would trip -Wmissing-field-initializers).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "auth/identity.h"
#include "auth/schema.h"
#include "store/database.h"
#include "tests/store/pg_fixture.h"

namespace citadel::auth::testing {

struct Lim {
  QuotaLimits l;
  Lim& rpm(int64_t v) { l.requests_per_minute = v; return *this; }
  Lim& tpm(int64_t v) { l.tokens_per_minute = v; return *this; }
  Lim& concurrent(int64_t v) { l.concurrent_requests = v; return *this; }
  Lim& max_tokens(int64_t v) { l.max_tokens_per_request = v; return *this; }
  Lim& daily(int64_t v) { l.daily_tokens = v; return *this; }
  operator QuotaLimits() const { return l; }
};

class StateDbTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Opens db_ (migrated); derived fixtures call it first in their SetUp.
  void SetUp() override {
    std::string reason;
    url_ = citadel::testing::test_database_url(GetParam() == "postgres", &dir_, &reason);
    if (url_.empty() && !reason.empty()) GTEST_SKIP() << reason;
    ASSERT_FALSE(url_.empty()) << "mkdtemp failed";
    db_ = open();
    ASSERT_TRUE(db_);
    auto v = store::migrate(*db_, state_migrations());
    ASSERT_TRUE(v.ok()) << v.status().to_string();
  }
  // Derived fixtures reset what uses db_ first, then call this.
  void TearDown() override {
    db_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  // Another connection to the same database (another replica).
  std::unique_ptr<store::Database> open() {
    auto db = store::open_database(url_);
    EXPECT_TRUE(db.ok()) << db.status().to_string();
    return db.ok() ? std::move(*db) : nullptr;
  }

  std::string dir_, url_;
  std::unique_ptr<store::Database> db_;
};

}  // namespace citadel::auth::testing
