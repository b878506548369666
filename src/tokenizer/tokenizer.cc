#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>

#include "tokenizer/tokenizer_internal.h"
#include "tokenizer/unicode.h"

namespace citadel {

ByteMap::ByteMap() {
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    uint32_t cp = printable ? b : 256 + n++;
    tok::utf8_append(cp, &byte_to_utf8[b]);
    cp_to_byte[cp] = static_cast<uint8_t>(b);
  }
}

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_spec(VocabSpec spec) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->spec_ = std::move(spec);
  RETURN_IF_ERROR(t->init());
  return t;
}

Status Tokenizer::init() {
  VocabSpec& s = spec_;
  const size_t n = s.tokens.size();
  if (n == 0) return InvalidArgument("tokenizer: empty vocabulary");
  if (n > (1u << 24)) return InvalidArgument("tokenizer: vocabulary too large (" + std::to_string(n) + ")");
  if (s.types.empty()) s.types.assign(n, TokenType::kNormal);
  if (s.types.size() != n) return InvalidArgument("tokenizer: token_type has " + std::to_string(s.types.size()) +
                                                  " entries for " + std::to_string(n) + " tokens");
  if (!s.scores.empty() && s.scores.size() != n) return InvalidArgument("tokenizer: scores length != tokens");
  for (int32_t* id : {&s.bos, &s.eos, &s.eot, &s.eom, &s.pad, &s.unk, &s.sep, &s.cls}) {
    if (*id >= static_cast<int64_t>(n) || *id < -1) *id = -1;  // out-of-range special ids are treated as absent
  }
  token_to_id_.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) token_to_id_.emplace(s.tokens[i], static_cast<int32_t>(i));

  is_eog_.assign(n, 0);
  for (int32_t id : {s.eos, s.eot, s.eom}) {
    if (id >= 0) is_eog_[id] = 1;
  }
  static const char* kEogTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                    "<|eom_id|>", "<EOT>", "<|end_of_text|>",
                                    "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"};
  for (const char* t : kEogTexts) {
    auto it = token_to_id_.find(t);
    if (it != token_to_id_.end() && s.types[it->second] == TokenType::kControl) is_eog_[it->second] = 1;
  }

  for (size_t i = 0; i < n; ++i) {
    if ((s.types[i] == TokenType::kControl || s.types[i] == TokenType::kUserDefined) && !s.tokens[i].empty()) {
      specials_.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(specials_.begin(), specials_.end(),
                   [&](int32_t a, int32_t b) { return s.tokens[a].size() > s.tokens[b].size(); });
  for (int32_t id : specials_) specials_by_byte_[static_cast<uint8_t>(s.tokens[id][0])].push_back(id);
  std::fill(std::begin(byte_tokens_), std::end(byte_tokens_), -1);

  if (s.kind == TokenizerKind::kBpe) {
    if (!tok::pre_tokenizer_from_name(s.pre, &pre_)) {
      return Unsupported("tokenizer: unknown pre-tokenizer '" + s.pre + "' (tokenizer.ggml.pre)");
    }
    bpe_ = std::make_unique<Bpe>();
    const ByteMap& bm = byte_map();
    for (int b = 0; b < 256; ++b) bpe_->byte_ids[b] = token_id(bm.byte_to_utf8[b]);
    bpe_->merges.reserve(s.merges.size() * 2);
    for (size_t r = 0; r < s.merges.size(); ++r) {
      const std::string& m = s.merges[r];
      size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) return InvalidArgument("tokenizer: merge " + std::to_string(r) + " has no space");
      std::string left = m.substr(0, sp), right = m.substr(sp + 1);
      int32_t l = token_id(left), rt = token_id(right), res = token_id(left + right);
      if (l < 0 || rt < 0 || res < 0) continue;  // merges of tokens outside the vocab can never apply
      uint64_t key = (static_cast<uint64_t>(l) << 32) | static_cast<uint32_t>(rt);
      bpe_->merges.emplace(key, Bpe::Merge{static_cast<int32_t>(r), res});  // first (lowest rank) wins
    }
  } else if (s.kind == TokenizerKind::kSpm) {
    if (s.scores.empty()) s.scores.assign(n, 0.0f);
    spm_ = std::make_unique<Spm>();
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      byte_tokens_[b] = token_id(name);
    }
  } else {
    if (s.unk < 0) s.unk = token_id("[UNK]");
    if (s.cls < 0) s.cls = token_id("[CLS]");
    if (s.sep < 0) s.sep = token_id("[SEP]");
  }
  return OkStatus();
}

int32_t Tokenizer::token_id(std::string_view text) const {
  auto it = token_to_id_.find(std::string(text));
  return it == token_to_id_.end() ? -1 : it->second;
}

const std::string& Tokenizer::token_text(int32_t id) const {
  static const std::string kEmpty;
  return (id >= 0 && id < n_vocab()) ? spec_.tokens[id] : kEmpty;
}

TokenType Tokenizer::token_type(int32_t id) const {
  return (id >= 0 && id < n_vocab()) ? spec_.types[id] : TokenType::kUndefined;
}

bool Tokenizer::is_eog(int32_t id) const { return id >= 0 && id < n_vocab() && is_eog_[id]; }

bool Tokenizer::is_special(int32_t id) const {
  TokenType t = token_type(id);
  return t == TokenType::kControl || (spec_.kind == TokenizerKind::kWordPiece && t == TokenType::kUnknown);
}

