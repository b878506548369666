// ModelRegistry (api/model_registry.h): names, aliases with weights (the split over many draws, sticky keys),
// rollback, and what cannot be removed or shadowed. Hosts are bare ModelHosts (no engine): only names matter here.
#include <gtest/gtest.h>

#include <map>

#include "api/model_registry.h"

namespace citadel::api {
namespace {

std::shared_ptr<const ModelHost> host(const std::string& name, std::vector<std::string> aliases = {}) {
  auto h = std::make_shared<ModelHost>();
  h->served_name = name;
  h->aliases = std::move(aliases);
  return h;
}

TEST(ModelRegistry, NamesResolveAndCollide) {
  ModelRegistry r;
  EXPECT_TRUE(r.empty());
  ASSERT_TRUE(r.add(host("chat@1", {"smollm2-135m"})).ok());
  ASSERT_TRUE(r.add(host("ds3", {"smollm2-135m"})).ok());  // a shared file name: the first loaded keeps it
  EXPECT_EQ(r.resolve("smollm2-135m", "")->served_name, "chat@1");
  EXPECT_EQ(r.resolve("ds3", "")->served_name, "ds3");
  EXPECT_EQ(r.resolve("nope", ""), nullptr);
  EXPECT_EQ(r.default_host()->served_name, "chat@1");
  EXPECT_FALSE(r.add(host("ds3")).ok());
  EXPECT_FALSE(r.set_alias("ds3", {{"chat@1", 1}}, false).ok());  // an alias never shadows a model
  ASSERT_TRUE(r.set_alias("chat", {{"chat@1", 1}}, false).ok());
  EXPECT_FALSE(r.add(host("chat")).ok());                          // nor a model an alias
  EXPECT_EQ(r.remove("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.remove("chat@1").status().code(), StatusCode::kInvalidArgument);  // the alias routes to it
  ASSERT_TRUE(r.delete_alias("chat").ok());
  auto removed = r.remove("chat@1");
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ((*removed)->served_name, "chat@1");
  EXPECT_EQ(r.default_host()->served_name, "ds3");
}

TEST(ModelRegistry, WeightsSplitStickyAndRollback) {
  ModelRegistry r;
  ASSERT_TRUE(r.add(host("a")).ok());
  ASSERT_TRUE(r.add(host("b")).ok());
  EXPECT_EQ(r.set_alias("x", {}, false).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.set_alias("x", {{"a", 0}}, false).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.set_alias("x", {{"a", 1}, {"a", 2}}, false).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.set_alias("x", {{"c", 1}}, false).code(), StatusCode::kNotFound);
  EXPECT_EQ(r.rollback("x").code(), StatusCode::kNotFound);
  ASSERT_TRUE(r.set_alias("x", {{"a", 90}, {"b", 10}}, false).ok());
  EXPECT_EQ(r.rollback("x").code(), StatusCode::kInvalidArgument);  // nothing earlier
  std::map<std::string, int> n;
  for (int i = 0; i < 1000; ++i) ++n[r.resolve("x", "")->served_name];
  EXPECT_EQ(n["a"], 900);  // round robin, not chance: exactly the weights over whole rounds
  EXPECT_EQ(n["b"], 100);
  ASSERT_TRUE(r.set_alias("x", {{"a", 50}, {"b", 50}}, false).ok());  // interleaved, not 50 then 50
  EXPECT_NE(r.resolve("x", "")->served_name, r.resolve("x", "")->served_name);
  ASSERT_TRUE(r.rollback("x").ok());
  ASSERT_TRUE(r.set_alias("x", {{"a", 1}, {"b", 1}}, true).ok());
  std::map<std::string, int> per_key;
  for (int k = 0; k < 200; ++k) {
    const std::string key = "key:" + std::to_string(k);
    const std::string first = r.resolve("x", key)->served_name;
    for (int i = 0; i < 5; ++i) EXPECT_EQ(r.resolve("x", key)->served_name, first);
    ++per_key[first];
  }
  EXPECT_GT(per_key["a"], 50);  // keys spread over both
  EXPECT_GT(per_key["b"], 50);
  ASSERT_TRUE(r.rollback("x").ok());  // back to 90/10, not sticky
  EXPECT_FALSE(r.aliases()[0].sticky);
  EXPECT_EQ(r.aliases()[0].targets[0].weight, 90);
  ASSERT_TRUE(r.rollback("x").ok());  // and forth
  EXPECT_TRUE(r.aliases()[0].sticky);
  ASSERT_TRUE(r.set_alias("x", {{"b", 1}}, false).ok());
  ASSERT_TRUE(r.remove("a").ok());
  EXPECT_EQ(r.rollback("x").code(), StatusCode::kInvalidArgument);  // the earlier target is gone
  EXPECT_EQ(r.resolve("x", "")->served_name, "b");
}

}  // namespace
}  // namespace citadel::api
