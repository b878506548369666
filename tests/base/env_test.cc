// base/env.h: env_is matches exactly; env_int reads whole numbers and falls back on anything else.
#include "base/env.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace citadel {
namespace {

TEST(Env, IsAndIntReadTheVariable) {
  const char* name = "CITADEL_ENV_TEST_VALUE";
  unsetenv(name);
  EXPECT_FALSE(env_is(name, "on"));
  EXPECT_EQ(env_int(name, 7), 7);
  setenv(name, "on", 1);
  EXPECT_TRUE(env_is(name, "on"));
  EXPECT_FALSE(env_is(name, "o"));
  EXPECT_EQ(env_int(name, 7), 7);  // not a number
  for (const auto& [text, want] : {std::pair{"32", 32}, {"-4", -4}, {"0", 0}, {"12x", 7}, {"", 7}, {" 3", 3},
                                   {"99999999999", 7}}) {
    setenv(name, text, 1);
    EXPECT_EQ(env_int(name, 7), want) << "'" << text << "'";
  }
  unsetenv(name);
}

}  // namespace
}  // namespace citadel
