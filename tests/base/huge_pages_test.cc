// HugePageBuffer: size, alignment, zero fill, writes, moves and the empty buffer.
#include "base/huge_pages.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <utility>

namespace citadel {
namespace {

TEST(HugePageBuffer, AlignedZeroedWritableMovable) {
  for (size_t n : {size_t{2}, size_t{4097}, (size_t{2} << 20) + 3, size_t{5} << 20}) {
    HugePageBuffer b(n);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(b.size(), n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
    if (b.huge_pages_advised()) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % (size_t{2} << 20), 0u);
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < n; ++i) sum += b.data()[i];
    EXPECT_EQ(sum, 0u) << n;
    b.data()[0] = 7;
    b.data()[n - 1] = 9;
    HugePageBuffer c(std::move(b));
    EXPECT_EQ(b.data(), nullptr);
    EXPECT_EQ(b.size(), 0u);
    EXPECT_EQ(c.data()[0], 7);
    EXPECT_EQ(c.data()[n - 1], 9);
    HugePageBuffer d(16);
    d = std::move(c);
    EXPECT_EQ(d.size(), n);
    EXPECT_EQ(d.data()[n - 1], 9);
  }
  HugePageBuffer empty(0);
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size(), 0u);
}

}  // namespace
}  // namespace citadel
