// Small string helpers shared across modules. Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace citadel {

// The items of a separated list ("a,b,,c" -> a, b, c): empty items are dropped; with trim_spaces, spaces around
// each item are removed first.
std::vector<std::string> split_list(std::string_view s, char sep = ',', bool trim_spaces = false);

// The items with sep between them (join({"a","b"}, ", ") -> "a, b"; no items -> "").
std::string join(const std::vector<std::string>& items, std::string_view sep);

}  // namespace citadel
