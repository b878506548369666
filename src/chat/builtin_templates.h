// Built-in chat templates for model files that carry none, selected by name. `--chat-template FILE` needs no help
// from here: any file text goes through ChatTemplate::parse.
#pragma once

#include <string>
#include <vector>

#include "chat/chat_template.h"

namespace citadel::chat {

// Names: "chatml", "llama3", "deepseek-r1" (R1-Distill), "gemma", "plain" (completion: contents joined by "\n").
std::vector<std::string> builtin_template_names();
// Returns the template source, or NotFound listing the known names.
Result<std::string> builtin_template_source(const std::string& name);
Result<ChatTemplate> builtin_template(const std::string& name);

}  // namespace citadel::chat
