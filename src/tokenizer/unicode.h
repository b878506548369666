// Unicode helpers for the tokenizers: UTF-8 decoding that never fails, category flags, lowercase and NFD maps.
// Tables come from tools/reference/make_unicode_tables.py (Python unicodedata); flags follow Unicode categories, and
// kFlagSpace is the White_Space property, which is what \s means in the regex engines HF tokenizers uses.
// Thread-safety: all functions are pure; the lookup table is built once on first use (thread-safe static).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/unicode_tables.h"

namespace citadel::tok {

enum : uint16_t {
  kFlagL = 1, kFlagN = 2, kFlagM = 4, kFlagP = 8, kFlagS = 16, kFlagSpace = 32, kFlagC = 64, kFlagZs = 128,
  kFlagMn = 256,
};

uint16_t cp_flags_slow(uint32_t cp);
// Category flags of cp; 0 for codepoints beyond U+10FFFF. ASCII is one table load.
inline uint16_t cp_flags(uint32_t cp) { return cp < 128 ? kAsciiFlags[cp] : cp_flags_slow(cp); }
inline bool is_letter(uint32_t cp) { return cp_flags(cp) & kFlagL; }
inline bool is_number(uint32_t cp) { return cp_flags(cp) & kFlagN; }
inline bool is_space(uint32_t cp) { return cp_flags(cp) & kFlagSpace; }

// Decodes one UTF-8 sequence at s[i]. Invalid or truncated bytes decode as one byte each, to 0xFFFD-like
// codepoint kInvalidCp, so that every byte of the input belongs to exactly one "character".
constexpr uint32_t kInvalidCp = 0x110000;
uint32_t utf8_decode(std::string_view s, size_t i, size_t* len);
void utf8_append(uint32_t cp, std::string* out);
// Length of a complete UTF-8 sequence starting with byte b (1..4), or 0 if b cannot start one.
int utf8_seq_len(uint8_t b);

// Codepoints of s with the byte offset of each; offsets has one extra entry (s.size()).
struct Codepoints {
  std::vector<uint32_t> cp;      // [n]
  std::vector<uint32_t> offset;  // [n + 1] byte offset of cp[i] in the source
};
void decode_codepoints(std::string_view s, Codepoints* out);

// Appends the full lowercase mapping of cp (context-free) / its canonical decomposition (NFD).
void append_lower(uint32_t cp, std::vector<uint32_t>* out);
void append_nfd(uint32_t cp, std::vector<uint32_t>* out);

}  // namespace citadel::tok
