#include "tokenizer/unicode.h"

#include <algorithm>

#include "tokenizer/unicode_tables.h"

namespace citadel::tok {
namespace {

constexpr uint32_t kMaxCp = 0x110000;

// Flat flags table: 0x110000 x u16 = 2.2 MB, built once from the compact runs; one load per lookup.
const std::vector<uint16_t>& flag_table() {
  static const std::vector<uint16_t> table = [] {
    std::vector<uint16_t> t(kMaxCp, 0);
    for (size_t i = 0; i < kCategoryRunCount; ++i) {
      uint32_t end = i + 1 < kCategoryRunCount ? kCategoryRuns[i + 1].first : kMaxCp;
      std::fill(t.begin() + kCategoryRuns[i].first, t.begin() + end, kCategoryRuns[i].flags);
    }
    return t;
  }();
  return table;
}

const CodepointMap* find_map(const CodepointMap* map, size_t n, uint32_t cp) {
  const CodepointMap* end = map + n;
  const CodepointMap* it = std::lower_bound(map, end, cp, [](const CodepointMap& m, uint32_t c) { return m.cp < c; });
  return (it != end && it->cp == cp) ? it : nullptr;
}

void append_mapped(const CodepointMap* m, std::vector<uint32_t>* out) {
  for (uint32_t c : m->to) {
    if (c == 0) break;
    out->push_back(c);
  }
}

}  // namespace

uint16_t cp_flags_slow(uint32_t cp) {
  if (cp >= kMaxCp) return 0;
  return flag_table()[cp];
}

int utf8_seq_len(uint8_t b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return b >= 0xC2 ? 2 : 0;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return b <= 0xF4 ? 4 : 0;
  return 0;
}

uint32_t utf8_decode(std::string_view s, size_t i, size_t* len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + i;
  size_t avail = s.size() - i;
  uint8_t b0 = p[0];
  *len = 1;
  if (b0 < 0x80) return b0;
  int n = utf8_seq_len(b0);
  if (n == 0 || static_cast<size_t>(n) > avail) return kInvalidCp;
  uint32_t cp = b0 & (0x7F >> n);
  for (int k = 1; k < n; ++k) {
    if ((p[k] & 0xC0) != 0x80) return kInvalidCp;
    cp = (cp << 6) | (p[k] & 0x3F);
  }
  // Reject overlong forms, surrogates and values past U+10FFFF.
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) {
    return kInvalidCp;
  }
  *len = n;
  return cp;
}

void utf8_append(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void decode_codepoints(std::string_view s, Codepoints* out) {
  out->cp.clear();
  out->offset.clear();
  out->cp.reserve(s.size());
  out->offset.reserve(s.size() + 1);
  size_t i = 0;
  while (i < s.size()) {
    size_t len;
    uint32_t cp = utf8_decode(s, i, &len);
    out->cp.push_back(cp);
    out->offset.push_back(static_cast<uint32_t>(i));
    i += len;
  }
  out->offset.push_back(static_cast<uint32_t>(s.size()));
}

void append_lower(uint32_t cp, std::vector<uint32_t>* out) {
  if (cp < 0x80) {
    out->push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    return;
  }
  if (const CodepointMap* m = find_map(kLowerMap, kLowerMapCount, cp)) {
    append_mapped(m, out);
  } else {
    out->push_back(cp);
  }
}

void append_nfd(uint32_t cp, std::vector<uint32_t>* out) {
  if (cp < 0xC0) {
    out->push_back(cp);
    return;
  }
  if (cp >= 0xAC00 && cp <= 0xD7A3) {  // Hangul syllable: L V (T), Unicode ch. 3.12
    uint32_t s = cp - 0xAC00;
    out->push_back(0x1100 + s / 588);
    out->push_back(0x1161 + (s % 588) / 28);
    if (s % 28) out->push_back(0x11A7 + s % 28);
    return;
  }
  if (const CodepointMap* m = find_map(kNfdMap, kNfdMapCount, cp)) {
    append_mapped(m, out);
  } else {
    out->push_back(cp);
  }
}

}  // namespace citadel::tok
