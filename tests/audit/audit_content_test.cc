// Stored content (audit_content.h) on both backends: sealed by the writer with the record, read back with the key,
// and every tampering case (wrong key, modified / replaced / deleted / moved blob) refused; no plaintext in the
// database file; retention deletes content with its records.
#include "audit/audit_content.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "audit/audit_chain.h"
#include "audit/audit_log.h"
#include "tests/store/pg_fixture.h"

namespace citadel::audit {
namespace {

using store::Value;

crypto::Key key_of(uint8_t fill, const std::string& id) {
  crypto::Key k;
  k.id = id;
  k.bytes.assign(crypto::kKeyBytes, fill);
  return k;
}

TEST(AuditContentSeal, RoundTripAndBinding) {
  const crypto::Key k = key_of(7, "content@1");
  auto s = seal_content(k, "req-1", 5, "{\"prompt\":\"secret words\"}");
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->key_id, "content@1");
  EXPECT_EQ(s->nonce_hex.size(), 24u);
  EXPECT_EQ(s->ciphertext_hex.size(), 2 * (25 + 16));
  EXPECT_EQ(s->ciphertext_hex.find("736563726574"), std::string::npos);  // "secret" in hex
  auto pt = open_content(k, "req-1", 5, *s);
  ASSERT_TRUE(pt.ok()) << pt.status().to_string();
  EXPECT_EQ(*pt, "{\"prompt\":\"secret words\"}");
  // Fresh nonce per blob.
  auto s2 = seal_content(k, "req-1", 5, "{\"prompt\":\"secret words\"}");
  ASSERT_TRUE(s2.ok());
  EXPECT_NE(s2->nonce_hex, s->nonce_hex);
  EXPECT_NE(s2->sha256_hex, s->sha256_hex);
  // Bound to the record: another seq or request id, another key, a flipped byte: all refused.
  EXPECT_EQ(open_content(k, "req-1", 6, *s).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(open_content(k, "req-2", 5, *s).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(open_content(key_of(8, "content@1"), "req-1", 5, *s).status().code(), StatusCode::kDataLoss);
  SealedContent bad = *s;
  bad.ciphertext_hex[0] = bad.ciphertext_hex[0] == '0' ? '1' : '0';
  auto r = open_content(k, "req-1", 5, bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("wrong content key or modified content"), std::string::npos);
  EXPECT_EQ(r.status().message().find("secret"), std::string::npos);
}

TEST(AuditContentSeal, KeyIdWithoutAnIdNamesTheKeyNotItsBytes) {
  const crypto::Key a = key_of(1, ""), b = key_of(2, "");
  EXPECT_EQ(content_key_id(a).rfind("sha256:", 0), 0u);
  EXPECT_EQ(content_key_id(a).size(), 7u + 16u);
  EXPECT_NE(content_key_id(a), content_key_id(b));
  EXPECT_EQ(content_key_id(a).find("0101010101"), std::string::npos);
}

class AuditContentTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string reason;
    url_ = citadel::testing::test_database_url(GetParam() == "postgres", &dir_, &reason);
    if (url_.empty() && !reason.empty()) GTEST_SKIP() << reason;
    ASSERT_FALSE(url_.empty()) << "mkdtemp failed";
    auto db = store::open_database(url_);
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    db_ = std::move(*db);
    auto steps = audit_migrations();
    for (auto& m : audit_content_migrations()) steps.push_back(m);
    auto v = store::migrate(*db_, steps);
    ASSERT_TRUE(v.ok()) << v.status().to_string();
    ASSERT_EQ(*v, 4);
    key_ = std::make_shared<const crypto::Key>(key_of(9, "audit-content@1"));
  }
  void TearDown() override {
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<AuditLog> open_log(bool with_key = true) {
    AuditOptions o;
    o.signing_key_file = dir_ + "/audit.key";
    o.flush_interval_ms = 10;
    if (with_key) o.content_key = key_;
    auto log = AuditLog::open(db_.get(), o);
    EXPECT_TRUE(log.ok()) << log.status().to_string();
    return log.ok() ? std::move(*log) : nullptr;
  }
  AuditEvent inference(const std::string& request_id, const std::string& content, int64_t time_ms = 0) {
    AuditEvent e;
    e.kind = "inference";
    e.principal = "key-a";
    e.request_id = request_id;
    e.status = 200;
    e.time_ms = time_ms;
    e.detail = {{"prompt_tokens", 3}};
    if (!content.empty()) e.content = std::make_shared<const std::string>(content);
    return e;
  }
  int64_t scalar(const std::string& sql) {
    auto r = db_->query(sql);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() && !r->empty() ? store::as_int((*r)[0][0]) : -1;
  }
  // Three records: req-a (content), req-b (no content), req-c (content).
  void write_three(AuditLog& log) {
    ASSERT_TRUE(log.append(inference("req-a", R"({"prompt":"MARKER-alpha","output":[{"index":0,"text":"one"}]})")));
    ASSERT_TRUE(log.append(inference("req-b", "")));
    ASSERT_TRUE(log.append(inference("req-c", R"({"prompt":"MARKER-gamma","output":null})")));
    ASSERT_TRUE(log.flush().ok());
  }
  std::string url_, dir_;
  std::unique_ptr<store::Database> db_;
  std::shared_ptr<const crypto::Key> key_;
};

TEST_P(AuditContentTest, StoredEncryptedReadBackAndChained) {
  auto log = open_log();
  ASSERT_TRUE(log);
  ASSERT_TRUE(log->stores_content());
  write_three(*log);
  log->close();
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM audit_content"), 2);
  // The detail names the key and the blob's digest (covered by the chain); never the text.
  auto rows = db_->query("SELECT detail FROM audit_records WHERE request_id = 'req-a'");
  ASSERT_TRUE(rows.ok() && rows->size() == 1);
  const auto detail = nlohmann::json::parse(store::as_text((*rows)[0][0]));
  EXPECT_EQ(detail["content"]["key_id"], "audit-content@1");
  EXPECT_EQ(detail["content"]["sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(detail["prompt_tokens"], 3);
  auto none = db_->query("SELECT detail FROM audit_records WHERE request_id = 'req-b'");
  ASSERT_TRUE(none.ok() && none->size() == 1);
  EXPECT_FALSE(nlohmann::json::parse(store::as_text((*none)[0][0])).contains("content"));
  auto all = db_->query("SELECT detail FROM audit_records");
  ASSERT_TRUE(all.ok());
  for (const auto& r : *all) EXPECT_EQ(store::as_text(r[0]).find("MARKER"), std::string::npos);

  auto got = read_content(*db_, "req-a", *key_);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].seq, 1);
  EXPECT_EQ((*got)[0].content["prompt"], "MARKER-alpha");
  EXPECT_EQ((*got)[0].content["output"][0]["text"], "one");
  EXPECT_EQ(read_content(*db_, "req-b", *key_).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(read_content(*db_, "req-a", key_of(1, "audit-content@1")).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(read_content(*db_, "req-a", key_of(9, "other")).status().code(), StatusCode::kInvalidArgument);

  auto check = check_content(*db_);
  ASSERT_TRUE(check.ok());
  EXPECT_TRUE(check->ok()) << check->reason;
  EXPECT_EQ(check->records, 2);
  auto v = verify_audit(*db_, dir_ + "/audit.key", dir_ + "/audit.key.head");
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->reason;
}

TEST_P(AuditContentTest, ReplacedModifiedOrDeletedBlobIsCaught) {
  auto log = open_log();
  ASSERT_TRUE(log);
  write_three(*log);
  log->close();
  // Replace req-c's blob with a valid blob sealed for the same record under the same key: decrypts, but the
  // record's SHA-256 differs.
  auto forged = seal_content(*key_, "req-c", 3, R"({"prompt":"forged","output":null})");
  ASSERT_TRUE(forged.ok());
  ASSERT_TRUE(db_->exec("UPDATE audit_content SET nonce = ?, ciphertext = ? WHERE seq = 3",
                        {Value{forged->nonce_hex}, Value{forged->ciphertext_hex}})
                  .ok());
  auto r = read_content(*db_, "req-c", *key_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("SHA-256"), std::string::npos) << r.status().message();
  auto check = check_content(*db_);
  ASSERT_TRUE(check.ok());
  EXPECT_FALSE(check->ok());
  EXPECT_EQ(check->first_bad_seq, 3);
  // Deleting req-a's blob.
  ASSERT_TRUE(db_->exec("DELETE FROM audit_content WHERE seq = 1").ok());
  EXPECT_EQ(read_content(*db_, "req-a", *key_).status().code(), StatusCode::kDataLoss);
  check = check_content(*db_);
  ASSERT_TRUE(check.ok());
  EXPECT_EQ(check->first_bad_seq, 1);
  EXPECT_NE(check->reason.find("missing"), std::string::npos);
}

TEST_P(AuditContentTest, WithoutAKeyContentIsDropped) {
  auto log = open_log(/*with_key=*/false);
  ASSERT_TRUE(log);
  EXPECT_FALSE(log->stores_content());
  write_three(*log);
  log->close();
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM audit_content"), 0);
  auto all = db_->query("SELECT detail FROM audit_records");
  ASSERT_TRUE(all.ok());
  for (const auto& r : *all) EXPECT_EQ(store::as_text(r[0]).find("MARKER"), std::string::npos);
}

TEST_P(AuditContentTest, PurgeDeletesContentWithItsRecords) {
  const int64_t now = internal::now_ms();
  auto log = open_log();
  ASSERT_TRUE(log);
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(log->append(inference("old-" + std::to_string(i), R"({"prompt":"x","output":null})",
                                      now - 200LL * 86400000 + i)));
  ASSERT_TRUE(log->append(inference("new", R"({"prompt":"y","output":null})", now - 1000)));
  ASSERT_TRUE(log->flush().ok());
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM audit_content"), 4);
  ASSERT_TRUE(log->purge(now).ok());
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM audit_content"), 1);
  EXPECT_EQ(scalar("SELECT seq FROM audit_content"), 4);
  log->close();
  auto check = check_content(*db_);
  ASSERT_TRUE(check.ok());
  EXPECT_TRUE(check->ok()) << check->reason;
  auto got = read_content(*db_, "new", *key_);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ((*got)[0].content["prompt"], "y");
}

TEST(AuditContentFile, NoPlaintextInTheSqliteFiles) {
  char tmpl[] = "/tmp/citadel-content-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  {
    auto db = store::open_database(dir + "/state.db");
    ASSERT_TRUE(db.ok());
    auto steps = audit_migrations();
    for (auto& m : audit_content_migrations()) steps.push_back(m);
    ASSERT_TRUE(store::migrate(**db, steps).ok());
    AuditOptions o;
    o.signing_key_file = dir + "/audit.key";
    o.content_key = std::make_shared<const crypto::Key>(key_of(3, "k"));
    auto log = AuditLog::open(db->get(), o);
    ASSERT_TRUE(log.ok());
    AuditEvent e;
    e.kind = "inference";
    e.request_id = "r1";
    e.content = std::make_shared<const std::string>(R"({"prompt":"UNIQUE-MARKER-7f3a9","output":null})");
    ASSERT_TRUE((*log)->append(e));
    ASSERT_TRUE((*log)->flush().ok());
    (*log)->close();
  }
  int files = 0;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(f.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(bytes.find("UNIQUE-MARKER"), std::string::npos) << f.path();
    ++files;
  }
  EXPECT_GE(files, 2);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Backends, AuditContentTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace citadel::audit
