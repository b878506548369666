// DeepSeek-R1 style output parsing: "<think>reasoning</think>answer" -> reasoning_content + content, one-shot or
// streamed. ReasoningSplitter accepts text chunks that may cut a tag anywhere and emits deltas; it holds back only
// the bytes that could still be the start of a tag.
// Thread-safety: a splitter belongs to one stream; not synchronized.
#pragma once

#include <string>

namespace citadel::chat {

struct ReasoningDelta {
  std::string reasoning;
  std::string content;
};

class ReasoningSplitter {
 public:
  // starts_in_think: the generation prompt already opened <think> (R1-Distill), so output begins inside the block.
  explicit ReasoningSplitter(bool starts_in_think = false)
      : state_(starts_in_think ? State::kThinking : State::kStart) {}

  ReasoningDelta feed(const std::string& chunk);
  // Flushes held-back bytes at end of stream.
  ReasoningDelta finish();

 private:
  enum class State { kStart, kThinking, kContent };
  void process(ReasoningDelta& d, bool final);

  State state_;
  std::string pending_;
};

// One-shot split of a complete output.
ReasoningDelta split_reasoning(const std::string& text, bool starts_in_think = false);

}  // namespace citadel::chat
