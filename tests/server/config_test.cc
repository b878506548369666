// ServeConfig: YAML (libyaml) with a models: list, environment, flags and their precedence (flag > env > file > default).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "server/config.h"

namespace citadel::server {
namespace {

TEST(Config, YamlScalars) {
  auto kv = parse_config_yaml("# comment\n---\nmodel: \"/m/a b.gguf\"  # quoted\nport: 9000 # trailing\n"
                              "max-queue: 3\nchat_template: 'chatml'\nserved_model_name: ~\n",
                              "f.yaml");
  ASSERT_TRUE(kv.ok()) << kv.status().message();
  EXPECT_EQ(kv->values.at("model"), "/m/a b.gguf");
  EXPECT_EQ(kv->values.at("port"), "9000");
  EXPECT_EQ(kv->values.at("max_queue"), "3");
  EXPECT_EQ(kv->values.at("chat_template"), "chatml");
  EXPECT_EQ(kv->values.at("served_model_name"), "");
  EXPECT_FALSE(parse_config_yaml("a:\n  nested: 1\n", "f").ok());
  EXPECT_FALSE(parse_config_yaml("just text\n", "f").ok());
  auto bad = parse_config_yaml("x: \"open\n", "f.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("f.yaml:"), std::string::npos) << bad.status().message();
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

namespace citadel::server {
namespace {

// The per-model placement and embedding limits of a models: entry, their ranges, and the server-wide defaults.
TEST(Config, YamlModelsPlacementAndEmbeddingLimits) {
  auto cf = parse_config_yaml("models:\n  - model: a.gguf\n    cuda_device: 1\n  - model: minilm-l6\n"
                              "    embedding_max_request_tokens: 5000\n    embedding_truncate: \"off\"\n",
                              "c.yaml");
  ASSERT_TRUE(cf.ok()) << cf.status().message();
  ASSERT_EQ(cf->models.size(), 2u);
  EXPECT_EQ(cf->models[0].cuda_device, 1);
  EXPECT_EQ(cf->models[1].cuda_device, -1);  // the server's
  EXPECT_EQ(cf->models[0].embedding_max_request_tokens, 0);
  EXPECT_EQ(cf->models[1].embedding_max_request_tokens, 5000);
  EXPECT_EQ(cf->models[0].embedding_truncate, "");
  EXPECT_EQ(cf->models[1].embedding_truncate, "off");
  const std::pair<const char*, const char*> bad[] = {
      {"cuda_device: -1", "cuda_device must be an integer in [0, 1023], got '-1'"},
      {"cuda_device: 1024", "cuda_device must be an integer in [0, 1023]"},
      {"cuda_device: one", "cuda_device must be an integer"},
      {"embedding_truncate: maybe", "embedding_truncate must be on or off, got 'maybe'"},
      {"embedding_max_request_tokens: -5", "embedding_max_request_tokens must be an integer in [0, 1073741824]"},
  };
  for (const auto& [line, want] : bad) {
    auto e = parse_config_yaml(std::string("models:\n  - model: a\n    ") + line + "\n", "c.yaml");
    ASSERT_FALSE(e.ok()) << line;
    EXPECT_NE(e.status().message().find(want), std::string::npos) << e.status().message();
    EXPECT_NE(e.status().message().find("c.yaml:"), std::string::npos) << e.status().message();
  }
  ServeConfig c;
  EXPECT_EQ(c.cuda_device, 0);
  EXPECT_EQ(c.embedding_max_request_tokens, 300000);
  EXPECT_EQ(c.embedding_truncate, "on");
  ASSERT_TRUE(set_config_value(&c, "cuda_device", "3", "flag --cuda-device").ok());
  EXPECT_EQ(c.cuda_device, 3);
  EXPECT_FALSE(set_config_value(&c, "cuda_device", "-2", "flag --cuda-device").ok());
  EXPECT_FALSE(set_config_value(&c, "embedding_max_request_tokens", "0", "flag").ok());
  // The effective configuration prints them back.
  c.models = cf->models;
  const std::string yaml = config_to_yaml(c);
  EXPECT_NE(yaml.find("cuda_device: 3\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("    cuda_device: 1\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("    embedding_truncate: \"off\"\n"), std::string::npos) << yaml;
}

TEST(Config, YamlModelsList) {
  auto cf = parse_config_yaml("port: 9000\nmodels:\n  - model: /m/chat-v1.gguf\n    served_model_name: chat@v1\n"
                              "    max_context: 4096\n  - {model: minilm-l6, sha256: \"ab12\"}\n"
                              "kv-memory-mb: 512  # a comment\n",
                              "c.yaml");
  ASSERT_TRUE(cf.ok()) << cf.status().message();
  EXPECT_EQ(cf->values.at("port"), "9000");
  EXPECT_EQ(cf->values.at("kv_memory_mb"), "512");
  ASSERT_EQ(cf->models.size(), 2u);
  EXPECT_EQ(cf->models[0].model, "/m/chat-v1.gguf");
  EXPECT_EQ(cf->models[0].served_model_name, "chat@v1");
  EXPECT_EQ(cf->models[0].max_context, 4096);
  EXPECT_EQ(cf->models[1].sha256, "ab12");
  // Errors name the file and line.
  auto e = parse_config_yaml("port: 1\nmodels:\n  - served_model_name: x\n", "c.yaml");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("c.yaml:3: a models: entry needs model"), std::string::npos) << e.status().message();
  e = parse_config_yaml("models:\n  - model: a\n    colour: red\n", "c.yaml");
  EXPECT_NE(e.status().message().find("unknown key 'colour'"), std::string::npos) << e.status().message();
  e = parse_config_yaml("model: a\nmodels:\n  - model: b\n", "c.yaml");
  EXPECT_NE(e.status().message().find("not both"), std::string::npos);
  e = parse_config_yaml("models: one\n", "c.yaml");
  EXPECT_FALSE(e.ok());
  e = parse_config_yaml("port: [1, 2]\n", "c.yaml");
  EXPECT_NE(e.status().message().find("c.yaml:1: 'port' must be a single value"), std::string::npos)
      << e.status().message();
  // Anchors are YAML: a shared value.
  cf = parse_config_yaml("host: &h 0.0.0.0\ntls_cert: *h\n", "c.yaml");
  ASSERT_TRUE(cf.ok());
  EXPECT_EQ(cf->values.at("tls_cert"), "0.0.0.0");
  // build_config: the first entry is the model.
  const std::string path = ::testing::TempDir() + "/citadel_models.yaml";
  std::ofstream(path) << "models:\n  - model: /m/a.gguf\n    served_model_name: a\n  - model: /m/b.gguf\n";
  ServeConfig c;
  char* env[] = {nullptr};
  ASSERT_TRUE(build_config(path, env, {}, &c).ok());
  EXPECT_EQ(c.model, "/m/a.gguf");
  EXPECT_EQ(c.served_model_name, "a");
  ASSERT_EQ(c.models.size(), 2u);
  EXPECT_NE(config_to_yaml(c).find("  - model: \"/m/b.gguf\""), std::string::npos);
}

}  // namespace
}  // namespace citadel::server
