// Byte-level BPE: pre-tokenize, map bytes to the GPT-2 alphabet, merge adjacent symbols lowest rank first
// (leftmost on ties), with a per-word cache.
#include <algorithm>

#include "tokenizer/tokenizer_internal.h"
#include "tokenizer/unicode.h"

namespace citadel {
namespace {

struct Symbol {
  int32_t id;
  int32_t prev, next;  // indices into the symbol array, -1 at the ends
};
struct Candidate {
  int32_t rank, left, left_id, right_id;
  // std heap is a max-heap: "less" means lower priority = higher rank, or same rank further right.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
};

void bpe_word(const Tokenizer::Bpe& bpe, int32_t unk, std::string_view word, std::vector<int32_t>* out) {
  std::vector<Symbol> sym;  // [n bytes]
  sym.reserve(word.size());
  for (unsigned char b : word) {
    int32_t id = bpe.byte_ids[b];
    if (id < 0) id = unk;
    if (id < 0) continue;  // byte not in vocab and no unk: dropped, as HF BPE does
    int32_t i = static_cast<int32_t>(sym.size());
    sym.push_back({id, i - 1, -1});
    if (i > 0) sym[i - 1].next = i;
  }
  if (sym.empty()) return;
  std::vector<Candidate> heap;
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    int32_t right = sym[left].next;
    if (right < 0) return;
    uint64_t key = (static_cast<uint64_t>(sym[left].id) << 32) | static_cast<uint32_t>(sym[right].id);
    auto it = bpe.merges.find(key);
    if (it == bpe.merges.end()) return;
    heap.push_back({it->second.rank, left, sym[left].id, sym[right].id});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Candidate c = heap.back();
    heap.pop_back();
    Symbol& l = sym[c.left];
    if (l.id != c.left_id || l.next < 0 || sym[l.next].id != c.right_id) continue;  // stale
    if (l.prev == -2) continue;                                                     // removed
    uint64_t key = (static_cast<uint64_t>(c.left_id) << 32) | static_cast<uint32_t>(c.right_id);
    l.id = bpe.merges.find(key)->second.id;
    int32_t r = l.next;
    l.next = sym[r].next;
    if (l.next >= 0) sym[l.next].prev = c.left;
    sym[r].prev = -2;  // mark removed
    sym[r].id = -1;
    consider(l.prev);
    consider(c.left);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out->push_back(sym[i].id);
}

}  // namespace

void Tokenizer::clear_cache() const {
  if (!bpe_) return;
  std::lock_guard<std::mutex> lock(bpe_->mu);
  bpe_->cache.clear();
}

void Tokenizer::encode_bpe(std::string_view text, std::vector<int32_t>* out) const {
  const Bpe& bpe = *bpe_;
  const ByteMap& bm = byte_map();
  std::vector<int32_t> ids;
  for (const auto& [b, e] : tok::pre_tokenize(pre_, text)) {
    std::string_view word = text.substr(b, e - b);
    if (spec_.ignore_merges) {
      std::string mapped;
      for (unsigned char c : word) mapped += bm.byte_to_utf8[c];
      int32_t id = token_id(mapped);
      if (id >= 0) {
        out->push_back(id);
        continue;
      }
    }
    if (word.size() == 1 && bpe.byte_ids[static_cast<uint8_t>(word[0])] >= 0) {  // nothing to merge
      out->push_back(bpe.byte_ids[static_cast<uint8_t>(word[0])]);
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(bpe.mu);
      auto it = bpe.cache.find(word);
      if (it != bpe.cache.end()) {
        out->insert(out->end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    ids.clear();
    bpe_word(bpe, spec_.unk, word, &ids);
    out->insert(out->end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(bpe.mu);
    if (bpe.cache.size() >= Bpe::kCacheMax) bpe.cache.clear();
    bpe.cache.emplace(std::string(word), ids);
  }
}

}  // namespace citadel
