// server.start's configuration digest and the config.change detail (api/config_audit.h), and the fingerprint's
// treatment of key specs (server/config.h).
#include "api/config_audit.h"

#include <gtest/gtest.h>

#include "server/config.h"

namespace citadel::api {
namespace {

TEST(ConfigAudit, SameConfigNoChangeOtherConfigNamesKeys) {
  std::map<std::string, std::string> a = {{"max_queue", "256"}, {"model", "m.gguf"}, {"audit", "on"}};
  const nlohmann::json start = config_start_detail(a);
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
