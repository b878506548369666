// KvCache: the engine's view of the paged KV pool. Owns block ALLOCATION only (block ids, reference counts, the
// prefix-cache index); the K/V tensors themselves live in the ModelRunner (model_runner.h).
//
// - One pool of n_blocks blocks of block_size tokens, fixed at construction.
// - A sequence holds a BlockTable: its block ids in position order, plus the hash chain of its full blocks.
// - Blocks are reference-counted: prefix sharing and fork() make several tables point at one block. A block about
//   to be written while shared (ref > 1) is first copied to a private block (copy-on-write); allocate() reports the
//   copies, which the caller must hand to ModelRunner::copy_blocks() before the forward pass that writes them.
// - Automatic prefix caching (vLLM style): once every token of a block has its KV computed, commit() keys the block by
//   hash(parent block hash, the block's token ids) (64-bit; the token ids and the parent hash are stored per block and
//   compared on lookup, so a hash collision can only cause a miss, never a wrong hit). acquire_prefix() reuses the
//   longest contiguous run of cached full blocks at the start of a prompt.
// - Namespaces: the chain of a table starts at root_hash(table.cache_namespace), so identical token prefixes under
//   different namespaces (model, adapter, tenant: prefix_namespace()) never share a block. The first block's stored
//   parent is that root and is compared on lookup like the tokens; two namespaces can only meet if their 64-bit
//   values are equal (prefix_namespace() takes them from SHA-256).
// - Free blocks: blocks never cached (or whose cache entry was dropped) are handed out first; unreferenced cached
//   blocks sit in an LRU list and are evicted (un-indexed and reused) only when no other free block is left. Tables
//   are released tail-first, so a prefix's early blocks outlive its late ones.
// Thread-safety: none; owned and used by the engine thread only.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/status.h"

namespace citadel::engine {

struct BlockTable {
  std::vector<int32_t> blocks;   // [ceil(n_tokens / block_size)] block ids in position order
  std::vector<uint64_t> hashes;  // [n_hashed] chain hash of blocks[0..n_hashed), all full and computed
  uint64_t cache_namespace = 0;  // prefix-cache namespace (0: the default one); kept by release()
};

// A prefix-cache namespace from its parts (e.g. served model name, adapter, tenant): the first 8 bytes of the SHA-256
// of the length-prefixed parts, never 0. Equal parts give equal values; pure and thread-safe.
uint64_t prefix_namespace(std::initializer_list<std::string_view> parts);

class KvCache {
 public:
  KvCache(int n_blocks, int block_size, bool enable_prefix_caching);

  int n_blocks() const { return n_blocks_; }
  int block_size() const { return block_size_; }
  int blocks_for(int64_t n_tokens) const { return static_cast<int>((n_tokens + block_size_ - 1) / block_size_); }

  int num_free() const { return static_cast<int>(free_fresh_.size()) + lru_size_; }  // allocatable now
  int num_used() const { return n_blocks_ - num_free(); }                                // ref > 0
  int num_cached_free() const { return lru_size_; }  // unreferenced but still indexed (evictable)
  int num_indexed() const { return static_cast<int>(index_.size()); }
  int ref_count(int block) const { return meta_[block].ref; }

  // Takes a reference on every cached block that matches a full block of tokens, from the start, stopping at the
  // first miss; appends them to the (empty) table. Returns the number of tokens covered (a multiple of block_size,
  // possibly == tokens.size(): the caller must still recompute at least the last token to get logits).
  int acquire_prefix(const std::vector<int32_t>& tokens, BlockTable* table);

  // Blocks allocate() would take for the table to cover n_tokens with positions [first_write, n_tokens) writable.
  int blocks_needed(const BlockTable& table, int first_write, int n_tokens) const;

  // Makes the table cover n_tokens tokens and the blocks holding positions [first_write, n_tokens) private (copy on
  // write). All or nothing: returns false and changes nothing when the pool lacks blocks. Copies are appended to
  // *copies as (src, dst).
  bool allocate(BlockTable* table, int first_write, int n_tokens, std::vector<std::pair<int, int>>* copies);

  // Call after the KV of tokens[0, n_computed) is in the pool: extends the hash chain over newly full blocks and
  // indexes them (unless an equal block is already indexed, or prefix caching is off).
  void commit(BlockTable* table, const std::vector<int32_t>& tokens, int n_computed);

  // Drops the table's references (tail first) and clears it.
  void release(BlockTable* table);

  // dst (empty) shares every block of src, the partial last one included (for n > 1 / beam search).
  void fork(const BlockTable& src, BlockTable* dst);

  // Internal consistency (free lists vs reference counts vs index). For tests and debug builds.
  Status check_invariants() const;

  static uint64_t hash_block(uint64_t parent, const int32_t* tokens, int n);
  static constexpr uint64_t kRootHash = 0x6a09e667f3bcc908ull;
  // The parent hash of a namespace's first block: kRootHash for namespace 0, else a mix of both.
  static uint64_t root_hash(uint64_t cache_namespace);

 private:
  struct BlockMeta {
    int ref = 0;
    bool indexed = false;          // present in index_ under `hash`
    uint64_t hash = 0;
    uint64_t parent = 0;
    std::vector<int32_t> tokens;   // [block_size] when indexed (collision check)
    int lru_prev = -1, lru_next = -1;
    bool in_lru = false;
  };
  int take_block();           // requires num_free() > 0
  void add_ref(int block);
  void drop_ref(int block);
  void lru_push_back(int block);
  void lru_remove(int block);
  void unindex(int block);

  int n_blocks_;
  int block_size_;
  bool prefix_caching_;
  std::vector<BlockMeta> meta_;                // [n_blocks]
  std::vector<int32_t> free_fresh_;            // unreferenced, not indexed (stack)
  int lru_head_ = -1, lru_tail_ = -1, lru_size_ = 0;  // unreferenced, indexed; head = least recently freed
  std::unordered_map<uint64_t, int32_t> index_;  // chain hash -> block id
};

}  // namespace citadel::engine
