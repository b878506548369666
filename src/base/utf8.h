// UTF-8 validation (RFC 3629): the one definition of "valid UTF-8" shared by the request parser, the log encoder
// and the metrics label sanitiser.
// Valid: U+0000..U+10FFFF in the shortest form, minus the UTF-16 surrogates U+D800..U+DFFF. Invalid: stray
// continuation bytes, C0/C1 and F5..FF lead bytes, overlong forms (E0 80..9F, F0 80..8F), encoded surrogates
// (ED A0..BF), code points above U+10FFFF (F4 90..BF), and sequences cut short by a non-continuation byte or the end.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace citadel {

// Length (1..4) of the valid UTF-8 sequence starting at s[i], or 0 when none starts there. Requires i < s.size().
size_t utf8_sequence_length(std::string_view s, size_t i);

// Offset (0-based) of the first byte of s that does not begin a valid sequence; nullopt when s is all valid UTF-8.
std::optional<size_t> first_invalid_utf8(std::string_view s);

}  // namespace citadel
