// Evaluator of a parsed Jinja template over a context of Values, with hard limits so a hostile template cannot loop
// forever, exhaust memory or overflow the stack. Semantics follow jinja2's ImmutableSandboxedEnvironment with default
// Undefined, as transformers' apply_chat_template uses it.
// Thread-safety: render_template() is reentrant; the AST is read-only and may be shared across threads.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_ast.h"

namespace citadel::chat {

struct RenderLimits {
  int64_t max_steps = 2'000'000;       // expression evaluations + loop iterations
  size_t max_output_bytes = 8u << 20;  // rendered text and any single string value
  int max_depth = 100;                 // macro calls + expression nesting
};

// Renders `tmpl` with `globals` (name -> value) visible. Errors: "line L, column C: message".
Result<std::string> render_template(const StmtList& tmpl, const std::vector<std::pair<std::string, Value>>& globals,
                                    const RenderLimits& limits);

}  // namespace citadel::chat
