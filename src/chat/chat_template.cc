#include "chat/chat_template.h"

namespace citadel::chat {

Result<ChatTemplate> ChatTemplate::parse(std::string source) {
  ChatTemplate t;
  ASSIGN_OR_RETURN(auto ast, parse_template(source));
  t.ast_ = std::move(ast);
  t.source_ = std::move(source);
  return t;
}

Result<std::string> render(const ChatTemplate& tmpl, const ChatInputs& in, const RenderLimits& limits) {
  if (!in.messages.is_array()) return InvalidArgument("chat template: messages must be an array");
  // The same variables transformers passes: messages, tools, documents, add_generation_prompt, special tokens, extras.
  std::vector<std::pair<std::string, Value>> globals;
  globals.emplace_back("messages", Value::from_json(in.messages));
  globals.emplace_back("tools", in.tools.is_null() ? Value::none() : Value::from_json(in.tools));
  globals.emplace_back("documents", Value::none());
  globals.emplace_back("add_generation_prompt", Value(in.add_generation_prompt));
  globals.emplace_back("bos_token", Value(in.bos_token));
  globals.emplace_back("eos_token", Value(in.eos_token));
  if (in.extra_context.is_object())
    for (auto it = in.extra_context.begin(); it != in.extra_context.end(); ++it)
      globals.emplace_back(it.key(), Value::from_json(it.value()));
  auto r = render_template(tmpl.ast(), globals, limits);
  if (!r.ok()) return r.status().with_context("chat template");
  return r;
}

}  // namespace citadel::chat
