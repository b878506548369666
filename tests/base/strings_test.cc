#include "base/strings.h"

#include <gtest/gtest.h>

namespace citadel {
namespace {

using V = std::vector<std::string>;

TEST(SplitList, DropsEmptyItemsAndTrimsOnRequest) {
  EXPECT_EQ(split_list(""), V{});
  EXPECT_EQ(split_list(",,"), V{});
  EXPECT_EQ(split_list("a,b,,c,"), (V{"a", "b", "c"}));
  EXPECT_EQ(split_list(" a , b"), (V{" a ", " b"}));
  EXPECT_EQ(split_list(" a , b,  ", ',', true), (V{"a", "b"}));
  EXPECT_EQ(split_list("x;y", ';'), (V{"x", "y"}));
}

TEST(Join, PutsTheSeparatorBetweenItemsOnly) {
  EXPECT_EQ(join({}, ", "), "");
  EXPECT_EQ(join({"a"}, ", "), "a");
  EXPECT_EQ(join({"a", "", "c"}, ","), "a,,c");
  EXPECT_EQ(join(split_list("x,y,z"), "+"), "x+y+z");
}

}  // namespace
}  // namespace citadel
