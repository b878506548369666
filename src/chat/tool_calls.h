// Tool-call parsing of Qwen2.5 / Hermes-style output: text with <tool_call>{"name": ..., "arguments": {...}}</tool_call>
// blocks. Returns the text outside the blocks as content and each block as a ToolCall with arguments re-serialized as
// a JSON string (the OpenAI wire shape).
// Thread-safety: pure function.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace citadel::chat {

struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text of the arguments object
};

struct ParsedToolCalls {
  std::string content;  // text outside <tool_call> blocks, trimmed
  std::vector<ToolCall> calls;
};

// Errors name the block index and what is wrong (bad JSON, missing name, unterminated block).
Result<ParsedToolCalls> parse_hermes_tool_calls(const std::string& text);

}  // namespace citadel::chat
