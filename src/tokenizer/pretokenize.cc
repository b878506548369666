#include "tokenizer/pretokenize.h"

#include <algorithm>

#include "tokenizer/unicode.h"

namespace citadel::tok {
namespace {

// A piece of the codepoint array [b, e): regexes see it as a whole string (so $ and (?!\S) stop at e).
struct Span {
  uint32_t b, e;
};
// Returns the length (in codepoints) of the regex match starting at i within [i, e), or 0 for no match.
using Matcher = uint32_t (*)(const uint32_t* cp, uint32_t i, uint32_t e);

inline uint16_t fl(uint32_t c) { return cp_flags(c); }
inline bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }
inline bool is_ws(uint32_t c) { return fl(c) & kFlagSpace; }

// Length of the run of codepoints satisfying pred from i.
template <typename Pred>
inline uint32_t run(const uint32_t* cp, uint32_t i, uint32_t e, Pred pred) {
  uint32_t j = i;
  while (j < e && pred(cp[j])) ++j;
  return j - i;
}

// The three whitespace alternatives shared by the GPT-2 family: \s*[\r\n]+ (optional) | \s+(?!\S) | \s+.
inline uint32_t match_ws(const uint32_t* cp, uint32_t i, uint32_t e, bool crlf_alt) {
  uint32_t n = run(cp, i, e, is_ws);
  if (n == 0) return 0;
  if (crlf_alt) {  // \s*[\r\n]+ : up to and including the last \r or \n of the whitespace run
    for (uint32_t k = n; k > 0; --k) {
      if (is_crlf(cp[i + k - 1])) return k;
    }
  }
  if (i + n == e) return n;  // \s+(?!\S) at the end of the piece
  if (n >= 2) return n - 1;  // backtrack one so the next char is whitespace
  return 1;                  // \s+
}

// Contractions 's 't 're 've 'm 'll 'd; case-insensitive for llama3 style.
inline uint32_t match_contraction(const uint32_t* cp, uint32_t i, uint32_t e, bool icase) {
  if (cp[i] != '\'' || i + 1 >= e) return 0;
  auto low = [&](uint32_t c) { return (icase && c >= 'A' && c <= 'Z') ? c + 32 : c; };
  uint32_t c1 = low(cp[i + 1]);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (i + 2 < e) {
    uint32_t c2 = low(cp[i + 2]);
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  }
  return 0;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
uint32_t match_gpt2(const uint32_t* cp, uint32_t i, uint32_t e) {
  if (uint32_t n = match_contraction(cp, i, e, false)) return n;
  uint32_t j = (cp[i] == ' ' && i + 1 < e) ? i + 1 : i;  // optional leading space
  for (uint32_t start : {j, i}) {
    uint16_t f = fl(cp[start]);
    if (f & kFlagL) return start - i + run(cp, start, e, [](uint32_t c) { return (fl(c) & kFlagL) != 0; });
    if (f & kFlagN) return start - i + run(cp, start, e, [](uint32_t c) { return (fl(c) & kFlagN) != 0; });
    if (!(f & (kFlagSpace | kFlagL | kFlagN))) {
      return start - i + run(cp, start, e, [](uint32_t c) { return !(fl(c) & (kFlagSpace | kFlagL | kFlagN)); });
    }
    if (start == i) break;
  }
  return match_ws(cp, i, e, false);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
template <uint32_t kMaxDigits>
uint32_t match_llama3(const uint32_t* cp, uint32_t i, uint32_t e) {
  if (uint32_t n = match_contraction(cp, i, e, true)) return n;
  auto is_l = [](uint32_t c) { return (fl(c) & kFlagL) != 0; };
  uint16_t f = fl(cp[i]);
  if (f & kFlagL) return run(cp, i, e, is_l);
  if (!(f & kFlagN) && !is_crlf(cp[i]) && i + 1 < e && is_l(cp[i + 1])) return 1 + run(cp, i + 1, e, is_l);
  if (f & kFlagN) return std::min(kMaxDigits, run(cp, i, e, [](uint32_t c) { return (fl(c) & kFlagN) != 0; }));
  auto punct = [](uint32_t c) { return !(fl(c) & (kFlagSpace | kFlagL | kFlagN)); };
  uint32_t start = (cp[i] == ' ' && i + 1 < e && punct(cp[i + 1])) ? i + 1 : i;
  if (punct(cp[start])) {
    uint32_t j = start + run(cp, start, e, punct);
    j += run(cp, j, e, is_crlf);
    return j - i;
  }
  return match_ws(cp, i, e, true);
}

bool is_ascii_punct(uint32_t c) {
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
}
bool is_ascii_alpha(uint32_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

// [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+
uint32_t match_dsv3(const uint32_t* cp, uint32_t i, uint32_t e) {
  if (is_ascii_punct(cp[i]) && i + 1 < e && is_ascii_alpha(cp[i + 1])) return 1 + run(cp, i + 1, e, is_ascii_alpha);
  auto lm = [](uint32_t c) { return (fl(c) & (kFlagL | kFlagM)) != 0; };
  auto ps = [](uint32_t c) { return (fl(c) & (kFlagP | kFlagS)) != 0; };
  uint16_t f = fl(cp[i]);
  if (f & (kFlagL | kFlagM)) return run(cp, i, e, lm);
  if (!is_crlf(cp[i]) && !(f & (kFlagL | kFlagP | kFlagS)) && i + 1 < e && lm(cp[i + 1])) {
    return 1 + run(cp, i + 1, e, lm);
  }
  uint32_t start = (cp[i] == ' ' && i + 1 < e && ps(cp[i + 1])) ? i + 1 : i;
  if (ps(cp[start])) {
    uint32_t j = start + run(cp, start, e, ps);
    j += run(cp, j, e, is_crlf);
    return j - i;
  }
  return match_ws(cp, i, e, true);
}

uint32_t match_digit1(const uint32_t* cp, uint32_t i, uint32_t e) { return is_number(cp[i]) ? 1 : 0; }
uint32_t match_digit3(const uint32_t* cp, uint32_t i, uint32_t e) {
  return std::min<uint32_t>(3, run(cp, i, e, is_number));
}
uint32_t match_digits(const uint32_t* cp, uint32_t i, uint32_t e) { return run(cp, i, e, is_number); }
uint32_t match_crlf1(const uint32_t* cp, uint32_t i, uint32_t e) { return is_crlf(cp[i]) ? 1 : 0; }
// \s+$
uint32_t match_trailing_ws(const uint32_t* cp, uint32_t i, uint32_t e) {
  uint32_t n = run(cp, i, e, is_ws);
  return (n > 0 && i + n == e) ? n : 0;
}

struct Range {
  uint32_t lo, hi;
};
template <size_t N>
bool in_ranges(const Range (&r)[N], uint32_t c) {
  for (const Range& x : r) {
    if (c >= x.lo && c <= x.hi) return true;
  }
  return false;
}

// DeepSeek-LLM's letter class (cased letters, as listed in its tokenizer.json).
constexpr Range kDsLetters[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA}, {0x1BC, 0x1BF},
    {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D}, {0x37F, 0x37F},
    {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481},
    {0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA},
    {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D},
    {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D},
    {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC},
    {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102},
    {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126},
    {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149},
    {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3},
    {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF},
    {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF},
    {0x1E900, 0x1E943}};
constexpr Range kDsPunct[] = {{0x21, 0x2F}, {0x3A, 0x7E}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E}, {0x2018, 0x201F},
                              {0x3000, 0x3002}};
constexpr Range kDsCjk[] = {{0x4E00, 0x9FA5}, {0x0800, 0x4E00}, {0xAC00, 0xD7FF}};
constexpr Range kDsV3Cjk[] = {{0x4E00, 0x9FA5}, {0x3040, 0x309F}, {0x30A0, 0x30FF}};

bool ds_letter(uint32_t c) { return c < 0x80 ? is_ascii_alpha(c) : in_ranges(kDsLetters, c); }
bool ds_punct(uint32_t c) { return in_ranges(kDsPunct, c); }

// \s?[class]+
template <bool (*InClass)(uint32_t)>
uint32_t match_ws_opt_run(const uint32_t* cp, uint32_t i, uint32_t e) {
  if (is_ws(cp[i]) && i + 1 < e && InClass(cp[i + 1])) return 1 + run(cp, i + 1, e, InClass);
  return run(cp, i, e, InClass);
}
uint32_t match_ds_cjk(const uint32_t* cp, uint32_t i, uint32_t e) {
  return run(cp, i, e, [](uint32_t c) { return in_ranges(kDsCjk, c); });
}
uint32_t match_dsv3_cjk(const uint32_t* cp, uint32_t i, uint32_t e) {
  return run(cp, i, e, [](uint32_t c) { return in_ranges(kDsV3Cjk, c); });
}

// Split(Isolated): every match and every gap between matches becomes a piece.
void split_isolated(const uint32_t* cp, const std::vector<Span>& in, Matcher m, std::vector<Span>* out) {
  out->clear();
  for (const Span& s : in) {
    uint32_t gap = s.b, i = s.b;
    while (i < s.e) {
      uint32_t n = m(cp, i, s.e);
      if (n == 0) {
        ++i;
        continue;
      }
      if (gap < i) out->push_back({gap, i});
      out->push_back({i, i + n});
      i += n;
      gap = i;
    }
    if (gap < s.e) out->push_back({gap, s.e});
  }
}

std::vector<Matcher> matchers_for(PreTokenizer p) {
  switch (p) {
    case PreTokenizer::kGpt2: return {match_gpt2};
    case PreTokenizer::kLlama3: return {match_llama3<3>};
    case PreTokenizer::kQwen2: return {match_llama3<1>};
    case PreTokenizer::kSmollm: return {match_digit1, match_gpt2};
    case PreTokenizer::kDeepseekV3: return {match_digit3, match_dsv3_cjk, match_dsv3};
    case PreTokenizer::kDeepseekLlm:
      return {match_crlf1, match_ws_opt_run<ds_letter>, match_ws_opt_run<ds_punct>, match_trailing_ws, match_ds_cjk,
              match_digits};
  }
  return {match_gpt2};
}

}  // namespace

bool pre_tokenizer_from_name(const std::string& name, PreTokenizer* out) {
  static const std::pair<const char*, PreTokenizer> kNames[] = {
      {"default", PreTokenizer::kGpt2},        {"gpt2", PreTokenizer::kGpt2},
      {"gpt-2", PreTokenizer::kGpt2},          {"llama3", PreTokenizer::kLlama3},
      {"llama-bpe", PreTokenizer::kLlama3},    {"llama-v3", PreTokenizer::kLlama3},
      {"dbrx", PreTokenizer::kLlama3},         {"smaug-bpe", PreTokenizer::kLlama3},
      {"qwen2", PreTokenizer::kQwen2},         {"deepseek-r1-qwen", PreTokenizer::kQwen2},
      {"deepseek-llm", PreTokenizer::kDeepseekLlm}, {"deepseek-v3", PreTokenizer::kDeepseekV3},
      {"smollm", PreTokenizer::kSmollm},
  };
  for (const auto& [n, p] : kNames) {
    if (name == n) {
      *out = p;
      return true;
    }
  }
  return false;
}

const char* pre_tokenizer_name(PreTokenizer p) {
  switch (p) {
    case PreTokenizer::kGpt2: return "gpt2";
    case PreTokenizer::kLlama3: return "llama3";
    case PreTokenizer::kQwen2: return "qwen2";
    case PreTokenizer::kDeepseekLlm: return "deepseek-llm";
    case PreTokenizer::kDeepseekV3: return "deepseek-v3";
    case PreTokenizer::kSmollm: return "smollm";
  }
  return "?";
}

std::vector<std::pair<uint32_t, uint32_t>> pre_tokenize(PreTokenizer p, std::string_view text) {
  Codepoints cps;
  decode_codepoints(text, &cps);
  uint32_t n = static_cast<uint32_t>(cps.cp.size());
  std::vector<Span> a{{0, n}}, b;
  if (n == 0) a.clear();
  for (Matcher m : matchers_for(p)) {
    split_isolated(cps.cp.data(), a, m, &b);
    a.swap(b);
  }
  std::vector<std::pair<uint32_t, uint32_t>> out;
  out.reserve(a.size());
  for (const Span& s : a) out.emplace_back(cps.offset[s.b], cps.offset[s.e]);
  return out;
}

}  // namespace citadel::tok
