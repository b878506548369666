// The audit log on both state-store backends: append/flush/query, chain verification and the tamper cases it must
// catch (with the first bad seq), concurrency, durability under SIGKILL, write failures, retention.
#include "audit/audit_log.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "audit/audit_chain.h"
#include "tests/store/pg_fixture.h"

namespace citadel::audit {
namespace {

using store::Value;

AuditEvent ev(const std::string& kind, const std::string& principal = "key-a", const std::string& tenant = "t1",
              int64_t time_ms = 0) {
  AuditEvent e;
  e.kind = kind;
  e.principal = principal;
  e.tenant = tenant;
  e.request_id = "req";
  e.client = "127.0.0.1";
  e.model = "m";
  e.status = 200;
  e.time_ms = time_ms;
  e.detail = {{"prompt_tokens", 12}, {"reason", "ok"}};
  return e;
}

class AuditTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string reason;
    url_ = citadel::testing::test_database_url(GetParam() == "postgres", &dir_, &reason);
    if (url_.empty() && !reason.empty()) GTEST_SKIP() << reason;
    ASSERT_FALSE(url_.empty()) << "mkdtemp failed";
    db_ = open_db();
    ASSERT_TRUE(db_);
    auto v = store::migrate(*db_, audit_migrations());
    ASSERT_TRUE(v.ok()) << v.status().to_string();
  }
  void TearDown() override {
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<store::Database> open_db() {
    auto db = store::open_database(url_);
    EXPECT_TRUE(db.ok()) << db.status().to_string();
    return db.ok() ? std::move(*db) : nullptr;
  }
  AuditOptions options() {
    AuditOptions o;
    o.signing_key_file = dir_ + "/audit.key";
    o.flush_interval_ms = 20;
    return o;
  }
  std::unique_ptr<AuditLog> open_log(store::Database* db = nullptr) {
    auto log = AuditLog::open(db ? db : db_.get(), options());
    EXPECT_TRUE(log.ok()) << log.status().to_string();
    return log.ok() ? std::move(*log) : nullptr;
  }
  VerifyReport verify() {
    auto r = verify_audit(*db_, dir_ + "/audit.key", dir_ + "/audit.key.head");
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : VerifyReport{};
  }
  // 12 records committed in three batches: checkpoints at 4, 8 and 12.
  void write_12() {
    auto log = open_log();
    ASSERT_TRUE(log);
    for (int b = 0; b < 3; ++b) {
      for (int i = 0; i < 4; ++i) ASSERT_TRUE(log->append(ev("inference", "key-" + std::to_string(i))));
      ASSERT_TRUE(log->flush().ok());
    }
    log->close();
    const VerifyReport r = verify();
    ASSERT_TRUE(r.ok) << r.reason;
    ASSERT_EQ(r.records, 12);
    ASSERT_EQ(r.checkpoints, 3);
  }
  void expect_bad(int64_t seq) {
    const VerifyReport r = verify();
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.first_bad_seq, seq) << r.reason;
  }
  int64_t scalar(const std::string& sql) {
    auto rows = db_->query(sql);
    EXPECT_TRUE(rows.ok()) << rows.status().to_string();
    return rows.ok() && !rows->empty() ? store::as_int((*rows)[0][0]) : -1;
  }

  std::string dir_, url_;
  std::unique_ptr<store::Database> db_;
};

TEST_P(AuditTest, AppendFlushQueryExport) {
  auto log = open_log();
  ASSERT_TRUE(log);
  EXPECT_FALSE(log->append(ev("no.such.kind")));
  ASSERT_TRUE(log->append(ev("server.start", "")));
  ASSERT_TRUE(log->append(ev("key.create", "admin")));
  ASSERT_TRUE(log->append(ev("inference", "key-a")));
  ASSERT_TRUE(log->flush().ok());
  EXPECT_TRUE(log->healthy());
  EXPECT_EQ(log->stats().written, 3u);
  EXPECT_EQ(log->stats().queue_depth, 0u);

  AuditQuery q;
  auto page = log->query(q);
  ASSERT_TRUE(page.ok()) << page.status().to_string();
  ASSERT_EQ(page->records.size(), 3u);
  EXPECT_EQ(page->records[0].seq, 3);
  EXPECT_EQ(page->records[0].event.kind, "inference");
  EXPECT_EQ(page->records[0].event.detail["prompt_tokens"], 12);
  EXPECT_EQ(page->records[2].prev_hash, internal::kZeroHash);
  EXPECT_EQ(page->records[1].prev_hash, page->records[2].hash);
  EXPECT_TRUE(page->next_cursor.empty());

  std::stringstream out;
  ASSERT_TRUE(export_jsonl(*db_, out, 0, 0).ok());
  std::string line;
  int n = 0;
  while (std::getline(out, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["seq"], ++n);
    EXPECT_EQ(j["hash"].get<std::string>().size(), 64u);
    EXPECT_TRUE(j.contains("prev_hash") && j.contains("detail") && j.contains("tenant"));
  }
  EXPECT_EQ(n, 3);
  log->close();
  EXPECT_FALSE(log->append(ev("inference")));
  const VerifyReport r = verify();
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 3);
}

