#include "model/sources.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace citadel {
namespace {

using Kind = ModelSource::Kind;

TEST(ModelSources, ParsesEveryKindInOrder) {
  auto r = parse_model_sources(" local:/srv/models , mirror:https://pypi.bank.internal/simple,pypi, hf");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0].kind, Kind::kLocal);
  EXPECT_EQ((*r)[0].location, "/srv/models");
  EXPECT_FALSE((*r)[0].network());
  EXPECT_EQ((*r)[1].kind, Kind::kMirror);
  EXPECT_EQ((*r)[1].location, "https://pypi.bank.internal/simple");
  EXPECT_TRUE((*r)[1].network());
  EXPECT_EQ((*r)[2].kind, Kind::kPypi);
  EXPECT_EQ((*r)[3].kind, Kind::kHf);
  EXPECT_TRUE((*r)[3].network());
  EXPECT_EQ(describe_sources(*r, true), "mirror:https://pypi.bank.internal/simple, pypi, hf");
  EXPECT_EQ(describe_sources(*r, false), "local:/srv/models");
  // A directory path may hold ':' after the first one.
  auto c = parse_model_sources("local:/mnt/a:b");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)[0].to_string(), "local:/mnt/a:b");
  EXPECT_EQ(parse_model_sources(kDefaultModelSources)->size(), 2u);
  EXPECT_EQ(parse_model_sources("pypi,,hf")->size(), 2u);  // empty entries are skipped
}

TEST(ModelSources, ErrorsNameTheEntry) {
  const struct {
    const char* list;
    const char* want;
  } cases[] = {
      {"", "no source"},
      {" , ", "no source"},
      {"local:", "'local:' needs a directory"},
      {"mirror:pypi.internal/simple", "'mirror:pypi.internal/simple' needs an http(s) URL"},
      {"mirror:", "needs an http(s) URL"},
      {"pypi,s3://bucket", "unknown source 's3://bucket'"},
      {"hf:org/repo", "unknown source 'hf:org/repo'"},
      {"none", "unknown source 'none'"},
  };
  for (const auto& c : cases) {
    auto r = parse_model_sources(c.list);
    ASSERT_FALSE(r.ok()) << c.list;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.list;
    EXPECT_NE(r.status().message().find(c.want), std::string::npos) << c.list << ": " << r.status().message();
  }
}

TEST(ModelSources, SettingPrecedenceAndOffline) {
  unsetenv("CITADEL_MODEL_SOURCES");
  unsetenv("CITADEL_PULL_SOURCES");
  EXPECT_EQ(model_source_setting("").list, "pypi,hf");
  EXPECT_EQ(model_source_setting("").origin, "the default");
  setenv("CITADEL_PULL_SOURCES", "hf", 1);
  EXPECT_EQ(model_source_setting("").list, "hf");
  EXPECT_EQ(model_source_setting("").origin, "$CITADEL_PULL_SOURCES");
  setenv("CITADEL_MODEL_SOURCES", "local:/m", 1);
  EXPECT_EQ(model_source_setting("").list, "local:/m");
  EXPECT_EQ(model_source_setting("").origin, "$CITADEL_MODEL_SOURCES");
  EXPECT_EQ(model_source_setting("pypi").list, "pypi");
  EXPECT_EQ(model_source_setting("pypi").origin, "--sources");
  unsetenv("CITADEL_MODEL_SOURCES");
  unsetenv("CITADEL_PULL_SOURCES");

  unsetenv("CITADEL_OFFLINE");
  EXPECT_FALSE(offline_requested(false));
  EXPECT_TRUE(offline_requested(true));
  setenv("CITADEL_OFFLINE", "0", 1);
  EXPECT_FALSE(offline_requested(false));
  setenv("CITADEL_OFFLINE", "1", 1);
  EXPECT_TRUE(offline_requested(false));
  unsetenv("CITADEL_OFFLINE");
}

}  // namespace
}  // namespace citadel
