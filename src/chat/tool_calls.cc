#include "chat/tool_calls.h"

#include <nlohmann/json.hpp>

#include "chat/jinja_value.h"

namespace citadel::chat {

Result<ParsedToolCalls> parse_hermes_tool_calls(const std::string& text) {
  static const std::string kOpen = "<tool_call>", kClose = "</tool_call>";
  ParsedToolCalls out;
  std::string content;
  size_t pos = 0;
  for (int index = 0;; ++index) {
    size_t b = text.find(kOpen, pos);
    if (b == std::string::npos) { content += text.substr(pos); break; }
    content += text.substr(pos, b - pos);
    size_t e = text.find(kClose, b + kOpen.size());
    std::string where = "tool call " + std::to_string(index);
    if (e == std::string::npos) return InvalidArgument(where + ": unterminated <tool_call> block");
    std::string body = text.substr(b + kOpen.size(), e - b - kOpen.size());
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return InvalidArgument(where + ": body is not a JSON object");
    if (!j.contains("name") || !j["name"].is_string()) return InvalidArgument(where + ": missing string \"name\"");
    ToolCall call;
    call.name = j["name"].get<std::string>();
    const auto& args = j.contains("arguments") ? j["arguments"] : nlohmann::ordered_json::object();
    if (args.is_string()) {
      call.arguments = args.get<std::string>();
    } else {
      // Python json.dumps(ensure_ascii=False) form, as the OpenAI-compatible servers emit it.
      auto s = python_json_dumps(Value::from_json(args), -1, false);
      if (!s.ok()) return s.status().with_context(where);
      call.arguments = *s;
    }
    out.calls.push_back(std::move(call));
    pos = e + kClose.size();
  }
  out.content = python_strip(content, nullptr, true, true);
  return out;
}

}  // namespace citadel::chat
