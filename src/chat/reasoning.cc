#include "chat/reasoning.h"

#include <algorithm>

namespace citadel::chat {
namespace {

constexpr const char kOpen[] = "<think>";
constexpr const char kClose[] = "</think>";

// Length of the longest suffix of s that is a proper prefix of tag (bytes that might become the tag).
size_t partial_suffix(const std::string& s, const std::string& tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (s.compare(s.size() - n, n, tag, 0, n) == 0) return n;
  return 0;
}

}  // namespace

void ReasoningSplitter::process(ReasoningDelta& d, bool final) {
  while (!pending_.empty()) {
    if (state_ == State::kStart) {
      // Leading whitespace before <think> is allowed; anything else means there is no think block.
      size_t ws = pending_.find_first_not_of(" \t\r\n");
      if (ws == std::string::npos) {
        if (final) { d.content += pending_; pending_.clear(); }
        return;
      }
      std::string rest = pending_.substr(ws);
      if (rest.compare(0, sizeof(kOpen) - 1, kOpen) == 0) {
        pending_ = rest.substr(sizeof(kOpen) - 1);
        state_ = State::kThinking;
        continue;
      }
      if (!final && std::string(kOpen).compare(0, rest.size(), rest) == 0) return;  // may still become <think>
      state_ = State::kContent;
      continue;
    }
    if (state_ == State::kContent) {
      d.content += pending_;
      pending_.clear();
      return;
    }
    size_t p = pending_.find(kClose);
    if (p != std::string::npos) {
      d.reasoning += pending_.substr(0, p);
      pending_ = pending_.substr(p + sizeof(kClose) - 1);
      state_ = State::kContent;
      continue;
    }
    size_t keep = final ? 0 : partial_suffix(pending_, kClose);
    d.reasoning += pending_.substr(0, pending_.size() - keep);
    pending_.erase(0, pending_.size() - keep);
    return;
  }
}

ReasoningDelta ReasoningSplitter::feed(const std::string& chunk) {
  ReasoningDelta d;
  pending_ += chunk;
  process(d, false);
  return d;
}

ReasoningDelta ReasoningSplitter::finish() {
  ReasoningDelta d;
  process(d, true);
  return d;
}

ReasoningDelta split_reasoning(const std::string& text, bool starts_in_think) {
  ReasoningSplitter s(starts_in_think);
  ReasoningDelta a = s.feed(text), b = s.finish();
  a.reasoning += b.reasoning;
  a.content += b.content;
  return a;
}

}  // namespace citadel::chat
