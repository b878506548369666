#include "engine/kv_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

namespace citadel::engine {
namespace {

std::vector<int32_t> iota_tokens(int n, int start = 0) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

TEST(KvCache, AllocateAndReleaseAllOrNothing) {
  KvCache kv(4, 4, true);
  BlockTable a, b;
  std::vector<std::pair<int, int>> copies;
  ASSERT_TRUE(kv.allocate(&a, 0, 10, &copies));  // 3 blocks
  EXPECT_EQ(a.blocks.size(), 3u);
  EXPECT_EQ(kv.num_free(), 1);
  EXPECT_FALSE(kv.allocate(&b, 0, 8, &copies));  // needs 2
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_EQ(kv.num_free(), 1);
  ASSERT_TRUE(kv.allocate(&a, 10, 13, &copies));  // grows into the 4th
  EXPECT_EQ(kv.num_free(), 0);
  kv.release(&a);
  EXPECT_EQ(kv.num_free(), 4);
  EXPECT_TRUE(copies.empty());
  EXPECT_TRUE(kv.check_invariants().ok());
}

TEST(KvCache, PrefixHitSharesBlocksAndStopsAtFirstMiss) {
  KvCache kv(8, 4, true);
  auto toks = iota_tokens(10);
  BlockTable a;
  std::vector<std::pair<int, int>> copies;
  ASSERT_TRUE(kv.allocate(&a, 0, 10, &copies));
  kv.commit(&a, toks, 10);  // blocks 0, 1 full -> indexed; block 2 partial
  EXPECT_EQ(kv.num_indexed(), 2);
  BlockTable b;
  auto other = toks;
  other[5] = 99;  // second block differs
  EXPECT_EQ(kv.acquire_prefix(other, &b), 4);
  EXPECT_EQ(b.blocks[0], a.blocks[0]);
  EXPECT_EQ(kv.ref_count(a.blocks[0]), 2);
  kv.release(&b);
  BlockTable c;
  EXPECT_EQ(kv.acquire_prefix(toks, &c), 8);
  kv.release(&c);
  kv.release(&a);
  EXPECT_EQ(kv.num_cached_free(), 2);  // unreferenced but still indexed
  BlockTable d;
  EXPECT_EQ(kv.acquire_prefix(toks, &d), 8);  // revived from the LRU
  EXPECT_EQ(kv.num_cached_free(), 0);
  kv.release(&d);
  EXPECT_TRUE(kv.check_invariants().ok());
}

TEST(KvCache, DifferentParentMeansDifferentBlock) {
  // Equal token blocks at different positions must not be shared: their KV differs (RoPE, attention context).
  KvCache kv(8, 2, true);
  BlockTable a;
  std::vector<std::pair<int, int>> copies;
  std::vector<int32_t> t1 = {1, 2, 1, 2, 1, 2};
  ASSERT_TRUE(kv.allocate(&a, 0, 6, &copies));
  kv.commit(&a, t1, 6);
  EXPECT_EQ(kv.num_indexed(), 3);
  BlockTable b;
  EXPECT_EQ(kv.acquire_prefix(t1, &b), 6);
  EXPECT_EQ(b.blocks, a.blocks);
  BlockTable c;
  std::vector<int32_t> t2 = {9, 9, 1, 2};  // same second block, different parent
  EXPECT_EQ(kv.acquire_prefix(t2, &c), 0);
  kv.release(&a);
  kv.release(&b);
  EXPECT_TRUE(kv.check_invariants().ok());
}

TEST(KvCache, NamespacesNeverShareBlocks) {
  KvCache kv(16, 2, true);
  const uint64_t ns_a = prefix_namespace({"model", "", "tenant-a"});
  const uint64_t ns_b = prefix_namespace({"model", "", "tenant-b"});
  ASSERT_NE(ns_a, ns_b);
  EXPECT_EQ(ns_a, prefix_namespace({"model", "", "tenant-a"}));
  EXPECT_NE(prefix_namespace({"ab", "c"}), prefix_namespace({"a", "bc"}));  // parts are length-prefixed
  const std::vector<int32_t> t = {5, 6, 7, 8, 9, 10};
  std::vector<std::pair<int, int>> copies;
  BlockTable a;
  a.cache_namespace = ns_a;
  ASSERT_TRUE(kv.allocate(&a, 0, 6, &copies));
  kv.commit(&a, t, 6);
  BlockTable b;  // same tokens, other namespace: nothing shared
  b.cache_namespace = ns_b;
  EXPECT_EQ(kv.acquire_prefix(t, &b), 0);
  BlockTable d;  // the default namespace is a namespace too
  EXPECT_EQ(kv.acquire_prefix(t, &d), 0);
  BlockTable c;  // same namespace: all three blocks
  c.cache_namespace = ns_a;
  EXPECT_EQ(kv.acquire_prefix(t, &c), 6);
  EXPECT_EQ(c.blocks, a.blocks);
  // b computes its own copy; both namespaces then hold the prefix side by side.
  ASSERT_TRUE(kv.allocate(&b, 0, 6, &copies));
  kv.commit(&b, t, 6);
  EXPECT_EQ(kv.num_indexed(), 6);
  const std::vector<int32_t> b_blocks = b.blocks;
  for (int blk : b_blocks) EXPECT_EQ(std::count(a.blocks.begin(), a.blocks.end(), blk), 0);
  kv.release(&a);
  kv.release(&b);
  kv.release(&c);
  EXPECT_EQ(b.cache_namespace, ns_b);  // kept for a recompute after preemption
  BlockTable e;
  e.cache_namespace = ns_b;
  EXPECT_EQ(kv.acquire_prefix(t, &e), 6);
  EXPECT_EQ(e.blocks, b_blocks);
  kv.release(&e);
  EXPECT_TRUE(kv.check_invariants().ok());
}

TEST(KvCache, LruEvictsOldestCachedOnlyWhenNeeded) {
  KvCache kv(4, 2, true);
  std::vector<std::pair<int, int>> copies;
  BlockTable a, b;
  std::vector<int32_t> ta = {1, 2}, tb = {3, 4};
  ASSERT_TRUE(kv.allocate(&a, 0, 2, &copies));
  kv.commit(&a, ta, 2);
  ASSERT_TRUE(kv.allocate(&b, 0, 2, &copies));
  kv.commit(&b, tb, 2);
  kv.release(&a);  // a's block freed first = least recent
  kv.release(&b);
  EXPECT_EQ(kv.num_free(), 4);
  BlockTable c;
  ASSERT_TRUE(kv.allocate(&c, 0, 6, &copies));  // 2 fresh + evicts a's block
  EXPECT_EQ(kv.num_indexed(), 1);
  BlockTable d;
  EXPECT_EQ(kv.acquire_prefix(tb, &d), 2);
  BlockTable e;
  EXPECT_EQ(kv.acquire_prefix(ta, &e), 0);
  kv.release(&c);
  kv.release(&d);
  EXPECT_TRUE(kv.check_invariants().ok());
}

TEST(KvCache, CopyOnWriteWhenSharedLastBlockIsAppended) {
  KvCache kv(8, 4, true);
  std::vector<std::pair<int, int>> copies;
  BlockTable a;
  ASSERT_TRUE(kv.allocate(&a, 0, 6, &copies));  // blocks: full + partial(2 of 4)
  BlockTable b;
  kv.fork(a, &b);
  EXPECT_EQ(kv.ref_count(a.blocks[1]), 2);
  ASSERT_TRUE(kv.allocate(&b, 6, 7, &copies));  // b writes position 6 in the shared partial block
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].first, a.blocks[1]);
  EXPECT_EQ(copies[0].second, b.blocks[1]);
  EXPECT_NE(a.blocks[1], b.blocks[1]);
  EXPECT_EQ(a.blocks[0], b.blocks[0]);  // the full block stays shared
  EXPECT_EQ(kv.ref_count(a.blocks[1]), 1);
  copies.clear();
  ASSERT_TRUE(kv.allocate(&a, 6, 7, &copies));  // a now owns its block alone: no copy
  EXPECT_TRUE(copies.empty());
  kv.release(&a);
  kv.release(&b);
  EXPECT_EQ(kv.num_free(), 8);
  EXPECT_TRUE(kv.check_invariants().ok());
}

