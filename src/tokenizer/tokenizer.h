// Tokenizer: text <-> token ids, identical to the reference implementations (HF tokenizers / sentencepiece) for
//   - byte-level BPE (tokenizer.ggml.model "gpt2": GPT-2, Llama-3, Qwen2, DeepSeek, SmolLM2) with the family's
//     pre-tokenizer (tokenizer.ggml.pre),
//   - SentencePiece BPE (model "llama": Llama-2, Gemma): score-ordered merges, U+2581 for spaces, <0xXX> fallback,
//   - WordPiece (BERT / MiniLM, from tokenizer.json).
// Special tokens: control tokens (type 3) are matched in the text only when parse_special is set; user-defined
// tokens (type 4) are always matched; both before pre-tokenization, longest match first.
// Thread-safety: a Tokenizer is immutable after construction except for its internal word cache, which is locked;
// every const method may be called from any thread. IncrementalDecoder is per stream (not thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "tokenizer/pretokenize.h"

namespace citadel {

class TensorStore;
using tok::PreTokenizer;

enum class TokenizerKind { kBpe, kSpm, kWordPiece };

// GGUF token types (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

// Everything a tokenizer is built from, whatever the file (GGUF metadata or tokenizer.json).
struct VocabSpec {
  TokenizerKind kind = TokenizerKind::kBpe;
  std::string pre = "default";             // tokenizer.ggml.pre (BPE only)
  std::vector<std::string> tokens;         // [n_vocab] token text (byte-level mapped for BPE, U+2581 for SPM)
  std::vector<TokenType> types;            // [n_vocab]; empty = all normal
  std::vector<float> scores;               // [n_vocab] SPM merge priorities; empty for BPE
  std::vector<std::string> merges;         // [n_merges] "left right", rank = position (BPE)
  int32_t bos = -1, eos = -1, eot = -1, eom = -1, pad = -1, unk = -1, sep = -1, cls = -1;
  bool add_bos = false, add_eos = false;
  bool add_space_prefix = false;  // SPM: prepend U+2581 to the text
  bool ignore_merges = false;     // BPE: a word already in the vocab is one token (Llama-3)
  // WordPiece (BertNormalizer + BertPreTokenizer + TemplateProcessing [CLS] A [SEP]).
  bool lowercase = true, strip_accents = true, handle_chinese_chars = true, clean_text = true;
  std::string continuing_prefix = "##";
  int32_t max_input_chars_per_word = 100;
  int32_t max_length = 0;  // truncation incl. [CLS]/[SEP]; 0 = none
};

class Tokenizer {
 public:
  // Builds from a validated spec; errors name the first inconsistency (bad id, merge of unknown tokens, ...).
  static Result<std::unique_ptr<Tokenizer>> from_spec(VocabSpec spec);
  // From a GGUF model's metadata (tokenizer.ggml.*).
  static Result<std::unique_ptr<Tokenizer>> from_store(const TensorStore& store);
  // Reads only the header + metadata of a GGUF file (tensor data may be absent: split files, vocab-only files).
  static Result<std::unique_ptr<Tokenizer>> from_gguf_file(const std::string& path);
  // From an HF tokenizer.json (WordPiece; byte-level BPE with a known pre-tokenizer).
  static Result<std::unique_ptr<Tokenizer>> from_hf_json(const std::string& path);
  // Same, from the JSON text itself; `name` is used in error messages.
  static Result<std::unique_ptr<Tokenizer>> from_hf_json_text(const std::string& json_text, const std::string& name);
  // By content: a directory or *.json -> tokenizer.json, else GGUF.
  static Result<std::unique_ptr<Tokenizer>> from_path(const std::string& path);

  // add_special: BOS/EOS per the model's flags (CLS/SEP + truncation for WordPiece).
  std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool parse_special = false) const;
  // Bytes of the ids, concatenated (may be invalid UTF-8 if the ids split a character). Unknown ids are skipped.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The bytes one token stands for (byte-level mapping undone, U+2581 -> space, <0xXX> -> byte).
  std::string token_to_piece(int32_t id) const;
  const std::string& token_text(int32_t id) const;  // raw vocab entry
  int32_t token_id(std::string_view text) const;     // -1 if absent

  int32_t n_vocab() const { return static_cast<int32_t>(spec_.tokens.size()); }
  TokenizerKind kind() const { return spec_.kind; }
  PreTokenizer pre_tokenizer() const { return pre_; }
  int32_t bos_id() const { return spec_.bos; }
  int32_t eos_id() const { return spec_.eos; }
  int32_t eot_id() const { return spec_.eot; }
  int32_t pad_id() const { return spec_.pad; }
  bool add_bos() const { return spec_.add_bos; }
  bool is_eog(int32_t id) const;      // end of generation: eos, eot, eom, <|im_end|>, <end_of_turn>, ...
  bool is_special(int32_t id) const;  // control tokens (skipped by decode(skip_special))
  TokenType token_type(int32_t id) const;
  const VocabSpec& spec() const { return spec_; }
  // Drops the BPE word cache (benchmarks measure cold encoding with it).
  void clear_cache() const;

  ~Tokenizer();

  struct Bpe;  // implementation details (tokenizer_internal.h)
  struct Spm;

 private:
  friend class IncrementalDecoder;
  Tokenizer() = default;
  Status init();

  // Splits text into runs of plain text and matched special tokens; calls emit(text, -1) or emit({}, id).
  template <typename F>
  void split_specials(std::string_view text, bool parse_special, F&& emit) const;
  void encode_bpe(std::string_view text, std::vector<int32_t>* out) const;
  void encode_spm(std::string_view text, bool at_start, std::vector<int32_t>* out) const;
  void encode_wordpiece(std::string_view text, std::vector<int32_t>* out) const;
  std::string decode_wordpiece(const std::vector<int32_t>& ids, bool skip_special) const;

  VocabSpec spec_;
  PreTokenizer pre_ = PreTokenizer::kGpt2;
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<int32_t> specials_;  // control + user-defined ids, longest text first
  std::vector<int32_t> specials_by_byte_[256];  // the same, bucketed by first byte
  std::vector<uint8_t> is_eog_;    // [n_vocab]
  std::unique_ptr<Bpe> bpe_;
  std::unique_ptr<Spm> spm_;
  int32_t byte_tokens_[256];  // SPM <0xXX> ids, -1 if absent
};

// Streaming detokenizer: push ids one at a time, get text that never ends in half a UTF-8 character (an
// incomplete tail is held back until the next push or flush). Concatenated output == Tokenizer::decode(all ids).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tok, bool skip_special = true);
  std::string push(int32_t id);
  std::string flush();  // whatever is held back (possibly an invalid tail)

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
  std::vector<int32_t> wordpiece_ids_;  // WordPiece joins with spaces and cleans up: decoded at flush
};

}  // namespace citadel
