// StopStringMatcher: finds OpenAI-style stop strings in streamed, detokenized text, across token boundaries.
//
// Feed text pieces as they are detokenized; each feed returns the text that is safe to emit now. Text that could be
// the beginning of a stop string is held back until it is disambiguated. When a stop string is found, the text before
// it is emitted, the stop string and everything after are dropped, and stopped() becomes true (further feeds return
// nothing). At the end of a stream without a stop, flush() returns the held-back text.
// Engine-independent (works on bytes; UTF-8 safe as long as the stop strings are valid UTF-8, since a match or a held
// prefix never splits a stop string's own characters, and emitted text ends where held text starts).
// Thread-safety: one instance per stream, not shared.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace citadel::engine {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);

  // Appends text; returns what can be emitted now (possibly empty).
  std::string feed(std::string_view text);
  // Returns the held-back text at the end of the stream (empty once stopped).
  std::string flush();

  bool stopped() const { return stopped_; }
  // Index into the constructor's list of the stop string that matched; -1 if none.
  int matched_index() const { return matched_; }
  // Bytes currently held back.
  size_t held() const { return pending_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
  int matched_ = -1;
};

}  // namespace citadel::engine