TEST_P(AuditTest, ReopenContinuesTheChain) {
  write_12();
  auto log = open_log();
  ASSERT_TRUE(log);
  ASSERT_TRUE(log->append(ev("server.start")));
  ASSERT_TRUE(log->flush().ok());
  log->close();
  const VerifyReport r = verify();
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 13);
}

TEST_P(AuditTest, TamperFlippedDetailByte) {
  write_12();
  auto rows = db_->query("SELECT detail FROM audit_records WHERE seq = 6");
  ASSERT_TRUE(rows.ok() && rows->size() == 1);
  std::string detail = store::as_text((*rows)[0][0]);
  const size_t at = detail.find("12");
  ASSERT_NE(at, std::string::npos);
  detail[at] = '9';
  std::vector<Value> p;
  p.emplace_back(detail);
  ASSERT_TRUE(db_->exec("UPDATE audit_records SET detail = ? WHERE seq = 6", p).ok());
  expect_bad(6);
}

TEST_P(AuditTest, TamperDeletedMiddleRecord) {
  write_12();
  ASSERT_TRUE(db_->exec("DELETE FROM audit_records WHERE seq = 5").ok());
  expect_bad(5);
}

TEST_P(AuditTest, TamperSwappedRecords) {
  write_12();
  const std::string cols = "time_ms, kind, principal, tenant, request_id, client, model, status, detail, prev_hash, hash";
  auto a = db_->query("SELECT " + cols + " FROM audit_records WHERE seq = 3");
  auto b = db_->query("SELECT " + cols + " FROM audit_records WHERE seq = 7");
  ASSERT_TRUE(a.ok() && b.ok() && a->size() == 1 && b->size() == 1);
  const std::string set =
      "UPDATE audit_records SET time_ms = ?, kind = ?, principal = ?, tenant = ?, request_id = ?, client = ?, "
      "model = ?, status = ?, detail = ?, prev_hash = ?, hash = ? WHERE seq = ?";
  std::vector<Value> pa = (*b)[0], pb = (*a)[0];
  pa.emplace_back(int64_t{3});
  pb.emplace_back(int64_t{7});
  ASSERT_TRUE(db_->exec(set, pa).ok());
  ASSERT_TRUE(db_->exec(set, pb).ok());
  expect_bad(3);
}

TEST_P(AuditTest, TamperTruncatedTailCaughtByHeadFile) {
  write_12();
  ASSERT_TRUE(db_->exec("DELETE FROM audit_records WHERE seq > 8").ok());
  ASSERT_TRUE(db_->exec("DELETE FROM audit_checkpoints WHERE seq > 8").ok());
  expect_bad(9);
  // A writer must not paper over it by appending new records 9.. and rewriting the head file.
  auto log = AuditLog::open(db_.get(), options());
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kDataLoss);
}

TEST_P(AuditTest, TamperReplacedSigningKey) {
  write_12();
  std::filesystem::remove(dir_ + "/audit.key");
  ASSERT_TRUE(internal::load_or_create_signing_key(dir_ + "/audit.key").ok());
  expect_bad(4);
}

TEST_P(AuditTest, TamperEditedCheckpointSignature) {
  write_12();
  auto rows = db_->query("SELECT signature FROM audit_checkpoints WHERE seq = 8");
  ASSERT_TRUE(rows.ok() && rows->size() == 1);
  std::string sig = store::as_text((*rows)[0][0]);
  sig[10] = sig[10] == '0' ? '1' : '0';
  std::vector<Value> p;
  p.emplace_back(sig);
  ASSERT_TRUE(db_->exec("UPDATE audit_checkpoints SET signature = ? WHERE seq = 8", p).ok());
  expect_bad(8);
}

