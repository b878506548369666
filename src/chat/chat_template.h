// Chat templates: a model's tokenizer.chat_template (Jinja) rendered byte-identically to HF apply_chat_template.
// Thread-safety: a parsed ChatTemplate is immutable; render() may run concurrently on one template.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "chat/jinja_ast.h"
#include "chat/jinja_eval.h"

namespace citadel::chat {

// Inputs of one render. JSON is ordered_json so key order (tojson output) matches Python dicts.
struct ChatInputs {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null: no tools (the template sees tools = none)
  bool add_generation_prompt = false;
  std::string bos_token;
  std::string eos_token;
  nlohmann::ordered_json extra_context = nlohmann::ordered_json::object();  // e.g. {"enable_thinking": false}
};

class ChatTemplate {
 public:
  // Parses template text; errors are "line L, column C: message".
  static Result<ChatTemplate> parse(std::string source);
  const std::string& source() const { return source_; }
  const StmtList& ast() const { return *ast_; }

 private:
  std::string source_;
  std::shared_ptr<const StmtList> ast_;
};

// Renders; template errors (including raise_exception) come back as kInvalidArgument (the API answers 400),
// limits as kResourceExhausted.
Result<std::string> render(const ChatTemplate& tmpl, const ChatInputs& inputs, const RenderLimits& limits = {});

}  // namespace citadel::chat