TEST(KvCache, CopyOnWriteCountsTowardsAvailability) {
  KvCache kv(2, 4, true);
  std::vector<std::pair<int, int>> copies;
  BlockTable a, b;
  ASSERT_TRUE(kv.allocate(&a, 0, 6, &copies));
  kv.fork(a, &b);
  EXPECT_EQ(kv.blocks_needed(b, 6, 7), 1);
  EXPECT_FALSE(kv.allocate(&b, 6, 7, &copies));  // no block for the copy
  EXPECT_EQ(kv.ref_count(a.blocks[1]), 2);
  kv.release(&a);
  kv.release(&b);
  EXPECT_TRUE(kv.check_invariants().ok());
}

TEST(KvCache, PrefixCachingOffNeverShares) {
  KvCache kv(8, 2, false);
  std::vector<std::pair<int, int>> copies;
  BlockTable a, b;
  std::vector<int32_t> t = {1, 2, 3, 4};
  ASSERT_TRUE(kv.allocate(&a, 0, 4, &copies));
  kv.commit(&a, t, 4);
  EXPECT_EQ(kv.acquire_prefix(t, &b), 0);
  EXPECT_EQ(a.hashes.size(), 2u);
  kv.release(&a);
  EXPECT_EQ(kv.num_cached_free(), 0);
}

}  // namespace
}  // namespace citadel::engine
