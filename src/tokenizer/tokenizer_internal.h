// Internals shared by the tokenizer's .cc files (not part of the API).
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace citadel {

// GPT-2 byte <-> unicode map: printable bytes map to themselves, the other 68 to U+0100 + n in order.
struct ByteMap {
  std::string byte_to_utf8[256];      // [256] UTF-8 of the mapped char
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  ByteMap();
};
const ByteMap& byte_map();

// Hash/equality that let unordered_map<std::string, ...> be probed with a string_view (no allocation).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

struct Tokenizer::Bpe {
  // Merge (left id, right id) -> rank and result id.
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  std::unordered_map<uint64_t, Merge> merges;
  int32_t byte_ids[256];  // token id of each byte's mapped char, -1 if absent
  // Word cache: pre-token bytes -> ids; bounded (cleared when full). Guarded by mu.
  mutable std::mutex mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;
  static constexpr size_t kCacheMax = 1 << 16;
};

struct Tokenizer::Spm {
  int32_t unk = -1;
};

}  // namespace citadel
