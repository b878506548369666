// ServeConfig: YAML subset, environment, flags and their precedence (flag > env > file > default).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "server/config.h"

namespace citadel::server {
namespace {

TEST(Config, YamlSubset) {
  auto kv = parse_yaml_subset("# comment\n---\nmodel: \"/m/a b.gguf\"  # quoted\nport: 9000 # trailing\n"
                              "max-queue: 3\nchat_template: 'chatml'\nserved_model_name: ~\n",
                              "f.yaml");
  ASSERT_TRUE(kv.ok()) << kv.status().message();
  EXPECT_EQ(kv->at("model"), "/m/a b.gguf");
  EXPECT_EQ(kv->at("port"), "9000");
  EXPECT_EQ(kv->at("max_queue"), "3");
  EXPECT_EQ(kv->at("chat_template"), "chatml");
  EXPECT_EQ(kv->at("served_model_name"), "");
  EXPECT_FALSE(parse_yaml_subset("a:\n  nested: 1\n", "f").ok());
  EXPECT_FALSE(parse_yaml_subset("just text\n", "f").ok());
  auto bad = parse_yaml_subset("x: \"open\n", "f.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("f.yaml:1"), std::string::npos);
}

TEST(Config, PrecedenceFlagEnvFileDefault) {
  const std::string path = ::testing::TempDir() + "/citadel_serve_test.yaml";
  {
    std::ofstream f(path);
    f << "model: file-model\nport: 1111\nmax_queue: 5\nthreads: 3\n";
  }
  std::string e1 = "CITADEL_PORT=2222", e2 = "CITADEL_MAX_QUEUE=6", e3 = "OTHER=1";
  char* env[] = {e1.data(), e2.data(), e3.data(), nullptr};
  ServeConfig c;
  Status st = build_config(path, env, {{"port", "3333"}}, &c);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(c.model, "file-model");  // file
  EXPECT_EQ(c.port, 3333);           // flag beats env and file
  EXPECT_EQ(c.max_queue, 6);         // env beats file
  EXPECT_EQ(c.threads, 3);           // file beats default
  EXPECT_EQ(c.host, "127.0.0.1");    // default
  const std::string yaml = config_to_yaml(c);
  EXPECT_NE(yaml.find("port: 3333"), std::string::npos);
  std::remove(path.c_str());
}

TEST(Config, ErrorsNameTheSourceAndKey) {
  ServeConfig c;
  Status st = build_config("", nullptr, {{"model", "m"}, {"port", "99999"}}, &c);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("--port"), std::string::npos) << st.message();
  std::string e = "CITADEL_MAX_QUEUE=lots";
  char* env[] = {e.data(), nullptr};
  st = build_config("", env, {{"model", "m"}}, &c);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("CITADEL_max_queue"), std::string::npos) << st.message();
  EXPECT_FALSE(build_config("", nullptr, {}, &c).ok());  // no model
  EXPECT_FALSE(build_config("/nonexistent/x.yaml", nullptr, {{"model", "m"}}, &c).ok());
  EXPECT_FALSE(set_config_value(&c, "colour", "red", "f").ok());
}

}  // namespace
}  // namespace citadel::server
