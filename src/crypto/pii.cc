// PII detectors: byte scanners over ASCII structure (see pii.h for the rules and why each is conservative).
#include "crypto/pii.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <regex>

namespace citadel::crypto {

struct PiiMasker::Custom {
  std::string name;
  std::string token;  // "[NAME]"
  std::regex re;
};

namespace {

// Priorities for equal spans (lower wins); custom patterns follow in their configured order.
enum Priority : int {
  kPrioId18 = 0, kPrioMobile, kPrioCard, kPrioId15, kPrioLandline, kPrioEmail, kPrioIpv6, kPrioIpv4, kPrioCustom
};

struct Candidate {
  size_t begin;
  size_t end;
  PiiKind kind;
  int priority;
  size_t custom_index;  // kCustom only
};

using Text = std::string_view;

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }
inline bool is_word(char c) { return is_alnum(c) || c == '_'; }
inline bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
inline bool is_sep(char c) { return c == ' ' || c == '-'; }
inline char at(Text t, size_t i) { return i < t.size() ? t[i] : '\0'; }
inline bool starts_with(Text t, size_t i, Text s) { return t.substr(std::min(i, t.size())).starts_with(s); }

size_t digit_run(Text t, size_t i) {
  size_t j = i;
  while (j < t.size() && is_digit(t[j])) ++j;
  return j - i;
}

size_t digit_run_back(Text t, size_t end) {  // digits ending just before `end`
  size_t j = end;
  while (j > 0 && is_digit(t[j - 1])) --j;
  return end - j;
}

// A number may start at i unless that would continue a word, a decimal or a dashed/slashed number.
bool number_left_ok(Text t, size_t i) {
  if (i == 0) return true;
  const char p = t[i - 1];
  if (is_word(p)) return false;
  return !(i >= 2 && is_digit(t[i - 2]) && (p == '.' || p == '-' || p == '/'));
}

// A grouped form ("6222 0202 ...", "138 0013 8000") may not start right after a group of four digits and a space:
// that is the inside of a longer grouped number. Contiguous forms may ("房间 1203 13800138000").
bool grouped_left_ok(Text t, size_t i) {
  return !(i >= 2 && t[i - 1] == ' ' && digit_run_back(t, i - 1) == 4);
}

// A number may end at e unless a word, a decimal/dashed continuation, or (grouped forms) another group follows.
bool number_right_ok(Text t, size_t e, bool grouped) {
  if (e >= t.size()) return true;
  const char c = t[e];
  if (is_word(c)) return false;
  const bool digit_next = is_digit(at(t, e + 1));
  if ((c == '.' || c == '-' || c == '/') && digit_next) return false;
  if (grouped && c == ' ' && digit_next) return false;
  return true;
}

// Digit groups from i: d+ (sep d+)* with one consistent separator (' ' or '-').
struct Groups {
  std::array<size_t, 8> len{};
  int count = 0;
  size_t end = 0;  // one past the last digit of the last group
  char sep = 0;
  size_t digits = 0;
};

Groups parse_groups(Text t, size_t i) {
  Groups g;
  size_t j = i;
  while (g.count < static_cast<int>(g.len.size())) {
    const size_t r = digit_run(t, j);
    if (r == 0) break;
    g.len[g.count++] = r;
    g.digits += r;
    j += r;
    g.end = j;
    const char c = at(t, j);
    if (!is_sep(c) || (g.sep != 0 && c != g.sep) || !is_digit(at(t, j + 1))) break;
    g.sep = c;
    ++j;
  }
  return g;
}

// Copies the digits (and a trailing X/x) of t[b, e) into out; returns how many.
size_t collect_digits(Text t, size_t b, size_t e, char* out, size_t cap) {
  size_t n = 0;
  for (size_t i = b; i < e && n < cap; ++i) {
    if (is_digit(t[i]) || t[i] == 'X' || t[i] == 'x') out[n++] = t[i];
  }
  return n;
}

int num(const char* d, int n) {
  int v = 0;
  for (int i = 0; i < n; ++i) v = v * 10 + (d[i] - '0');
  return v;
}

bool valid_date(int y, int m, int d) {
  if (y < 1900 || y > 2099 || m < 1 || m > 12 || d < 1) return false;
  static constexpr int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return d <= kDays[m - 1] + (m == 2 && leap ? 1 : 0);
}

// GB 2260 province-level codes (first two digits).
bool valid_province(int p) {
  return (p >= 11 && p <= 15) || (p >= 21 && p <= 23) || (p >= 31 && p <= 37) || (p >= 41 && p <= 46) ||
         (p >= 50 && p <= 54) || (p >= 61 && p <= 65) || p == 71 || p == 81 || p == 82 || p == 83 || p == 91;
}

bool valid_id18(const char* d) {  // d[18]: 17 digits + check character
  for (int i = 0; i < 17; ++i) {
    if (!is_digit(d[i])) return false;
  }
  if (!valid_province(num(d, 2)) || !valid_date(num(d + 6, 4), num(d + 10, 2), num(d + 12, 2))) return false;
  static constexpr int kWeights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
  int sum = 0;
  for (int i = 0; i < 17; ++i) sum += (d[i] - '0') * kWeights[i];
  const char expect = "10X98765432"[sum % 11];
  const char got = d[17] == 'x' ? 'X' : d[17];
  return got == expect;
}

bool valid_id15(const char* d) {  // d[15] digits: province, area, YYMMDD (19YY), sequence
  return valid_province(num(d, 2)) && valid_date(1900 + num(d + 6, 2), num(d + 8, 2), num(d + 10, 2));
}

bool luhn(const char* d, size_t n) {
  int sum = 0;
  for (size_t k = 0; k < n; ++k) {
    int v = d[n - 1 - k] - '0';
    if (k % 2 == 1) v = v * 2 > 9 ? v * 2 - 9 : v * 2;
    sum += v;
  }
  return sum % 10 == 0;
}

// Card issuer ranges: 3 (Amex, JCB, Diners), 4 (Visa), 5 (Mastercard), 6 (UnionPay, Discover), 9 (domestic debit),
// 2221-2720 (Mastercard 2-series). Leaves out 0/1/7/8 and date-led "20xx" numbers.
bool plausible_issuer(const char* d) {
  if (d[0] >= '3' && d[0] <= '6') return true;
  if (d[0] == '9') return true;
  if (d[0] == '2') {
    const int p = num(d, 4);
    return p >= 2221 && p <= 2720;
  }
  return false;
}

bool is_x(char c) { return c == 'X' || c == 'x'; }

void scan_resident_id(Text t, size_t i, const Groups& g, bool legacy, bool grouped_ok, std::vector<Candidate>* out) {
  char d[20];
  // Contiguous: 18 digits, or 17 digits + X.
  size_t e = 0;
  if (g.len[0] == 18) e = i + 18;
  if (g.len[0] == 17 && is_x(at(t, i + 17))) e = i + 18;
  if (e != 0 && number_right_ok(t, e, false) && collect_digits(t, i, e, d, 18) == 18 && valid_id18(d)) {
    out->push_back({i, e, PiiKind::kCnResidentId, kPrioId18, 0});
    return;
  }
  // Grouped 6-8-4 (or 6-8-3 + X).
  if (grouped_ok && g.count == 3 && g.len[0] == 6 && g.len[1] == 8 && (g.len[2] == 4 || (g.len[2] == 3 && is_x(at(t, g.end))))) {
    e = g.len[2] == 4 ? g.end : g.end + 1;
    if (number_right_ok(t, e, true) && collect_digits(t, i, e, d, 18) == 18 && valid_id18(d)) {
      out->push_back({i, e, PiiKind::kCnResidentId, kPrioId18, 0});
      return;
    }
  }
  if (legacy && g.len[0] == 15 && number_right_ok(t, i + 15, false) && valid_id15(t.data() + i)) {
    out->push_back({i, i + 15, PiiKind::kCnResidentId, kPrioId15, 0});
  }
}

void scan_bank_card(Text t, size_t i, const Groups& g, bool grouped_ok, std::vector<Candidate>* out) {
  char d[24];
  if (g.len[0] >= 13 && g.len[0] <= 19 && number_right_ok(t, i + g.len[0], false) &&
      plausible_issuer(t.data() + i) && luhn(t.data() + i, g.len[0])) {
    out->push_back({i, i + g.len[0], PiiKind::kBankCard, kPrioCard, 0});
    return;
  }
  if (!grouped_ok || g.count < 3 || g.digits < 13 || g.digits > 19 || !number_right_ok(t, g.end, true)) return;
  bool shape = true;  // 4-4-4-4[-1..4]
  for (int k = 0; k + 1 < g.count; ++k) shape = shape && g.len[k] == 4;
  shape = shape && g.len[g.count - 1] >= 1 && g.len[g.count - 1] <= 4 && g.count >= 4;
  const bool amex = g.count == 3 && g.len[0] == 4 && g.len[1] == 6 && (g.len[2] == 5 || g.len[2] == 4);
  if (!shape && !amex) return;
  const size_t n = collect_digits(t, i, g.end, d, sizeof(d));
  if (plausible_issuer(d) && luhn(d, n)) out->push_back({i, g.end, PiiKind::kBankCard, kPrioCard, 0});
}

bool mobile_core(Text t, size_t j) { return at(t, j) == '1' && at(t, j + 1) >= '3' && at(t, j + 1) <= '9'; }

void scan_mobile(Text t, size_t i, bool grouped_ok, std::vector<Candidate>* out) {
  size_t j = i;
  if (starts_with(t, i, "+86")) {
    j += 3;
  } else if (starts_with(t, i, "0086")) {
    j += 4;
  } else if (starts_with(t, i, "86")) {
    j += 2;
  }
  if (j != i && is_sep(at(t, j)) && is_digit(at(t, j + 1))) ++j;
  if (!mobile_core(t, j)) return;
  if (digit_run(t, j) == 11 && number_right_ok(t, j + 11, false)) {
    out->push_back({i, j + 11, PiiKind::kMobilePhone, kPrioMobile, 0});
    return;
  }
  if (!grouped_ok) return;
  const Groups g = parse_groups(t, j);
  if (g.count == 3 && g.len[0] == 3 && g.len[1] == 4 && g.len[2] == 4 && number_right_ok(t, g.end, true)) {
    out->push_back({i, g.end, PiiKind::kMobilePhone, kPrioMobile, 0});
  }
}

// Extension after a landline: "-123", "转123", " ext 123", "ext.123" (1-6 digits). Returns the new end.
size_t landline_extension(Text t, size_t e) {
  size_t j = e;
  if (at(t, j) == '-') {
    ++j;
  } else if (starts_with(t, j, "转")) {
    j += std::strlen("转");
  } else {
    if (at(t, j) == ' ') ++j;
    if (!(starts_with(t, j, "ext") || starts_with(t, j, "EXT") || starts_with(t, j, "Ext"))) return e;
    j += 3;
    if (at(t, j) == '.') ++j;
    if (at(t, j) == ' ') ++j;
  }
  const size_t r = digit_run(t, j);
  if (r < 1 || r > 6 || !number_right_ok(t, j + r, true)) return e;
  return j + r;
}

void scan_landline(Text t, size_t i, std::vector<Candidate>* out) {
  size_t j = i;
  int paren = 0;  // 1: ASCII "(", 3: full-width "（"
  bool country = false;
  if (at(t, j) == '(') {
    paren = 1;
  } else if (starts_with(t, j, "（")) {
    paren = 3;
  } else if (starts_with(t, j, "+86") || starts_with(t, j, "0086")) {
    country = true;
    j += at(t, j) == '+' ? 3 : 4;
    if (is_sep(at(t, j))) ++j;
  }
  j += paren;
  if (!country && at(t, j) != '0') return;
  const char lead = at(t, country ? j : j + 1);
  const bool short_area = lead == '1' || lead == '2';  // 010, 02x: 8-digit locals
  if (!short_area && (lead < '3' || lead > '9')) return;
  const size_t area = (short_area ? 2 : 3) + (country ? 0 : 1);
  if (digit_run(t, j) != area) return;
  j += area;
  if (paren == 1) {
    if (at(t, j) != ')') return;
    ++j;
  } else if (paren == 3) {
    if (!starts_with(t, j, "）")) return;
    j += 3;
  }
  if (paren != 0 ? at(t, j) == ' ' : is_sep(at(t, j))) {
    ++j;
  } else if (paren == 0) {
    return;  // unseparated digit runs are too ambiguous
  }
  const size_t local = digit_run(t, j);
  if (local != 8 && (local != 7 || short_area)) return;
  if (at(t, j) < '2') return;
  size_t e = landline_extension(t, j + local);
  if (!number_right_ok(t, e, false)) return;
  out->push_back({i, e, PiiKind::kLandline, kPrioLandline, 0});
}

// Octet at j: 1-3 digits, <= 255, no leading zero. Returns its length or 0.
size_t ipv4_octet(Text t, size_t j) {
  const size_t r = digit_run(t, j);
  if (r == 0 || r > 3 || (r > 1 && t[j] == '0')) return 0;
  return num(t.data() + j, static_cast<int>(r)) <= 255 ? r : 0;
}

// Length of a dotted quad at j (no boundary checks), or 0.
size_t ipv4_length(Text t, size_t j) {
  size_t k = j;
  for (int o = 0; o < 4; ++o) {
    if (o > 0) {
      if (at(t, k) != '.') return 0;
      ++k;
    }
    const size_t r = ipv4_octet(t, k);
    if (r == 0) return 0;
    k += r;
  }
  return k - j;
}

// "version 1.2.3.4", "v 1.2.3.4", "版本：1.2.3.4": the dotted run is a version, not an address.
bool after_version_word(Text t, size_t i) {
  size_t k = i;
  while (k > 0 && (t[k - 1] == ' ' || t[k - 1] == ':')) --k;
  if (k >= 3 && t.substr(k - 3, 3) == "：") {
    k -= 3;
    while (k > 0 && t[k - 1] == ' ') --k;
  }
  if (t.substr(0, k).ends_with("版本")) return true;
  size_t w = k;
  while (w > 0 && is_alpha(t[w - 1])) --w;
  std::string word(t.substr(w, k - w));
  for (char& c : word) c = static_cast<char>(c | 0x20);
  return word == "v" || word == "ver" || word == "version";
}

void scan_ipv4(Text t, size_t i, std::vector<Candidate>* out) {
  if (i > 0 && (is_word(t[i - 1]) || t[i - 1] == '.')) return;
  const size_t len = ipv4_length(t, i);
  if (len == 0) return;
  const size_t e = i + len;
  if (is_word(at(t, e)) || (at(t, e) == '.' && is_alnum(at(t, e + 1)))) return;
  if (after_version_word(t, i)) return;
  out->push_back({i, e, PiiKind::kIpv4, kPrioIpv4, 0});
}

// All digit-led detectors at one start position; returns the end of the longest candidate (or i).
size_t scan_numbers_at(Text t, size_t i, const PiiOptions& o, std::vector<Candidate>* out) {
  const size_t before = out->size();
  const char c = t[i];
  if (o.mask_mobile_phone && (c == '+' || c == '1' || c == '8' || c == '0') && number_left_ok(t, i)) {
    scan_mobile(t, i, grouped_left_ok(t, i), out);
  }
  if (o.mask_landline && (c == '(' || c == '0' || c == '+' || c == '\xEF') && number_left_ok(t, i)) {
    scan_landline(t, i, out);
  }
  if (is_digit(c)) {
    if (number_left_ok(t, i)) {
      const Groups g = parse_groups(t, i);
      const bool grouped_ok = grouped_left_ok(t, i);
      if (o.mask_resident_id) scan_resident_id(t, i, g, o.accept_legacy_resident_id, grouped_ok, out);
      if (o.mask_bank_card) scan_bank_card(t, i, g, grouped_ok, out);
    }
    if (o.mask_ipv4) scan_ipv4(t, i, out);
  }
  size_t end = i;
  for (size_t k = before; k < out->size(); ++k) end = std::max(end, (*out)[k].end);
  return end;
}

void scan_numbers(Text t, const PiiOptions& o, std::vector<Candidate>* out) {
  static const std::array<bool, 256> kTrigger = [] {
    std::array<bool, 256> a{};
    for (char c = '0'; c <= '9'; ++c) a[static_cast<unsigned char>(c)] = true;
    a['+'] = a['('] = a[0xEF] = true;
    return a;
  }();
  const size_t n = t.size();
  for (size_t i = 0; i < n;) {
    const char c = t[i];
    if (!kTrigger[static_cast<unsigned char>(c)]) {
      ++i;
      continue;
    }
    const size_t end = scan_numbers_at(t, i, o, out);
    if (end > i) {
      i = end;  // anything starting inside overlaps this leftmost match
    } else if (is_digit(c)) {
      i += digit_run(t, i);  // no match can start inside a digit run
    } else {
      ++i;
    }
  }
}

bool email_local_char(char c) { return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }

// The domain after '@' at a: LDH labels joined by dots, >= 2 labels, alphabetic TLD of >= 2. Returns end or 0.
size_t email_domain_end(Text t, size_t a) {
  size_t j = a + 1;
  int labels = 0;
  size_t last_label = j;
  while (true) {
    size_t k = j;
    while (k < t.size() && k - j <= 63 && (is_alnum(t[k]) || t[k] == '-')) ++k;  // bounded: "@@@@" + long run
    if (k == j || k - j > 63 || t[j] == '-' || t[k - 1] == '-') return 0;
    ++labels;
    last_label = j;
    j = k;
    if (at(t, j) == '.' && (is_alnum(at(t, j + 1)))) {
      ++j;
      continue;
    }
    break;
  }
  if (labels < 2 || j - (a + 1) > 253 || is_word(at(t, j))) return 0;
  if (j - last_label < 2) return 0;
  for (size_t k = last_label; k < j; ++k) {
    if (!is_alpha(t[k])) return 0;
  }
  return j;
}

void scan_emails(Text t, std::vector<Candidate>* out) {
  size_t from = 0;
  while (from < t.size()) {
    const void* hit = std::memchr(t.data() + from, '@', t.size() - from);
    if (hit == nullptr) break;
    const size_t a = static_cast<size_t>(static_cast<const char*>(hit) - t.data());
    from = a + 1;
    size_t b = a;
    while (b > 0 && a - b < 64 && email_local_char(t[b - 1])) --b;
    if (b > 0 && email_local_char(t[b - 1])) continue;  // local part longer than 64: not an address
    while (b < a && t[b] == '.') ++b;
    if (b == a || t[a - 1] == '.' || t.substr(b, a - b).find("..") != Text::npos) continue;
    const size_t e = email_domain_end(t, a);
    if (e == 0) continue;
    out->push_back({b, e, PiiKind::kEmail, kPrioEmail, 0});
    from = e;
  }
}

// Validates t[s, e) as an IPv6 address (see pii.h).
bool valid_ipv6(Text t, size_t s, size_t e) {
  size_t pos = s;
  int groups = 0;
  bool compressed = false;
  bool has_digit = false;
  if (t.substr(s, 2) == "::") {
    compressed = true;
    pos += 2;
  }
  while (pos < e) {
    size_t h = 0;
    while (pos + h < e && is_hex(t[pos + h])) ++h;
    if (pos + h < e && t[pos + h] == '.') {  // embedded IPv4: must be the tail
      if (ipv4_length(t, pos) != e - pos) return false;
      groups += 2;
      has_digit = true;
      break;
    }
    if (h == 0 || h > 4) return false;
    for (size_t k = pos; k < pos + h; ++k) has_digit = has_digit || is_digit(t[k]);
    ++groups;
    pos += h;
    if (pos == e) break;
    if (t[pos] != ':') return false;
    if (pos + 1 < e && t[pos + 1] == ':') {
      if (compressed) return false;
      compressed = true;
      pos += 2;
    } else {
      ++pos;
      if (pos == e) return false;
    }
  }
  // "1::" / "fe80::" alone read as list markers and prefixes more often than as addresses.
  const bool bare_prefix = groups == 1 && e - s >= 2 && t.substr(e - 2, 2) == "::";
  if (compressed) return groups <= 7 && has_digit && !bare_prefix;
  return groups == 8;
}

void scan_ipv6(Text t, std::vector<Candidate>* out) {
  auto run_char = [](char c) { return is_hex(c) || c == ':' || c == '.'; };
  size_t from = 0;
  while (from < t.size()) {
    const void* hit = std::memchr(t.data() + from, ':', t.size() - from);
    if (hit == nullptr) break;
    const size_t c = static_cast<size_t>(static_cast<const char*>(hit) - t.data());
    size_t s = c;
    size_t e = c;
    while (s > 0 && run_char(t[s - 1])) --s;
    while (e < t.size() && run_char(t[e])) ++e;
    from = e;
    if (e < t.size() && is_word(t[e])) continue;
    // "addr:fe80::1": a lone leading colon is punctuation, not part of the address.
    while (s < e && t[s] == ':' && at(t, s + 1) != ':') ++s;
    if (s > 0 && (is_word(t[s - 1]) || t[s - 1] == '.')) continue;
    while (e > s && t[e - 1] == '.') --e;  // sentence end
    if (e - s >= 2 && t[e - 1] == ':' && t[e - 2] != ':') --e;
    if (e - s >= 2 && valid_ipv6(t, s, e)) out->push_back({s, e, PiiKind::kIpv6, kPrioIpv6, 0});
  }
}

bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

const char* pii_kind_name(PiiKind kind) {
  switch (kind) {
    case PiiKind::kCnResidentId: return "resident_id";
    case PiiKind::kMobilePhone: return "mobile_phone";
    case PiiKind::kLandline: return "landline";
    case PiiKind::kBankCard: return "bank_card";
    case PiiKind::kEmail: return "email";
    case PiiKind::kIpv4: return "ipv4";
    case PiiKind::kIpv6: return "ipv6";
    case PiiKind::kCustom: return "custom";
  }
  return "unknown";
}

PiiMasker::PiiMasker(PiiOptions options, std::shared_ptr<const std::vector<Custom>> customs)
    : options_(std::move(options)), customs_(std::move(customs)) {}

Result<PiiMasker> PiiMasker::create(PiiOptions options) {
  auto customs = std::make_shared<std::vector<Custom>>();
  for (const auto& [name, pattern] : options.extra_patterns) {
    const bool name_ok = !name.empty() && name.size() <= 32 && std::all_of(name.begin(), name.end(), is_word);
    if (!name_ok) return InvalidArgument("pii pattern name '" + name + "': want 1-32 of [A-Za-z0-9_]");
    for (const Custom& c : *customs) {
      if (c.name == name) return InvalidArgument("pii pattern name '" + name + "' given twice");
    }
    Custom custom;
    custom.name = name;
    custom.token.push_back('[');  // push_back, not "[" + ...: g++ 12 reports a false -Wrestrict on the latter
    for (char c : name) custom.token.push_back((c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c);
    custom.token.push_back(']');
    try {
      custom.re = std::regex(pattern, std::regex::ECMAScript | std::regex::optimize);
      if (std::regex_match(std::string(), custom.re)) {
        return InvalidArgument("pii pattern '" + name + "': matches the empty string");
      }
    } catch (const std::regex_error& e) {
      return InvalidArgument("pii pattern '" + name + "': bad ECMAScript regex /" + pattern + "/: " + e.what());
    }
    customs->push_back(std::move(custom));
  }
  return PiiMasker(std::move(options), std::move(customs));
}

namespace {

// Runs one custom regex line by line (bounds std::regex's recursion by the line length). A match is widened to whole
// UTF-8 characters. If the regex engine gives up on a line (complexity or stack), the whole line is reported: a
// masking filter must fail closed.
void scan_custom(Text t, const std::regex& re, size_t index, std::vector<Candidate>* out) {
  size_t line = 0;
  while (line < t.size()) {
    size_t nl = t.find('\n', line);
    if (nl == Text::npos) nl = t.size();
    const char* first = t.data() + line;
    const char* last = t.data() + nl;
    try {
      for (std::cregex_iterator it(first, last, re), done; it != done; ++it) {
        if (it->length(0) == 0) continue;
        size_t b = line + static_cast<size_t>(it->position(0));
        size_t e = b + static_cast<size_t>(it->length(0));
        while (b > line && is_continuation(t[b])) --b;
        while (e < nl && is_continuation(t[e])) ++e;
        out->push_back({b, e, PiiKind::kCustom, kPrioCustom + static_cast<int>(index), index});
      }
    } catch (const std::exception&) {
      if (nl > line) out->push_back({line, nl, PiiKind::kCustom, kPrioCustom + static_cast<int>(index), index});
    }
    line = nl + 1;
  }
}

}  // namespace

std::vector<PiiFinding> PiiMasker::find(std::string_view text) const {
  std::vector<Candidate> cands;
  scan_numbers(text, options_, &cands);
  if (options_.mask_email) scan_emails(text, &cands);
  if (options_.mask_ipv6) scan_ipv6(text, &cands);
  for (size_t k = 0; k < customs_->size(); ++k) scan_custom(text, (*customs_)[k].re, k, &cands);

  std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end > b.end;
    return a.priority < b.priority;
  });
  std::vector<PiiFinding> findings;
  size_t last_end = 0;
  for (const Candidate& c : cands) {
    if (c.begin < last_end) continue;
    PiiFinding f;
    f.kind = c.kind;
    f.begin = c.begin;
    f.end = c.end;
    if (c.kind == PiiKind::kCustom) f.name = (*customs_)[c.custom_index].name;
    findings.push_back(std::move(f));
    last_end = c.end;
  }
  return findings;
}

