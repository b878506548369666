// server.start's configuration digest and the config.change detail (api/config_audit.h), and the fingerprint's
// treatment of key specs (server/config.h).
#include "api/config_audit.h"

#include <gtest/gtest.h>

#include "server/config.h"
#include "store/database.h"

namespace citadel::api {
namespace {

TEST(ConfigAudit, SameConfigNoChangeOtherConfigNamesKeys) {
  std::map<std::string, std::string> a = {{"max_queue", "256"}, {"model", "m.gguf"}, {"audit", "on"}};
  const nlohmann::json start = config_start_detail("h:/d", a);
  EXPECT_EQ(start["instance"], "h:/d");
  EXPECT_EQ(start["config_sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(start["config"]["max_queue"], "256");
  EXPECT_FALSE(config_change_detail(start, a).has_value());
  EXPECT_FALSE(config_change_detail(std::nullopt, a).has_value());  // first start

  auto b = a;
  b["max_queue"] = "77";
  b.erase("audit");
  b["audit_store_content"] = "on";
  auto d = config_change_detail(start, b);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ((*d)["previous_sha256"], start["config_sha256"]);
  EXPECT_EQ((*d)["config_sha256"], config_digest(b));
  EXPECT_NE(config_digest(a), config_digest(b));
  const auto& ch = (*d)["changed"];
  ASSERT_EQ(ch.size(), 3u) << ch.dump();
  EXPECT_EQ(ch[0], nlohmann::json({{"key", "audit"}, {"old", "on"}, {"new", nullptr}}));
  EXPECT_EQ(ch[1], nlohmann::json({{"key", "audit_store_content"}, {"old", nullptr}, {"new", "on"}}));
  EXPECT_EQ(ch[2], nlohmann::json({{"key", "max_queue"}, {"old", "256"}, {"new", "77"}}));
}

TEST(ConfigAudit, PreviousStartWithoutConfigIsAChangeOfUnknown) {
  auto d = config_change_detail(nlohmann::json{{"device", "cpu"}}, {{"model", "m"}});
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE((*d)["previous_sha256"].is_null());
  EXPECT_TRUE((*d)["changed"].empty());
}

// Replicas sharing one database: each start compares with its own instance's previous start, not with whichever
// replica started last; a record from an older binary (no "instance") counts for any instance.
TEST(ConfigAudit, PreviousStartIsThisInstancesOwn) {
  auto db = store::open_sqlite(":memory:");
  ASSERT_TRUE(db.ok()) << db.status().message();
  ASSERT_TRUE((*db)->exec("CREATE TABLE audit_records (seq INTEGER PRIMARY KEY, kind TEXT, detail TEXT)").ok());
  auto add = [&](int64_t seq, const std::string& kind, const nlohmann::json& d) {
    ASSERT_TRUE((*db)->exec("INSERT INTO audit_records (seq, kind, detail) VALUES (?, ?, ?)",
                            {seq, kind, d.dump()}).ok());
  };
  auto prev = [&](const std::string& who) { return previous_server_start(**db, who).value(); };
  EXPECT_FALSE(prev("a").has_value());  // empty log: first start
  add(1, "server.start", config_start_detail("a", {{"device", "cpu"}}));
  add(2, "server.start", config_start_detail("b", {{"device", "cuda"}}));
  add(3, "model.load", {{"instance", "a"}});
  ASSERT_TRUE(prev("a").has_value());
  EXPECT_EQ((*prev("a"))["config"]["device"], "cpu");
  EXPECT_EQ((*prev("b"))["config"]["device"], "cuda");
  EXPECT_FALSE(prev("c").has_value());
  // a's restart with its own configuration records no change, though b started last with another one.
  EXPECT_FALSE(config_change_detail(prev("a"), {{"device", "cpu"}}).has_value());
  add(4, "server.start", nlohmann::json{{"device", "cpu"}});  // an older binary's record
  const auto legacy = prev("c");
  ASSERT_TRUE(legacy.has_value());
  EXPECT_FALSE(legacy->contains("instance"));
  EXPECT_EQ((*prev("a"))["config_sha256"], nullptr);  // the newest record that matches a is the legacy one
}

TEST(ConfigAudit, FingerprintHoldsKeyPathsNeverArgumentsOrPasswords) {
  server::ServeConfig c;
  c.model = "m.gguf";
  c.key_file = "cmd:/usr/bin/vault-helper --token s3cr3t";
  c.audit_content_key = "/etc/citadel/content.key";
  c.audit_key = "env:AUDIT_KEY";
  c.state_db = "postgresql://u:hunter2@db/citadel";
  c.port = 1234;
  const auto fp = server::config_fingerprint(c);
  EXPECT_EQ(fp.at("key_file"), "cmd:/usr/bin/vault-helper ...");
  EXPECT_EQ(fp.at("audit_content_key"), "/etc/citadel/content.key");
  EXPECT_EQ(fp.at("audit_key"), "env:AUDIT_KEY");
  EXPECT_EQ(fp.at("state_db").find("hunter2"), std::string::npos);
  EXPECT_EQ(fp.count("port"), 0u);
  EXPECT_EQ(fp.at("audit_store_content"), "off");
  EXPECT_EQ(server::config_to_yaml(c).find("s3cr3t"), std::string::npos);
}

}  // namespace
}  // namespace citadel::api