TEST_P(AuditTest, TamperForgedAppendWithoutKey) {
  write_12();
  // An attacker without the key appends a well-chained record: no checkpoint covers it.
  auto last = db_->query("SELECT hash FROM audit_records WHERE seq = 12");
  ASSERT_TRUE(last.ok() && last->size() == 1);
  const std::string prev = store::as_text((*last)[0][0]);
  AuditEvent e = ev("inference");
  e.time_ms = 5;
  const std::string detail = e.detail.dump();
  std::vector<Value> p;
  p.emplace_back(int64_t{13});
  p.emplace_back(e.time_ms);
  for (const std::string* s : {&e.kind, &e.principal, &e.tenant, &e.request_id, &e.client, &e.model}) {
    p.emplace_back(*s);
  }
  p.emplace_back(int64_t{200});
  p.emplace_back(detail);
  p.emplace_back(prev);
  p.emplace_back(internal::record_hash(prev, 13, e, detail));
  ASSERT_TRUE(db_->exec("INSERT INTO audit_records (seq, time_ms, kind, principal, tenant, request_id, client, model, "
                        "status, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        p)
                  .ok());
  expect_bad(13);
}

TEST_P(AuditTest, ConcurrentAppendsLoseNothing) {
  auto log = open_log();
  ASSERT_TRUE(log);
  constexpr int kThreads = 8, kEach = 250;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        AuditEvent e = ev("inference", "key-" + std::to_string(t));
        e.detail = {{"i", i}};
        EXPECT_TRUE(log->append(std::move(e)));
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(log->flush().ok());
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM audit_records"), kThreads * kEach);
  EXPECT_EQ(scalar("SELECT MIN(seq) FROM audit_records"), 1);
  EXPECT_EQ(scalar("SELECT MAX(seq) FROM audit_records"), kThreads * kEach);
  for (int t = 0; t < kThreads; ++t) {
    AuditQuery q;
    q.principal = "key-" + std::to_string(t);
    q.limit = 1000;
    auto page = log->query(q);
    ASSERT_TRUE(page.ok());
    std::set<int> seen;
    for (const auto& r : page->records) seen.insert(r.event.detail["i"].get<int>());
    EXPECT_EQ(seen.size(), static_cast<size_t>(kEach));
  }
  log->close();
  const VerifyReport r = verify();
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, kThreads * kEach);
}

// A drained backlog is committed as several short transactions (the request path's quota reservations share the
// database's writer slot), each ending in a signed checkpoint, and the head file names the last one.
TEST_P(AuditTest, BacklogCommitsInShortTransactionsThatEachEndInACheckpoint) {
  AuditOptions o = options();
  o.max_records_per_commit = 3;
  o.flush_interval_ms = 200;  // the ten appends below gather into one drain
  auto log = AuditLog::open(db_.get(), o);
  ASSERT_TRUE(log.ok()) << log.status().to_string();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->append(ev("inference", "key-" + std::to_string(i))));
  ASSERT_TRUE((*log)->flush().ok());
  EXPECT_EQ((*log)->stats().written, 10u);
  auto cps = db_->query("SELECT seq FROM audit_checkpoints ORDER BY seq");
  ASSERT_TRUE(cps.ok());
  int64_t prev = 0;
  for (const auto& row : *cps) {
    const int64_t seq = store::as_int(row[0]);
    EXPECT_LE(seq - prev, 3) << "a transaction committed more than max_records_per_commit records";
    prev = seq;
  }
  EXPECT_EQ(prev, 10);
  EXPECT_GE(cps->size(), 4u);
  auto head = internal::read_head(dir_ + "/audit.key.head");
  ASSERT_TRUE(head.ok()) << head.status().to_string();
  EXPECT_EQ(head->seq, 10);
  (*log)->close();
  const VerifyReport r = verify();
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 10);
  EXPECT_EQ(r.checkpoints, static_cast<int64_t>(cps->size()));
}

TEST_P(AuditTest, FlushedRecordVisibleToAnotherConnection) {
  auto log = open_log();
  ASSERT_TRUE(log);
  auto other = open_db();
  ASSERT_TRUE(other);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(log->append(ev("auth.failure", "")));
  ASSERT_TRUE(log->flush().ok());
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, options().flush_interval_ms + 2000);
  auto rows = other->query("SELECT kind FROM audit_records WHERE seq = 1");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(store::as_text((*rows)[0][0]), "auth.failure");
}

