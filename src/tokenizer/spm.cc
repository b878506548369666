// SentencePiece BPE (GGUF model "llama"): spaces become U+2581, symbols are UTF-8 characters, adjacent symbols
// merge highest score first (leftmost on ties) while the merged text is a vocab entry; characters outside the
// vocab fall back to <0xXX> byte tokens (or unk).
#include <algorithm>

#include "tokenizer/tokenizer_internal.h"
#include "tokenizer/unicode.h"

namespace citadel {
namespace {

struct Sym {
  uint32_t off, len;   // byte range in the normalized text
  int32_t prev, next;  // -1 at the ends; len == 0 once merged away
};
struct Pair {
  float score;
  int32_t left, right;
  uint32_t size;  // bytes of the merged text, to detect stale entries
  bool operator<(const Pair& o) const { return score != o.score ? score < o.score : left > o.left; }
};

}  // namespace

void Tokenizer::encode_spm(std::string_view text, bool at_start, std::vector<int32_t>* out) const {
  static const std::string kSpace = "\xE2\x96\x81";
  std::string norm;  // normalized text: ' ' -> U+2581, optional prefix
  norm.reserve(text.size() + 8);
  if (at_start && spec_.add_space_prefix) norm += kSpace;
  for (char c : text) {
    if (c == ' ') norm += kSpace; else norm.push_back(c);
  }
  std::vector<Sym> sym;  // [n chars]
  for (size_t i = 0; i < norm.size();) {
    int len = tok::utf8_seq_len(static_cast<uint8_t>(norm[i]));
    size_t l = std::min<size_t>(len == 0 ? 1 : len, norm.size() - i);
    int32_t k = static_cast<int32_t>(sym.size());
    sym.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(l), k - 1, -1});
    if (k > 0) sym[k - 1].next = k;
    i += l;
  }
  if (sym.empty()) return;
  std::vector<Pair> heap;
  auto consider = [&](int32_t left) {
    if (left < 0 || sym[left].next < 0) return;
    int32_t right = sym[left].next;
    std::string_view merged(norm.data() + sym[left].off, sym[left].len + sym[right].len);
    int32_t id = token_id(merged);
    if (id < 0) return;
    heap.push_back({spec_.scores[id], left, right, static_cast<uint32_t>(merged.size())});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Pair p = heap.back();
    heap.pop_back();
    Sym& l = sym[p.left];
    if (l.len == 0 || l.next != p.right || l.len + sym[p.right].len != p.size) continue;  // stale
    Sym& r = sym[p.right];
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (l.next >= 0) sym[l.next].prev = p.left;
    consider(l.prev);
    consider(p.left);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    std::string_view piece(norm.data() + sym[i].off, sym[i].len);
    int32_t id = token_id(piece);
    if (id >= 0) {
      out->push_back(id);
      continue;
    }
    bool have_bytes = true;
    for (unsigned char b : piece) have_bytes = have_bytes && byte_tokens_[b] >= 0;
    if (have_bytes) {
      for (unsigned char b : piece) out->push_back(byte_tokens_[b]);
    } else if (spec_.unk >= 0) {
      out->push_back(spec_.unk);
    }
  }
}

}  // namespace citadel
