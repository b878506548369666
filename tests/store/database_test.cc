// The state store contract, checked against both backends: SQLite in a temp dir and a real PostgreSQL server
// (tests/store/pg_fixture.h; skipped with the reason when PostgreSQL is unavailable).
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "store/database.h"
#include "tests/store/pg_fixture.h"

namespace citadel::store {
namespace {

enum class Backend { kSqlite, kPostgres };

class DatabaseTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    std::string reason;
    url_ = citadel::testing::test_database_url(GetParam() == Backend::kPostgres, &dir_, &reason);
    if (url_.empty() && !reason.empty()) GTEST_SKIP() << reason;
    ASSERT_FALSE(url_.empty()) << "mkdtemp failed";
    db_ = open_again();
    ASSERT_NE(db_, nullptr);
  }

  void TearDown() override {
    db_.reset();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  // A second handle on the same database, as another process would open it.
  std::unique_ptr<Database> open_again() {
    auto db = open_database(url_);
    EXPECT_TRUE(db.ok()) << db.status().to_string();
    return db.ok() ? std::move(db).value() : nullptr;
  }

  void exec_ok(const std::string& sql, const std::vector<Value>& params = {}) {
    auto r = db_->exec(sql, params);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }

  int64_t count(const std::string& table) {
    auto rows = db_->query("SELECT COUNT(*) FROM " + table);
    EXPECT_TRUE(rows.ok()) << rows.status().to_string();
    return rows.ok() && !rows->empty() ? as_int((*rows)[0][0]) : -1;
  }

  std::string dir_, url_;
  std::unique_ptr<Database> db_;
};

TEST_P(DatabaseTest, KindAndDescribe) {
  EXPECT_EQ(db_->kind(), GetParam() == Backend::kSqlite ? Database::Kind::kSqlite : Database::Kind::kPostgres);
  const std::string d = db_->describe();
  EXPECT_EQ(d.rfind(GetParam() == Backend::kSqlite ? "sqlite:" : "postgresql://", 0), 0u) << d;
}

TEST_P(DatabaseTest, RoundTripsEveryValueType) {
  exec_ok("CREATE TABLE v (id BIGINT PRIMARY KEY, i BIGINT, d DOUBLE PRECISION, t TEXT)");
  const std::string text = "h\xC3\xA9llo \xE4\xB8\x96\xE7\x95\x8C 'single' \"double\" ? ; -- not a comment";
  const int64_t big = std::numeric_limits<int64_t>::max(), small = std::numeric_limits<int64_t>::min();
  exec_ok("INSERT INTO v (id, i, d, t) VALUES (?, ?, ?, ?)", {int64_t{1}, big, 0.1, text});
  exec_ok("INSERT INTO v (id, i, d, t) VALUES (?, ?, ?, ?)", {int64_t{2}, small, -1.5e300, std::string()});
  exec_ok("INSERT INTO v (id, i, d, t) VALUES (?, ?, ?, ?)", {int64_t{3}, Value{}, Value{}, Value{}});
  auto rows = db_->query("SELECT id, i, d, t FROM v ORDER BY id");
  ASSERT_TRUE(rows.ok()) << rows.status().to_string();
  ASSERT_EQ(rows->size(), 3u);
  const Row& r1 = (*rows)[0];
  ASSERT_TRUE(std::holds_alternative<int64_t>(r1[1]));
  EXPECT_EQ(std::get<int64_t>(r1[1]), big);
  ASSERT_TRUE(std::holds_alternative<double>(r1[2]));
  EXPECT_EQ(std::get<double>(r1[2]), 0.1);  // exact: %.17g round-trips every double
  ASSERT_TRUE(std::holds_alternative<std::string>(r1[3]));
  EXPECT_EQ(std::get<std::string>(r1[3]), text);
  const Row& r2 = (*rows)[1];
  EXPECT_EQ(as_int(r2[1]), small);
  EXPECT_EQ(as_double(r2[2]), -1.5e300);
  EXPECT_FALSE(is_null(r2[3]));
  EXPECT_EQ(as_text(r2[3]), "");
  const Row& r3 = (*rows)[2];
  EXPECT_TRUE(is_null(r3[1]) && is_null(r3[2]) && is_null(r3[3]));
  // Parameters compare as their types: a text key finds its row.
  auto found = db_->query("SELECT id FROM v WHERE t = ?", {text});
  ASSERT_TRUE(found.ok()) << found.status().to_string();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ(as_int((*found)[0][0]), 1);
}

TEST_P(DatabaseTest, PlaceholdersInsideLiteralsAreText) {
  auto rows = db_->query("SELECT 'a?b', ?, 'it''s ?', ?", {int64_t{7}, std::string("x")});
  ASSERT_TRUE(rows.ok()) << rows.status().to_string();
  ASSERT_EQ(rows->size(), 1u);
  const Row& r = (*rows)[0];
  EXPECT_EQ(as_text(r[0]), "a?b");
  EXPECT_EQ(as_int(r[1]), 7);
  EXPECT_EQ(as_text(r[2]), "it's ?");
  EXPECT_EQ(as_text(r[3]), "x");
}

TEST_P(DatabaseTest, ExecCountsChangedRows) {
  exec_ok("CREATE TABLE c (k TEXT PRIMARY KEY, n BIGINT NOT NULL)");
  for (const char* k : {"a", "b", "c"}) exec_ok("INSERT INTO c (k, n) VALUES (?, 0)", {std::string(k)});
  auto changed = db_->exec("UPDATE c SET n = n + ? WHERE k <> ?", {int64_t{5}, std::string("b")});
  ASSERT_TRUE(changed.ok()) << changed.status().to_string();
  EXPECT_EQ(*changed, 2);
  auto upsert = db_->exec("INSERT INTO c (k, n) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET n = c.n + 1",
                          {std::string("a")});
  ASSERT_TRUE(upsert.ok()) << upsert.status().to_string();
  EXPECT_EQ(*upsert, 1);
  auto rows = db_->query("SELECT n FROM c WHERE k = ?", {std::string("a")});
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(as_int((*rows)[0][0]), 6);
}

TEST_P(DatabaseTest, TransactCommitsAndRollsBack) {
  exec_ok("CREATE TABLE t (k BIGINT PRIMARY KEY)");
  Status ok = db_->transact([](Session& s) -> Status {
    for (int64_t k = 1; k <= 3; ++k) {
      const std::vector<Value> params(1, Value(k));
      RETURN_IF_ERROR(s.exec("INSERT INTO t (k) VALUES (?)", params).status());
    }
    return OkStatus();
  });
  ASSERT_TRUE(ok.ok()) << ok.to_string();
  EXPECT_EQ(count("t"), 3);

  Status failed = db_->transact([](Session& s) -> Status {
    RETURN_IF_ERROR(s.exec("INSERT INTO t (k) VALUES (?)", {int64_t{10}}).status());
    return InvalidArgument("caller says no");
  });
  EXPECT_EQ(failed.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(failed.message(), "caller says no");
  EXPECT_EQ(count("t"), 3);
}

TEST_P(DatabaseTest, FailedStatementFailsTheTransaction) {
  exec_ok("CREATE TABLE t (k BIGINT PRIMARY KEY)");
  exec_ok("INSERT INTO t (k) VALUES (1)");
  // fn ignores the duplicate-key error: the transaction still rolls back and reports it (same on both backends).
  Status s = db_->transact([](Session& s) -> Status {
    (void)s.exec("INSERT INTO t (k) VALUES (2)");
    (void)s.exec("INSERT INTO t (k) VALUES (?)", {int64_t{1}});
    return OkStatus();
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_EQ(count("t"), 1);
}

TEST_P(DatabaseTest, ErrorsAreStatusWithoutParameterValues) {
  auto bad = db_->query("SELEC nonsense FROM nowhere");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("SELEC nonsense"), std::string::npos) << bad.status().message();
  auto missing = db_->query("SELECT x FROM no_such_table");
  EXPECT_FALSE(missing.ok());

  exec_ok("CREATE TABLE u (k TEXT PRIMARY KEY, n BIGINT NOT NULL)");
  const std::string secret = "secret-key-hash-0123456789";
  exec_ok("INSERT INTO u (k, n) VALUES (?, 1)", {secret});
  auto dup = db_->exec("INSERT INTO u (k, n) VALUES (?, 2)", {secret});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), StatusCode::kInvalidArgument) << dup.status().to_string();
  EXPECT_EQ(dup.status().message().find(secret), std::string::npos) << dup.status().message();
  auto null_col = db_->exec("INSERT INTO u (k, n) VALUES (?, ?)", {std::string("z"), Value{}});
  EXPECT_EQ(null_col.status().code(), StatusCode::kInvalidArgument) << null_col.status().to_string();
  auto arity = db_->exec("INSERT INTO u (k, n) VALUES (?, ?)", {std::string("z")});
  EXPECT_FALSE(arity.ok());
  // The connection is still usable after every error.
  EXPECT_EQ(count("u"), 1);
}

TEST_P(DatabaseTest, UsingTheDatabaseInsideTransactIsAnErrorNotADeadlock) {
  Status s = db_->transact([&](Session&) -> Status { return db_->exec("SELECT 1").status(); });
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.to_string();
}

// 8 threads x 200 read-modify-write increments: any lost update (no exclusion, no retry) shows in the total.
TEST_P(DatabaseTest, ConcurrentIncrementsAreExact) {
  exec_ok("CREATE TABLE counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)");
  exec_ok("INSERT INTO counter (id, n) VALUES (1, 0)");
  constexpr int kThreads = 8, kPerThread = 200;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        Status s = db_->transact([](Session& s) -> Status {
          ASSIGN_OR_RETURN(auto rows, s.query("SELECT n FROM counter WHERE id = ?", {int64_t{1}}));
          const int64_t n = as_int(rows.at(0).at(0));
          return s.exec("UPDATE counter SET n = ? WHERE id = ?", {n + 1, int64_t{1}}).status();
        });
        if (!s.ok()) {
          ADD_FAILURE() << s.to_string();
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto rows = db_->query("SELECT n FROM counter WHERE id = 1");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(as_int((*rows)[0][0]), kThreads * kPerThread);
}

// Two handles (two "processes") incrementing the same row: exclusion across connections, not just the mutex.
TEST_P(DatabaseTest, TwoHandlesIncrementExactly) {
  exec_ok("CREATE TABLE counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)");
  exec_ok("INSERT INTO counter (id, n) VALUES (1, 0)");
  auto other = open_again();
  ASSERT_NE(other, nullptr);
  constexpr int kPerThread = 50;
  std::vector<std::thread> threads;
  for (Database* db : {db_.get(), other.get(), db_.get(), other.get()}) {
    threads.emplace_back([db] {
      for (int i = 0; i < kPerThread; ++i) {
        Status s = db->transact([](Session& s) -> Status {
          ASSIGN_OR_RETURN(auto rows, s.query("SELECT n FROM counter WHERE id = 1"));
          return s.exec("UPDATE counter SET n = ? WHERE id = 1", {as_int(rows.at(0).at(0)) + 1}).status();
        });
        EXPECT_TRUE(s.ok()) << s.to_string();
      }
    });
  }
  for (auto& t : threads) t.join();
  auto rows = other->query("SELECT n FROM counter WHERE id = 1");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(as_int((*rows)[0][0]), 4 * kPerThread);
}

TEST_P(DatabaseTest, SecondHandleSeesCommittedData) {
  exec_ok("CREATE TABLE t (k TEXT PRIMARY KEY)");
  auto other = open_again();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(db_->transact([](Session& s) { return s.exec("INSERT INTO t (k) VALUES ('x')").status(); }).ok());
  auto rows = other->query("SELECT k FROM t");
  ASSERT_TRUE(rows.ok()) << rows.status().to_string();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(as_text((*rows)[0][0]), "x");
}

const std::vector<Migration> kSteps = {
    {1, "keys", "CREATE TABLE keys (id TEXT PRIMARY KEY, note TEXT);\n"
                "-- a comment; with a semicolon\n"
                "INSERT INTO keys (id, note) VALUES ('k1', 'semi; colon and ? mark');"},
    {2, "tenants", "CREATE TABLE tenants (id TEXT PRIMARY KEY); INSERT INTO tenants (id) VALUES ('default')"},
};

TEST_P(DatabaseTest, MigrateAppliesOnceAndIsIdempotent) {
  auto v = migrate(*db_, kSteps);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(*v, 2);
  EXPECT_EQ(count("schema_migrations"), 2);
  auto note = db_->query("SELECT note FROM keys WHERE id = 'k1'");
  ASSERT_TRUE(note.ok() && note->size() == 1u);
  EXPECT_EQ(as_text((*note)[0][0]), "semi; colon and ? mark");
  auto again = migrate(*db_, kSteps);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(*again, 2);
  EXPECT_EQ(count("schema_migrations"), 2);
  EXPECT_EQ(count("keys"), 1);
  EXPECT_EQ(count("tenants"), 1);
}

TEST_P(DatabaseTest, MigrateRefusesANewerDatabase) {
  ASSERT_TRUE(migrate(*db_, kSteps).ok());
  auto old_binary = migrate(*db_, {kSteps[0]});
  ASSERT_FALSE(old_binary.ok());
  EXPECT_NE(old_binary.status().message().find("state database schema version 2 is newer than this binary (1)"),
            std::string::npos)
      << old_binary.status().message();
}

TEST_P(DatabaseTest, FailedMigrationStepLeavesNoTrace) {
  ASSERT_TRUE(migrate(*db_, kSteps).ok());
  auto steps = kSteps;
  steps.push_back({3, "broken", "CREATE TABLE half (x BIGINT); CREATE TABLE oops ("});
  auto v = migrate(*db_, steps);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("migration 3 (broken)"), std::string::npos) << v.status().message();
  EXPECT_EQ(count("schema_migrations"), 2);
  EXPECT_FALSE(db_->query("SELECT COUNT(*) FROM half").ok());  // the step's DDL rolled back too
  auto bad_order = migrate(*db_, {kSteps[1], kSteps[0]});
  EXPECT_EQ(bad_order.status().code(), StatusCode::kInvalidArgument);
}

TEST_P(DatabaseTest, ConcurrentMigrateFromTwoHandles) {
  auto other = open_again();
  ASSERT_NE(other, nullptr);
  Result<int> a = Status(StatusCode::kInternal, "not run"), b = a;
  std::thread ta([&] { a = migrate(*db_, kSteps); });
  std::thread tb([&] { b = migrate(*other, kSteps); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ(*a, 2);
  EXPECT_EQ(*b, 2);
  EXPECT_EQ(count("schema_migrations"), 2);
  EXPECT_EQ(count("keys"), 1);
}

INSTANTIATE_TEST_SUITE_P(Backends, DatabaseTest, ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kSqlite ? "Sqlite" : "Postgres";
                         });

TEST(SqliteStore, FileIsOwnerOnly) {
  std::string templ = (std::filesystem::temp_directory_path() / "citadel-store-XXXXXX").string();
  ASSERT_NE(mkdtemp(templ.data()), nullptr);
  const std::string path = templ + "/state.db";
  {
    auto db = open_sqlite(path);
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    ASSERT_TRUE((*db)->exec("CREATE TABLE t (k TEXT)").ok());
    struct stat st{};
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    ASSERT_EQ(stat((path + "-wal").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto mode = (*db)->query("PRAGMA journal_mode");
    ASSERT_TRUE(mode.ok());
    EXPECT_EQ(as_text((*mode)[0][0]), "wal");
  }
  auto missing_dir = open_sqlite(templ + "/no/such/dir/state.db");
  EXPECT_FALSE(missing_dir.ok());
  std::error_code ec;
  std::filesystem::remove_all(templ, ec);
}

TEST(SqliteStore, InMemoryAndDescribedPathsOpen) {
  auto mem = open_database(":memory:");
  ASSERT_TRUE(mem.ok()) << mem.status().to_string();
  EXPECT_TRUE((*mem)->exec("CREATE TABLE t (k TEXT)").ok());
  std::string templ = (std::filesystem::temp_directory_path() / "citadel-store-XXXXXX").string();
  ASSERT_NE(mkdtemp(templ.data()), nullptr);
  auto db = open_database(templ + "/state.db");
  ASSERT_TRUE(db.ok());
  auto again = open_database((*db)->describe());  // "sqlite:/tmp/.../state.db" opens the same file
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ((*again)->describe(), (*db)->describe());
  std::error_code ec;
  std::filesystem::remove_all(templ, ec);
}

TEST(StoreDispatch, OpenDatabaseChoosesTheBackend) {
  std::string reason;
  const std::string conninfo = citadel::testing::pg_test_conninfo(&reason);
  if (conninfo.empty()) GTEST_SKIP() << reason;
  auto pg = open_database(conninfo);
  ASSERT_TRUE(pg.ok()) << pg.status().to_string();
  EXPECT_EQ((*pg)->kind(), Database::Kind::kPostgres);
}

TEST(PostgresStore, DescribeNeverShowsThePassword) {
  std::string reason;
  const std::string conninfo = citadel::testing::pg_test_conninfo(&reason);
  if (conninfo.empty()) GTEST_SKIP() << reason;
  // Trust authentication ignores the password, so both spellings connect.
  auto field = [&](const std::string& key) {
    const size_t at = conninfo.find(key + "=") + key.size() + 1;
    return conninfo.substr(at, conninfo.find(' ', at) - at);
  };
  const std::string url = "postgresql://postgres:hunter2@127.0.0.1:" + field("port") + "/" + field("dbname");
  for (const std::string& info : {conninfo + " password=hunter2", url}) {
    auto db = open_database(info);
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    EXPECT_EQ((*db)->kind(), Database::Kind::kPostgres);
    const std::string d = (*db)->describe();
    EXPECT_EQ(d.find("hunter2"), std::string::npos) << d;
    EXPECT_EQ(d, "postgresql://postgres@127.0.0.1:" + field("port") + "/" + field("dbname"));
  }
  auto bad = open_postgres("host=127.0.0.1 port=1 dbname=x user=u password=hunter2 connect_timeout=2");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("hunter2"), std::string::npos) << bad.status().message();
}

}  // namespace
}  // namespace citadel::store