TEST_P(AuditTest, WriteFailureIsVisible) {
  auto log = open_log();
  ASSERT_TRUE(log);
  ASSERT_TRUE(log->append(ev("inference")));
  ASSERT_TRUE(log->flush().ok());
  auto other = open_db();
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->exec("DROP TABLE audit_records").ok());
  ASSERT_TRUE(log->append(ev("inference")));
  const Status st = log->flush();
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(log->healthy());
  EXPECT_FALSE(log->append(ev("inference")));
  const AuditStats s = log->stats();
  EXPECT_GE(s.write_failures, 1u);
  EXPECT_FALSE(s.last_error.empty());
  EXPECT_EQ(s.queue_depth, 1u);
  log->close();  // must not hang on the failing batch
}

TEST_P(AuditTest, PurgeKeepsAnAnchorThatVerifies) {
  const int64_t now = internal::now_ms();
  const int64_t old = now - 200LL * 86400000;
  auto log = open_log();
  ASSERT_TRUE(log);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(log->append(ev("inference", "old", "t1", old + i)));
  ASSERT_TRUE(log->flush().ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(log->append(ev("inference", "new", "t1", now - 1000 + i)));
  ASSERT_TRUE(log->flush().ok());
  ASSERT_TRUE(log->purge(now).ok());
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM audit_records"), 4);
  EXPECT_EQ(scalar("SELECT MIN(seq) FROM audit_records"), 6);
  EXPECT_EQ(scalar("SELECT seq FROM audit_anchor"), 5);
  AuditQuery q;
  q.kind = "retention.purge";
  auto page = log->query(q);
  ASSERT_TRUE(page.ok() && page->records.size() == 1);
  EXPECT_EQ(page->records[0].seq, 9);
  EXPECT_EQ(page->records[0].event.detail["purged"], 5);
  EXPECT_EQ(page->records[0].event.detail["anchor_seq"], 5);
  ASSERT_TRUE(log->purge(now).ok());  // nothing more to purge: no new record
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM audit_records"), 4);
  log->close();
  VerifyReport r = verify();
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 4);
  ASSERT_TRUE(db_->exec("DELETE FROM audit_records WHERE seq = 6").ok());
  expect_bad(6);
}

