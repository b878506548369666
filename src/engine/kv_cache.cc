#include "engine/kv_cache.h"

#include <algorithm>

#include "base/check.h"
#include "base/sha256.h"

namespace citadel::engine {

KvCache::KvCache(int n_blocks, int block_size, bool enable_prefix_caching)
    : n_blocks_(n_blocks), block_size_(block_size), prefix_caching_(enable_prefix_caching), meta_(n_blocks) {
  CHECK(n_blocks > 0 && block_size > 0);
  free_fresh_.reserve(n_blocks);
  for (int b = n_blocks - 1; b >= 0; --b) free_fresh_.push_back(b);  // hand out low ids first
}

uint64_t KvCache::hash_block(uint64_t parent, const int32_t* tokens, int n) {
  uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < n; ++i) {
    h ^= static_cast<uint32_t>(tokens[i]);
    h *= 0x100000001b3ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
  }
  h ^= static_cast<uint64_t>(n) << 1;
  h ^= h >> 31;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 32);
}

uint64_t KvCache::root_hash(uint64_t cache_namespace) {
  if (cache_namespace == 0) return kRootHash;
  uint64_t h = kRootHash ^ cache_namespace;  // splitmix64 finaliser
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

uint64_t prefix_namespace(std::initializer_list<std::string_view> parts) {
  Sha256 sha;
  for (std::string_view p : parts) {
    const uint64_t n = p.size();
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    sha.update(len, sizeof len);  // length prefix: ("ab", "c") and ("a", "bc") differ
    sha.update(p.data(), p.size());
  }
  const Sha256::Digest d = sha.finish();
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | d[i];
  return v == 0 ? 1 : v;
}

void KvCache::lru_push_back(int b) {
  BlockMeta& m = meta_[b];
  m.lru_prev = lru_tail_;
  m.lru_next = -1;
  if (lru_tail_ >= 0) meta_[lru_tail_].lru_next = b; else lru_head_ = b;
  lru_tail_ = b;
  m.in_lru = true;
  ++lru_size_;
}

void KvCache::lru_remove(int b) {
  BlockMeta& m = meta_[b];
  if (m.lru_prev >= 0) meta_[m.lru_prev].lru_next = m.lru_next; else lru_head_ = m.lru_next;
  if (m.lru_next >= 0) meta_[m.lru_next].lru_prev = m.lru_prev; else lru_tail_ = m.lru_prev;
  m.lru_prev = m.lru_next = -1;
  m.in_lru = false;
  --lru_size_;
}

void KvCache::unindex(int b) {
  BlockMeta& m = meta_[b];
  if (!m.indexed) return;
  auto it = index_.find(m.hash);
  if (it != index_.end() && it->second == b) index_.erase(it);
  m.indexed = false;
  m.tokens.clear();
}

int KvCache::take_block() {
  int b;
  if (!free_fresh_.empty()) {
    b = free_fresh_.back();
    free_fresh_.pop_back();
  } else {
    CHECK(lru_head_ >= 0);
    b = lru_head_;  // evict the least recently freed cached block
    lru_remove(b);
    unindex(b);
  }
  CHECK(meta_[b].ref == 0);
  meta_[b].ref = 1;
  return b;
}

void KvCache::add_ref(int b) {
  BlockMeta& m = meta_[b];
  if (m.ref == 0) {
    CHECK(m.in_lru);  // only indexed blocks can be re-referenced from the free state
    lru_remove(b);
  }
  ++m.ref;
}

void KvCache::drop_ref(int b) {
  BlockMeta& m = meta_[b];
  CHECK(m.ref > 0);
  if (--m.ref > 0) return;
  if (m.indexed) lru_push_back(b); else free_fresh_.push_back(b);
}

int KvCache::acquire_prefix(const std::vector<int32_t>& tokens, BlockTable* table) {
  CHECK(table->blocks.empty());
  table->hashes.clear();
  if (!prefix_caching_) return 0;
  const int n_full = static_cast<int>(tokens.size()) / block_size_;
  uint64_t parent = root_hash(table->cache_namespace);
  for (int i = 0; i < n_full; ++i) {
    const int32_t* blk = tokens.data() + static_cast<size_t>(i) * block_size_;
    const uint64_t h = hash_block(parent, blk, block_size_);
    auto it = index_.find(h);
    if (it == index_.end()) break;
    const BlockMeta& m = meta_[it->second];
    if (m.parent != parent || !std::equal(m.tokens.begin(), m.tokens.end(), blk)) break;  // collision: a miss
    add_ref(it->second);
    table->blocks.push_back(it->second);
    table->hashes.push_back(h);
    parent = h;
  }
  return static_cast<int>(table->blocks.size()) * block_size_;
}

int KvCache::blocks_needed(const BlockTable& table, int first_write, int n_tokens) const {
  const int have = static_cast<int>(table.blocks.size());
  const int want = blocks_for(n_tokens);
  int need = std::max(0, want - have);
  for (int j = first_write / block_size_; j < std::min(have, want); ++j)
    if (meta_[table.blocks[j]].ref > 1) ++need;
  return need;
}

bool KvCache::allocate(BlockTable* table, int first_write, int n_tokens,
                       std::vector<std::pair<int, int>>* copies) {
  if (blocks_needed(*table, first_write, n_tokens) > num_free()) return false;
  const int have = static_cast<int>(table->blocks.size());
  const int want = blocks_for(n_tokens);
  for (int j = first_write / block_size_; j < std::min(have, want); ++j) {
    const int old = table->blocks[j];
    if (meta_[old].ref <= 1) continue;
    const int fresh = take_block();
    copies->emplace_back(old, fresh);
    drop_ref(old);
    table->blocks[j] = fresh;
  }
  for (int j = have; j < want; ++j) table->blocks.push_back(take_block());
  return true;
}

void KvCache::commit(BlockTable* table, const std::vector<int32_t>& tokens, int n_computed) {
  const int n_full = std::min(n_computed / block_size_, static_cast<int>(table->blocks.size()));
  const uint64_t root = root_hash(table->cache_namespace);
  for (int i = static_cast<int>(table->hashes.size()); i < n_full; ++i) {
    const uint64_t parent = i == 0 ? root : table->hashes[i - 1];
    const int32_t* blk = tokens.data() + static_cast<size_t>(i) * block_size_;
    const uint64_t h = hash_block(parent, blk, block_size_);
    table->hashes.push_back(h);
    if (!prefix_caching_) continue;
    const int b = table->blocks[i];
    BlockMeta& m = meta_[b];
    if (m.indexed || index_.count(h)) continue;  // an equal (or colliding) block is already indexed
    m.indexed = true;
    m.hash = h;
    m.parent = parent;
    m.tokens.assign(blk, blk + block_size_);
    index_.emplace(h, b);
  }
}

void KvCache::release(BlockTable* table) {
  for (auto it = table->blocks.rbegin(); it != table->blocks.rend(); ++it) drop_ref(*it);
  table->blocks.clear();
  table->hashes.clear();
}

void KvCache::fork(const BlockTable& src, BlockTable* dst) {
  CHECK(dst->blocks.empty());
  for (int b : src.blocks) add_ref(b);
  dst->blocks = src.blocks;
  dst->hashes = src.hashes;
  dst->cache_namespace = src.cache_namespace;
}

Status KvCache::check_invariants() const {
  std::vector<int> seen(n_blocks_, 0);
  for (int b : free_fresh_) {
    if (b < 0 || b >= n_blocks_) return Internal("free list holds bad block id " + std::to_string(b));
    if (meta_[b].ref != 0 || meta_[b].indexed || meta_[b].in_lru)
      return Internal("free block " + std::to_string(b) + " is referenced, indexed or in the LRU");
    ++seen[b];
  }
  int n_lru = 0;
  for (int b = lru_head_; b >= 0; b = meta_[b].lru_next) {
    if (meta_[b].ref != 0 || !meta_[b].indexed || !meta_[b].in_lru)
      return Internal("LRU block " + std::to_string(b) + " is referenced or not indexed");
    ++seen[b];
    if (++n_lru > n_blocks_) return Internal("LRU list has a cycle");
  }
  if (n_lru != lru_size_) return Internal("LRU size mismatch");
  for (int b = 0; b < n_blocks_; ++b) {
    if (meta_[b].ref < 0) return Internal("negative ref count on block " + std::to_string(b));
    if (meta_[b].ref == 0 && seen[b] != 1)
      return Internal("unreferenced block " + std::to_string(b) + " is on " + std::to_string(seen[b]) + " free lists");
    if (meta_[b].ref > 0 && seen[b] != 0) return Internal("referenced block " + std::to_string(b) + " is free");
  }
  for (const auto& [h, b] : index_)
    if (!meta_[b].indexed || meta_[b].hash != h) return Internal("index entry points at a stale block");
  return OkStatus();
}

}  // namespace citadel::engine