std::string PiiMasker::placeholder(const PiiFinding& finding) const {
  switch (finding.kind) {
    case PiiKind::kCnResidentId: return "[ID]";
    case PiiKind::kMobilePhone:
    case PiiKind::kLandline: return "[PHONE]";
    case PiiKind::kBankCard: return "[CARD]";
    case PiiKind::kEmail: return "[EMAIL]";
    case PiiKind::kIpv4:
    case PiiKind::kIpv6: return "[IP]";
    case PiiKind::kCustom:
      for (const Custom& c : *customs_) {
        if (c.name == finding.name) return c.token;
      }
      return "[PII]";
  }
  return "[PII]";
}

std::string PiiMasker::mask(std::string_view text) const {
  const std::vector<PiiFinding> findings = find(text);
  if (findings.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  for (const PiiFinding& f : findings) {
    out.append(text.substr(pos, f.begin - pos));
    out += placeholder(f);
    pos = f.end;
  }
  out.append(text.substr(pos));
  return out;
}

bool PiiMasker::contains_pii(std::string_view text) const { return !find(text).empty(); }

Result<std::vector<std::pair<std::string, std::string>>> parse_pii_pattern_list(std::string_view spec) {
  std::vector<std::pair<std::string, std::string>> out;
  auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  };
  size_t i = 0;
  while (i <= spec.size()) {
    const size_t semi = std::min(spec.find(';', i), spec.size());
    const std::string_view entry = trim(spec.substr(i, semi - i));
    i = semi + 1;
    if (entry.empty()) continue;
    const size_t eq = entry.find('=');
    const std::string shown(entry.substr(0, std::min<size_t>(entry.size(), 40)));
    if (eq == std::string_view::npos) return InvalidArgument("pii pattern entry '" + shown + "': want name=regex");
    const std::string_view name = trim(entry.substr(0, eq)), re = entry.substr(eq + 1);
    if (re.empty()) return InvalidArgument("pii pattern entry '" + shown + "': empty regex");
    out.emplace_back(std::string(name), std::string(re));
  }
  return out;
}

}  // namespace citadel::crypto