TEST_P(AuditTest, QueryFiltersAndCursorPaging) {
  auto log = open_log();
  ASSERT_TRUE(log);
  const int64_t base = 1'700'000'000'000;
  for (int i = 0; i < 25; ++i) {
    ASSERT_TRUE(log->append(ev(i % 5 == 0 ? "key.create" : "inference", i % 2 ? "odd" : "even",
                               i < 10 ? "t1" : "t2", base + i * 1000)));
  }
  ASSERT_TRUE(log->flush().ok());
  for (bool newest : {true, false}) {
    AuditQuery q;
    q.limit = 10;
    q.newest_first = newest;
    std::vector<int64_t> seqs;
    for (int pages = 0; pages < 5; ++pages) {
      auto page = log->query(q);
      ASSERT_TRUE(page.ok()) << page.status().to_string();
      for (const auto& r : page->records) seqs.push_back(r.seq);
      if (page->next_cursor.empty()) break;
      q.cursor = page->next_cursor;
    }
    ASSERT_EQ(seqs.size(), 25u);
    for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], newest ? 25 - int64_t(i) : int64_t(i) + 1);
  }
  AuditQuery q;
  q.principal = "odd";
  q.tenant = "t2";
  q.kind = "inference";
  q.limit = 1000;
  auto page = log->query(q);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->records.size(), 6u);  // odd i in 10..24 not divisible by 5: 11 13 17 19 21 23
  for (const auto& r : page->records) EXPECT_TRUE(r.event.principal == "odd" && r.event.tenant == "t2");
  AuditQuery t;
  t.since_ms = base + 5000;
  t.until_ms = base + 8000;
  page = log->query(t);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->records.size(), 3u);
  AuditQuery bad;
  bad.limit = 0;
  EXPECT_FALSE(log->query(bad).ok());
  bad.limit = 10;
  bad.cursor = "x'; DROP";
  EXPECT_FALSE(log->query(bad).ok());
  std::stringstream out;
  ASSERT_TRUE(export_jsonl(*db_, out, base + 5000, base + 8000).ok());
  const std::string text = out.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_all(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

TEST_P(AuditTest, RotatedKeyKeepsOldCheckpointsVerifiableThroughTheKeyring) {
  write_12();
  auto log = open_log();
  ASSERT_TRUE(log);
  const std::string old_id = log->stats().signing_key_id;
  EXPECT_EQ(log->stats().signing_key_version, 1);
  auto rot = log->rotate_signing_key("cli");
  ASSERT_TRUE(rot.ok()) << rot.status().to_string();
  EXPECT_EQ(rot->old_key_id, old_id);
  EXPECT_NE(rot->new_key_id, old_id);
  EXPECT_EQ(rot->new_version, 2);
  EXPECT_EQ(log->stats().signing_key_id, rot->new_key_id);
  EXPECT_EQ(log->stats().signing_key_version, 2);
  EXPECT_EQ(log->stats().signing_key_age_days, 0);
  ASSERT_TRUE(log->append(ev("inference")));
  ASSERT_TRUE(log->flush().ok());
  log->close();
  // The key file is a fresh private key, 0600; the keyring holds only the old public half.
  EXPECT_EQ(std::filesystem::status(dir_ + "/audit.key").permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const std::string ring = read_all(dir_ + "/audit.key.retired");
  EXPECT_NE(ring.find("BEGIN PUBLIC KEY"), std::string::npos);
  EXPECT_EQ(ring.find("PRIVATE"), std::string::npos);
  EXPECT_NE(ring.find("key_id=" + old_id), std::string::npos);
  // The rotation is in the chain (ids only), and the checkpoints after it use the new key.
  auto rec = db_->query("SELECT seq, detail FROM audit_records WHERE kind = 'encryption.key_rotation'");
  ASSERT_TRUE(rec.ok() && rec->size() == 1);
  EXPECT_EQ(store::as_int((*rec)[0][0]), 13);
  auto detail = nlohmann::json::parse(store::as_text((*rec)[0][1]));
  EXPECT_EQ(detail["old_key_id"], old_id);
  EXPECT_EQ(detail["new_key_id"], rot->new_key_id);
  EXPECT_EQ(detail["key"], "audit_signing");
  EXPECT_EQ(scalar("SELECT COUNT(DISTINCT key_id) FROM audit_checkpoints"), 2);
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM audit_checkpoints WHERE seq >= 13 AND key_id = '" + old_id + "'"), 0);
  VerifyReport r = verify();
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 14);
  EXPECT_EQ(r.checkpoints, 5);
  // Without the keyring the old checkpoints are signed by an unknown key: caught at the first one.
  std::filesystem::rename(dir_ + "/audit.key.retired", dir_ + "/ring.bak");
  expect_bad(4);
  std::filesystem::rename(dir_ + "/ring.bak", dir_ + "/audit.key.retired");
  EXPECT_TRUE(verify().ok);
  // Replacing the current key without rotate-key: the new key's checkpoints are caught (13 is the first).
  std::filesystem::remove(dir_ + "/audit.key");
  ASSERT_TRUE(internal::load_or_create_signing_key(dir_ + "/audit.key").ok());
  expect_bad(13);
}

TEST_P(AuditTest, RunningWriterPicksUpARotationMadeByAnotherProcess) {
  auto server = open_log();
  ASSERT_TRUE(server);
  ASSERT_TRUE(server->append(ev("server.start")));
  ASSERT_TRUE(server->flush().ok());
  const std::string old_id = server->stats().signing_key_id;
  // The CLI: its own connection and its own AuditLog on the same key file.
  auto cli_db = open_db();
  ASSERT_TRUE(cli_db);
  std::string new_id;
  {
    auto cli = open_log(cli_db.get());
    ASSERT_TRUE(cli);
    auto rot = cli->rotate_signing_key("cli");
    ASSERT_TRUE(rot.ok()) << rot.status().to_string();
    new_id = rot->new_key_id;
  }
  EXPECT_EQ(server->stats().signing_key_id, old_id);  // not re-read until the next commit
  ASSERT_TRUE(server->append(ev("inference")));
  ASSERT_TRUE(server->flush().ok());
  EXPECT_EQ(server->stats().signing_key_id, new_id);
  EXPECT_EQ(server->stats().signing_key_version, 2);
  auto last = db_->query("SELECT key_id FROM audit_checkpoints ORDER BY seq DESC LIMIT 1");
  ASSERT_TRUE(last.ok() && last->size() == 1);
  EXPECT_EQ(store::as_text((*last)[0][0]), new_id);
  server->close();
  VerifyReport r = verify();
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 3);
}

