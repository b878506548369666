// Filters, tests, attribute/item access, operators and built-in global functions of the Jinja subset.
// Internal to src/chat: errors carry no position; the evaluator prefixes "line L, column C: ".
#pragma once

#include <string>

#include "chat/jinja_value.h"

namespace citadel::chat {

struct BuiltinLimits {
  size_t max_string_bytes;
};

Result<Value> apply_filter(const std::string& name, const Value& subject, const CallArgs& args,
                           const BuiltinLimits& limits);
Result<bool> apply_test(const std::string& name, const Value& v, const CallArgs& args);
bool has_test(const std::string& name);
// jinja2 getattr/getitem: a missing attribute or item is undefined; access on undefined is an error.
Result<Value> get_attr(const Value& obj, const std::string& name);
Result<Value> get_item(const Value& obj, const Value& key);
Result<Value> get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
Result<Value> binary_op(const std::string& op, const Value& a, const Value& b, const BuiltinLimits& limits);
// range, namespace, dict, raise_exception, strftime_now. Returns undefined for other names.
Value builtin_global(const std::string& name);
// Iteration as a Python for loop sees the value (dict -> keys, str -> characters, undefined -> nothing).
Result<Value::Array> iterate(const Value& v);

}  // namespace citadel::chat