template <typename F>
void Tokenizer::split_specials(std::string_view text, bool parse_special, F&& emit) const {
  size_t start = 0, i = 0;
  while (i < text.size()) {
    int32_t found = -1;
    for (int32_t id : specials_by_byte_[static_cast<uint8_t>(text[i])]) {  // longest first
      if (!parse_special && spec_.types[id] == TokenType::kControl) continue;
      const std::string& t = spec_.tokens[id];
      if (t.size() <= text.size() - i && text.compare(i, t.size(), t) == 0) {
        found = id;
        break;
      }
    }
    if (found < 0) {
      ++i;
      continue;
    }
    if (start < i) emit(text.substr(start, i - start), -1);
    emit(std::string_view(), found);
    i += spec_.tokens[found].size();
    start = i;
  }
  if (start < text.size()) emit(text.substr(start), -1);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> out;
  if (spec_.kind == TokenizerKind::kWordPiece) {
    if (add_special && spec_.cls >= 0) out.push_back(spec_.cls);
    split_specials(text, parse_special, [&](std::string_view t, int32_t id) {
      if (id >= 0) out.push_back(id); else encode_wordpiece(t, &out);
    });
    if (add_special && spec_.sep >= 0) {
      if (spec_.max_length > 1 && out.size() + 1 > static_cast<size_t>(spec_.max_length)) {
        out.resize(spec_.max_length - 1);
      }
      out.push_back(spec_.sep);
    }
    return out;
  }
  if (add_special && spec_.add_bos && spec_.bos >= 0) out.push_back(spec_.bos);
  bool at_start = true;
  split_specials(text, parse_special, [&](std::string_view t, int32_t id) {
    if (id >= 0) {
      out.push_back(id);
    } else if (spec_.kind == TokenizerKind::kBpe) {
      encode_bpe(t, &out);
    } else {
      encode_spm(t, at_start, &out);
    }
    at_start = false;
  });
  if (add_special && spec_.add_eos && spec_.eos >= 0) out.push_back(spec_.eos);
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return {};
  const std::string& text = spec_.tokens[id];
  TokenType type = spec_.types[id];
  if (type == TokenType::kControl || type == TokenType::kUserDefined || type == TokenType::kUnknown ||
      spec_.kind == TokenizerKind::kWordPiece) {
    return text;
  }
  std::string out;
  if (spec_.kind == TokenizerKind::kBpe) {
    const ByteMap& bm = byte_map();
    for (size_t i = 0; i < text.size();) {
      size_t len;
      uint32_t cp = tok::utf8_decode(text, i, &len);
      auto it = bm.cp_to_byte.find(cp);
      if (it != bm.cp_to_byte.end()) out.push_back(static_cast<char>(it->second));
      else out.append(text, i, len);  // not a byte-level char: keep as is
      i += len;
    }
    return out;
  }
  // SPM
  if (type == TokenType::kByte && text.size() == 6 && text.compare(0, 3, "<0x") == 0) {
    auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1; };
    int hi = hex(text[3]), lo = hex(text[4]);
    if (hi >= 0 && lo >= 0) return std::string(1, static_cast<char>(hi * 16 + lo));
  }
  static const std::string kSpace = "\xE2\x96\x81";
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 3, kSpace) == 0) {
      out.push_back(' ');
      i += 3;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  if (spec_.kind == TokenizerKind::kWordPiece) return decode_wordpiece(ids, skip_special);
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || id >= n_vocab()) continue;
    if (skip_special && is_special(id)) continue;
    std::string piece = token_to_piece(id);
    if (first && spec_.kind == TokenizerKind::kSpm && spec_.add_space_prefix && !piece.empty() && piece[0] == ' ') {
      piece.erase(0, 1);  // the space the encoder prepended
    }
    first = false;
    out += piece;
  }
  return out;
}

// ---- IncrementalDecoder ----

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tok, bool skip_special) : tok_(tok), skip_special_(skip_special) {}

namespace {
// Length of the prefix of s that does not end inside a UTF-8 sequence that could still be completed.
size_t complete_prefix(const std::string& s) {
  size_t n = s.size();
  // Look back at most 3 bytes for a lead byte whose sequence is not finished yet.
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    uint8_t b = static_cast<uint8_t>(s[n - k]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    int len = tok::utf8_seq_len(b);
    if (len > static_cast<int>(k)) {
      // Hold back only if the bytes so far are valid continuations.
      for (size_t j = n - k + 1; j < n; ++j) {
        if ((static_cast<uint8_t>(s[j]) & 0xC0) != 0x80) return n;
      }
      return n - k;
    }
    return n;
  }
  return n;
}
}  // namespace

std::string IncrementalDecoder::push(int32_t id) {
  if (tok_.kind() == TokenizerKind::kWordPiece) {
    wordpiece_ids_.push_back(id);
    return {};
  }
  if (id < 0 || id >= tok_.n_vocab()) return {};
  if (skip_special_ && tok_.is_special(id)) return {};
  std::string piece = tok_.token_to_piece(id);
  if (first_ && tok_.kind() == TokenizerKind::kSpm && tok_.spec().add_space_prefix && !piece.empty() &&
      piece[0] == ' ') {
    piece.erase(0, 1);
  }
  first_ = false;
  pending_ += piece;
  size_t k = complete_prefix(pending_);
  std::string out = pending_.substr(0, k);
  pending_.erase(0, k);
  return out;
}

std::string IncrementalDecoder::flush() {
  if (tok_.kind() == TokenizerKind::kWordPiece) {
    std::string s = tok_.decode(wordpiece_ids_, skip_special_);
    wordpiece_ids_.clear();
    return s;
  }
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace citadel