TEST_P(AuditTest, RetiredKeyCannotSignAfterItsRotation) {
  write_12();
  std::filesystem::copy_file(dir_ + "/audit.key", dir_ + "/stolen.key");
  {
    auto log = open_log();
    ASSERT_TRUE(log);
    ASSERT_TRUE(log->rotate_signing_key("cli").ok());
  }
  ASSERT_TRUE(verify().ok);
  // Someone holding the retired key keeps writing (the keyring vouches for that key's old checkpoints).
  AuditOptions o = options();
  o.signing_key_file = dir_ + "/stolen.key";
  o.head_file = dir_ + "/audit.key.head";
  {
    auto log = AuditLog::open(db_.get(), o);
    ASSERT_TRUE(log.ok()) << log.status().to_string();
    ASSERT_TRUE((*log)->append(ev("inference")));
    ASSERT_TRUE((*log)->flush().ok());
  }
  const VerifyReport r = verify();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_seq, 14) << r.reason;
  EXPECT_NE(r.reason.find("retired"), std::string::npos) << r.reason;
}

TEST_P(AuditTest, SigningKeyAgeComesFromTheKeyFileNotItsMtime) {
  const std::string path = dir_ + "/audit.key";
  ASSERT_TRUE(internal::load_or_create_signing_key(path).ok());
  std::string text = read_all(path);
  const size_t at = text.find("created=");
  ASSERT_NE(at, std::string::npos) << text;
  const int64_t created = internal::now_ms() / 1000 - 100 * 86400 - 60;
  text = text.substr(0, at) + "created=" + std::to_string(created) + text.substr(text.find('\n', at));
  write_all(path, text);
  {
    auto log = open_log();
    ASSERT_TRUE(log);
    EXPECT_EQ(log->stats().signing_key_age_days, 100);
    EXPECT_EQ(log->stats().signing_key_version, 1);
    EXPECT_EQ(log->stats().signing_key_id.size(), 16u);
  }
  // A key made elsewhere (no creation line): version 1, age unknown.
  write_all(path, text.substr(text.find("-----BEGIN")));
  auto log = open_log();
  ASSERT_TRUE(log);
  EXPECT_EQ(log->stats().signing_key_age_days, -1);
  EXPECT_EQ(log->stats().signing_key_version, 1);
}

TEST_P(AuditTest, MalformedKeyringIsAnError) {
  write_12();
  write_all(dir_ + "/audit.key.retired", "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n");
  auto r = verify_audit(*db_, dir_ + "/audit.key", dir_ + "/audit.key.head");
  EXPECT_FALSE(r.ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, AuditTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

// SIGKILL while appending: everything the child saw flushed is there, and the chain still verifies.
TEST(AuditDurability, SigkillLosesOnlyTheUnflushedTail) {
  std::string templ = (std::filesystem::temp_directory_path() / "citadel-audit-kill-XXXXXX").string();
  ASSERT_NE(mkdtemp(templ.data()), nullptr);
  const std::string dir = templ, url = dir + "/state.db";
  {
    auto db = store::open_sqlite(url);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(store::migrate(**db, audit_migrations()).ok());
  }
  AuditOptions o;
  o.signing_key_file = dir + "/audit.key";
  o.flush_interval_ms = 5;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    auto db = store::open_sqlite(url);
    if (!db.ok()) _exit(3);
    auto log = AuditLog::open(db->get(), o);
    if (!log.ok()) _exit(4);
    for (int64_t n = 0;;) {
      for (int i = 0; i < 7; ++i, ++n) (*log)->append(ev("inference"));
      if (!(*log)->flush().ok()) _exit(5);
      if (write(fds[1], &n, sizeof n) != sizeof n) _exit(6);
    }
  }
  close(fds[1]);
  int64_t reported = 0, n = 0;
  bool killed = false;
  while (read(fds[0], &n, sizeof n) == sizeof n) {
    reported = n;
    if (!killed && reported >= 300) {
      kill(pid, SIGKILL);
      killed = true;
    }
  }
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child exit " << status;
  auto db = store::open_sqlite(url);
  ASSERT_TRUE(db.ok());
  auto rows = (*db)->query("SELECT COUNT(*), MAX(seq) FROM audit_records");
  ASSERT_TRUE(rows.ok());
  EXPECT_GE(store::as_int((*rows)[0][0]), reported);
  EXPECT_EQ(store::as_int((*rows)[0][0]), store::as_int((*rows)[0][1]));
  auto r = verify_audit(**db, o.signing_key_file, o.signing_key_file + ".head");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->ok) << r->reason;
  auto log = AuditLog::open(db->get(), o);  // and the log goes on
  ASSERT_TRUE(log.ok()) << log.status().to_string();
  ASSERT_TRUE((*log)->append(ev("server.start")));
  ASSERT_TRUE((*log)->flush().ok());
  (*log).reset();
  db->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace citadel::audit
