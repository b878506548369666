// WordPiece (BERT): BertNormalizer (clean text, pad CJK ideographs, strip accents via NFD, lowercase),
// BertPreTokenizer (split on whitespace, isolate punctuation), greedy longest-match with the "##" prefix.
#include "tokenizer/tokenizer_internal.h"
#include "tokenizer/unicode.h"

namespace citadel {
namespace {

bool is_cjk(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}
bool is_bert_punct(uint32_t c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126) ||
         (tok::cp_flags(c) & tok::kFlagP);
}

// BertNormalizer over codepoints.
std::vector<uint32_t> bert_normalize(const VocabSpec& s, std::string_view text) {
  tok::Codepoints cps;
  tok::decode_codepoints(text, &cps);
  std::vector<uint32_t> a, b;
  a.reserve(cps.cp.size());
  for (uint32_t c : cps.cp) {
    uint16_t f = tok::cp_flags(c);
    if (s.clean_text) {
      if (c == 0 || c == 0xFFFD || c == tok::kInvalidCp) continue;
      bool ws = c == ' ' || c == '\t' || c == '\n' || c == '\r' || (f & tok::kFlagZs);
      if (ws) {
        a.push_back(' ');
        continue;
      }
      if (f & tok::kFlagC) continue;
    }
    if (s.handle_chinese_chars && is_cjk(c)) {
      a.insert(a.end(), {' ', c, ' '});
    } else {
      a.push_back(c);
    }
  }
  if (s.strip_accents) {
    for (uint32_t c : a) {
      size_t k = b.size();
      tok::append_nfd(c, &b);
      size_t w = k;
      for (size_t r = k; r < b.size(); ++r) {
        if (!(tok::cp_flags(b[r]) & tok::kFlagMn)) b[w++] = b[r];
      }
      b.resize(w);
    }
    a.swap(b);
    b.clear();
  }
  if (s.lowercase) {
    for (uint32_t c : a) tok::append_lower(c, &b);
    a.swap(b);
  }
  return a;
}

}  // namespace

void Tokenizer::encode_wordpiece(std::string_view text, std::vector<int32_t>* out) const {
  std::vector<uint32_t> cps = bert_normalize(spec_, text);
  std::vector<std::string> words;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) words.push_back(std::move(cur));
    cur.clear();
  };
  for (uint32_t c : cps) {
    if (tok::cp_flags(c) & tok::kFlagSpace) {
      flush();
    } else if (is_bert_punct(c)) {
      flush();
      tok::utf8_append(c, &cur);
      flush();
    } else {
      tok::utf8_append(c, &cur);
    }
  }
  flush();
  std::vector<uint32_t> bounds;  // byte offset of each char boundary of the word
  std::vector<int32_t> pieces;
  std::string probe;
  for (const std::string& w : words) {
    bounds.clear();
    for (size_t i = 0; i < w.size();) {
      bounds.push_back(static_cast<uint32_t>(i));
      size_t len;
      tok::utf8_decode(w, i, &len);
      i += len;
    }
    bounds.push_back(static_cast<uint32_t>(w.size()));
    size_t nchar = bounds.size() - 1;
    if (static_cast<int64_t>(nchar) > spec_.max_input_chars_per_word) {
      if (spec_.unk >= 0) out->push_back(spec_.unk);
      continue;
    }
    pieces.clear();
    bool bad = false;
    for (size_t start = 0; start < nchar && !bad;) {
      int32_t found = -1;
      size_t end = nchar;
      for (; end > start; --end) {
        probe.clear();
        if (start > 0) probe = spec_.continuing_prefix;
        probe.append(w, bounds[start], bounds[end] - bounds[start]);
        found = token_id(probe);
        if (found >= 0) break;
      }
      if (found < 0) bad = true;
      else pieces.push_back(found);
      start = end;
    }
    if (bad) {
      if (spec_.unk >= 0) out->push_back(spec_.unk);
    } else {
      out->insert(out->end(), pieces.begin(), pieces.end());
    }
  }
}

std::string Tokenizer::decode_wordpiece(const std::vector<int32_t>& ids, bool skip_special) const {
  static const std::pair<const char*, const char*> kCleanup[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
      {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || id >= n_vocab()) continue;
    if (skip_special && is_special(id)) continue;
    std::string t = spec_.tokens[id];
    if (!first) {
      if (t.compare(0, spec_.continuing_prefix.size(), spec_.continuing_prefix) == 0) {
        t.erase(0, spec_.continuing_prefix.size());
      } else {
        t = " " + t;
      }
    }
    first = false;
    for (const auto& [from, to] : kCleanup) {
      std::string f(from);
      for (size_t p = t.find(f); p != std::string::npos; p = t.find(f, p + std::string(to).size())) {
        t.replace(p, f.size(), to);
      }
    }
    out += t;
  }
  return out;
}

}  // namespace citadel
