// Value: the dynamic type of the Jinja-subset engine (Python semantics as jinja2 sees them).
// Arrays and objects are shared by reference (like Python lists/dicts), so namespace() attributes set inside a loop are
// seen after it. Objects keep insertion order (tojson and items() must match Python dict order).
// Thread-safety: a Value tree is not synchronized; a render owns its values.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace citadel::chat {

class Value;

// Arguments of a call: positional, then keyword (name, value) in source order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // Returns the argument by position or keyword name, or nullptr.
  const Value* get(size_t pos, const char* name) const;
};

using Callable = std::function<Result<Value>(const CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kCallable };
  using Array = std::vector<Value>;
  struct Object {
    std::vector<std::pair<std::string, Value>> items;  // insertion order
    bool is_namespace = false;
    const Value* find(const std::string& key) const;
    void set(const std::string& key, Value v);
  };

  Value() = default;  // undefined
  static Value none() { Value v; v.kind_ = Kind::kNone; return v; }
  Value(bool b) : kind_(Kind::kBool), i_(b) {}
  Value(int v) : kind_(Kind::kInt), i_(v) {}
  Value(int64_t v) : kind_(Kind::kInt), i_(v) {}
  Value(double v) : kind_(Kind::kFloat), f_(v) {}
  Value(std::string s) : kind_(Kind::kString), s_(std::make_shared<std::string>(std::move(s))) {}
  Value(const char* s) : Value(std::string(s)) {}
  static Value array() { return array(Array{}); }
  static Value array(Array a);
  static Value object();
  static Value object(Object o);
  static Value callable(Callable fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_callable() const { return kind_ == Kind::kCallable; }

  bool as_bool() const { return i_ != 0; }
  int64_t as_int() const { return kind_ == Kind::kFloat ? static_cast<int64_t>(f_) : i_; }
  double as_float() const { return kind_ == Kind::kFloat ? f_ : static_cast<double>(i_); }
  const std::string& str() const { return *s_; }
  Array& arr() const { return *a_; }
  Object& obj() const { return *o_; }
  const Callable& fn() const { return *c_; }

  // Python truthiness.
  bool truthy() const;
  // str(value) as jinja2 prints it: undefined -> "", None -> "None", True -> "True", lists -> repr.
  std::string to_str() const;
  // Python repr().
  std::string repr() const;
  // Deep equality with Python rules (1 == 1.0, True == 1).
  bool equals(const Value& other) const;
  const char* type_name() const;

  static Value from_json(const nlohmann::ordered_json& j);

 private:
  Kind kind_ = Kind::kUndefined;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<std::string> s_;
  std::shared_ptr<Array> a_;
  std::shared_ptr<Object> o_;
  std::shared_ptr<Callable> c_;
};

// Python repr() of a float ("1.0", "1e-05", "1e+16", "inf", "nan").
std::string python_float_repr(double v);
// json.dumps(v, ensure_ascii=False, indent=indent (<0: None), separators=default, sort_keys=sort_keys).
Result<std::string> python_json_dumps(const Value& v, int indent, bool sort_keys);

// UTF-8 helpers: strings are UTF-8; Python indexes code points.
std::vector<uint32_t> utf8_decode(const std::string& s);
std::string utf8_encode(const std::vector<uint32_t>& cps, size_t begin, size_t end);
void utf8_append(std::string& out, uint32_t cp);
bool python_isspace(uint32_t cp);
// Python str.strip/lstrip/rstrip: chars == nullptr strips whitespace.
std::string python_strip(const std::string& s, const std::string* chars, bool left, bool right);

}  // namespace citadel::chat
