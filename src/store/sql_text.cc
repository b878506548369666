#include "store/sql_text.h"

#include <cctype>

namespace citadel::store::internal {

namespace {

// Calls on_char(i) for each character of sql outside literals and comments; literal/comment text is skipped
// (copied to `out` verbatim when out is not null). A callback returning true consumed the character.
template <typename F>
void scan_sql(const std::string& sql, std::string* out, F on_char) {
  size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    size_t end = i;
    if (c == '\'' || c == '"') {
      // '' (or "") inside a literal is an escaped quote: the loop simply re-enters the literal.
      end = sql.find(c, i + 1);
      end = (end == std::string::npos) ? sql.size() : end + 1;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      end = sql.find('\n', i);
      end = (end == std::string::npos) ? sql.size() : end;
    }
    if (end > i) {
      if (out) out->append(sql, i, end - i);
      i = end;
      continue;
    }
    if (!on_char(i) && out) out->push_back(c);
    ++i;
  }
}

bool blank_or_comment(const std::string& s) {
  bool blank = true;
  scan_sql(s, nullptr, [&](size_t i) {
    if (!std::isspace(static_cast<unsigned char>(s[i]))) blank = false;
    return false;
  });
  // A statement of only comments scanned no character outside them.
  return blank;
}

}  // namespace

std::string sql_head(const std::string& sql) {
  size_t b = 0;
  while (b < sql.size() && std::isspace(static_cast<unsigned char>(sql[b]))) ++b;
  std::string head = sql.substr(b, 40);
  for (char& c : head) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (sql.size() - b > 40) head += "...";
  return head;
}

std::string rewrite_placeholders(const std::string& sql, int* n_params) {
  std::string out;
  out.reserve(sql.size() + 16);
  int n = 0;
  scan_sql(sql, &out, [&](size_t i) {
    if (sql[i] != '?') return false;
    out += '$';
    out += std::to_string(++n);
    return true;
  });
  if (n_params) *n_params = n;
  return out;
}

std::vector<std::string> split_statements(const std::string& script) {
  std::vector<std::string> parts;
  size_t start = 0;
  scan_sql(script, nullptr, [&](size_t i) {
    if (script[i] != ';') return false;
    parts.push_back(script.substr(start, i - start));
    start = i + 1;
    return true;
  });
  parts.push_back(script.substr(start));
  std::vector<std::string> out;
  for (auto& p : parts) {
    if (!blank_or_comment(p)) out.push_back(std::move(p));
  }
  return out;
}

}  // namespace citadel::store::internal
