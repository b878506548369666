// The built-in byte-level BPE vocab for synthetic models: GPT-2 byte map + merges learned by plain BPE training on
// a fixed text (ties broken by the pair's text, so the result is the same everywhere).
#include <map>
#include <utility>

#include "model/synth.h"

namespace citadel {
namespace {

constexpr int kMaxMerges = 300;

// Our own text (not from any corpus): enough repetition for a few hundred useful merges.
constexpr const char* kTrainText =
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs into the woods. "
    "A model reads the text, splits it into tokens, and predicts the next token from the tokens that came before. "
    "Tokens are pieces of words: the more often a piece appears, the sooner it becomes a token of its own. "
    "This is a small vocabulary for synthetic models that are used in tests and benchmarks. "
    "The server answers requests from many users at the same time; each request has a prompt and a response. "
    "The engine schedules the requests, runs the model on the device, and streams the tokens back to the users. "
    "When the memory is full, the scheduler waits, or it stops a request and starts it again later. "
    "Hello, world! How are you today? I am fine, thank you. What is the weather like in the city this morning? "
    "It is sunny and warm in the morning, and it will rain in the evening. The children are playing in the park. "
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14 42. Code: int main() { return 0; } if (x > 0) { y = x; } "
    "The answer is in the question, and the question is in the answer. Read the question, then write the answer. "
    "There is a house on the hill with a garden, a tree, and a small river that runs down to the sea. "
    "People who live there grow apples and pears, and in the winter they read books by the fire. "
    "Security matters: every request is checked, every key is stored safely, and every action is written to a log. "
    "Learning takes time. Practice every day, and the things that were hard become easy.\n"
    "User: Please summarise the following text in one sentence.\nAssistant: The text describes a simple system.\n";

std::vector<std::string> byte_symbols() {
  // GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100 + n in byte order.
  std::vector<std::string> sym(256);
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const uint32_t cp = keep ? static_cast<uint32_t>(b) : 256u + static_cast<uint32_t>(n++);
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    sym[b] = s;
  }
  return sym;
}

// Pre-tokenization for training: a run of letters/digits with its leading space, or a single other byte.
std::map<std::vector<std::string>, int> word_counts(const std::vector<std::string>& sym) {
  std::map<std::vector<std::string>, int> counts;
  const std::string text = kTrainText;
  size_t i = 0;
  auto alnum = [](unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  while (i < text.size()) {
    std::vector<std::string> w;
    size_t j = i;
    if (text[j] == ' ' && j + 1 < text.size() && alnum(text[j + 1])) w.push_back(sym[' ']), ++j;
    if (alnum(text[j])) {
      while (j < text.size() && alnum(text[j])) w.push_back(sym[static_cast<unsigned char>(text[j++])]);
    } else if (w.empty()) {
      w.push_back(sym[static_cast<unsigned char>(text[j++])]);
    }
    ++counts[w];
    i = j;
  }
  return counts;
}

BuiltinVocab build_vocab() {
  BuiltinVocab v;
  const auto sym = byte_symbols();
  v.tokens = sym;
  std::map<std::string, int> seen;
  for (int b = 0; b < 256; ++b) seen[sym[b]] = b;
  auto words = word_counts(sym);
  for (int m = 0; m < kMaxMerges; ++m) {
    std::map<std::pair<std::string, std::string>, int> pairs;
    for (const auto& [w, c] : words) {
      for (size_t k = 0; k + 1 < w.size(); ++k) pairs[{w[k], w[k + 1]}] += c;
    }
    const std::pair<std::string, std::string>* best = nullptr;
    int best_count = 1;  // a pair must occur at least twice
    for (const auto& [p, c] : pairs) {
      if (c > best_count) best = &p, best_count = c;  // std::map order breaks ties by text
    }
    if (!best) break;
    const auto [a, b] = *best;
    v.merges.push_back(a + " " + b);
    const std::string ab = a + b;
    if (!seen.count(ab)) {
      seen[ab] = static_cast<int>(v.tokens.size());
      v.tokens.push_back(ab);
    }
    std::map<std::vector<std::string>, int> next;
    for (const auto& [w, c] : words) {
      std::vector<std::string> nw;
      for (size_t k = 0; k < w.size(); ++k) {
        if (k + 1 < w.size() && w[k] == a && w[k + 1] == b) nw.push_back(ab), ++k;
        else nw.push_back(w[k]);
      }
      next[nw] += c;
    }
    words = std::move(next);
  }
  v.token_types.assign(v.tokens.size(), 1);
  const int32_t eot = static_cast<int32_t>(v.tokens.size());
  for (const char* s : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    v.tokens.push_back(s);
    v.token_types.push_back(3);
  }
  v.bos_id = eot;
  v.pad_id = eot;
  v.eos_id = eot + 2;
  return v;
}

}  // namespace

const BuiltinVocab& builtin_vocab() {
  static const BuiltinVocab kVocab = build_vocab();
  return kVocab;
}

}  // namespace citadel
