#include "chat/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <ctime>

namespace citadel::chat {
namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2 sandbox MAX_RANGE

Status undefined_error() { return InvalidArgument("use of an undefined value"); }

std::string lower_str(const std::string& s) {
  std::string o = s;
  for (char& c : o) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}
std::string upper_str(const std::string& s) {
  std::string o = s;
  for (char& c : o) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return o;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` between every character
    std::vector<uint32_t> cps = utf8_decode(s);
    int64_t n = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || n < count) { out += to; ++n; }
      if (i < cps.size()) utf8_append(out, cps[i]);
    }
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t p = s.find(from, pos);
    if (p == std::string::npos) break;
    out += s.substr(pos, p - pos) + to;
    pos = p + from.size();
    ++n;
  }
  return out + s.substr(pos);
}

Value split_str(const std::string& s, const Value* sep, int64_t maxsplit) {
  Value::Array parts;
  if (!sep || sep->is_none()) {
    std::vector<uint32_t> cps = utf8_decode(s);
    size_t i = 0;
    while (true) {
      while (i < cps.size() && python_isspace(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > i && python_isspace(cps[e - 1])) --e;
        parts.emplace_back(utf8_encode(cps, i, e));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !python_isspace(cps[j])) ++j;
      parts.emplace_back(utf8_encode(cps, i, j));
      i = j;
    }
    return Value::array(std::move(parts));
  }
  const std::string& d = sep->str();
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
    size_t p = s.find(d, pos);
    if (p == std::string::npos) break;
    parts.emplace_back(s.substr(pos, p - pos));
    pos = p + d.size();
  }
  parts.emplace_back(s.substr(pos));
  return Value::array(std::move(parts));
}

std::string capitalize(const std::string& s) {
  std::string o = lower_str(s);
  if (!o.empty()) o[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(o[0])));
  return o;
}

std::string title(const std::string& s) {
  std::string o = s;
  bool prev_alpha = false;
  for (char& c : o) {
    unsigned char u = static_cast<unsigned char>(c);
    bool alpha = std::isalpha(u);
    c = static_cast<char>(alpha ? (prev_alpha ? std::tolower(u) : std::toupper(u)) : u);
    prev_alpha = alpha || u >= 0x80;
  }
  return o;
}

int64_t arg_int(const CallArgs& a, size_t pos, const char* name, int64_t def) {
  const Value* v = a.get(pos, name);
  return (v && v->is_number()) ? v->as_int() : def;
}

Result<Value> string_method(const std::string& s, const std::string& name, const CallArgs& a) {
  const Value* a0 = a.get(0, "chars");
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const std::string* chars = (a0 && a0->is_string()) ? &a0->str() : nullptr;
    return Value(python_strip(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "upper") return Value(upper_str(s));
  if (name == "lower") return Value(lower_str(s));
  if (name == "capitalize") return Value(capitalize(s));
  if (name == "title") return Value(title(s));
  if (name == "startswith" || name == "endswith") {
    const Value* p = a.get(0, "prefix");
    if (!p) return InvalidArgument(name + "() takes at least 1 argument");
    Value::Array opts = p->is_array() ? p->arr() : Value::Array{*p};
    for (const Value& o : opts) {
      if (!o.is_string()) return InvalidArgument(name + "() argument must be str");
      const std::string& x = o.str();
      if (x.size() <= s.size() &&
          (name == "startswith" ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0))
        return Value(true);
    }
    return Value(false);
  }
  if (name == "split") {
    const Value* sep = a.get(0, "sep");
    if (sep && !sep->is_none() && (!sep->is_string() || sep->str().empty()))
      return InvalidArgument("split(): separator must be a non-empty string");
    return split_str(s, sep, arg_int(a, 1, "maxsplit", -1));
  }
  if (name == "replace") {
    const Value* o = a.get(0, "old");
    const Value* n = a.get(1, "new");
    if (!o || !n || !o->is_string() || !n->is_string()) return InvalidArgument("replace() expects two strings");
    return Value(replace_all(s, o->str(), n->str(), arg_int(a, 2, "count", -1)));
  }
  if (name == "find" || name == "count") {
    if (!a0 || !a0->is_string()) return InvalidArgument(name + "() expects a string");
    if (name == "find") {
      size_t p = s.find(a0->str());
      if (p == std::string::npos) return Value(int64_t{-1});
      return Value(static_cast<int64_t>(utf8_decode(s.substr(0, p)).size()));
    }
    if (a0->str().empty()) return Value(static_cast<int64_t>(utf8_decode(s).size() + 1));
    int64_t n = 0;
    for (size_t p = s.find(a0->str()); p != std::string::npos; p = s.find(a0->str(), p + a0->str().size())) ++n;
    return Value(n);
  }
  if (name == "join") {
    if (!a0) return InvalidArgument("join() takes 1 argument");
    ASSIGN_OR_RETURN(Value::Array items, iterate(*a0));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) return InvalidArgument("join(): sequence item must be str");
      out += (i ? s : "") + items[i].str();
    }
    return Value(out);
  }
  return InvalidArgument("str object has no method '" + name + "'");
}

bool is_string_method(const std::string& n) {
  static const char* kNames[] = {"strip", "lstrip", "rstrip", "upper", "lower", "capitalize", "title", "startswith",
                                 "endswith", "split", "replace", "find", "count", "join"};
  for (const char* k : kNames) if (n == k) return true;
  return false;
}

Result<Value> dict_method(const Value& obj, const std::string& name, const CallArgs& a) {
  const auto& items = obj.obj().items;
  if (name == "get") {
    const Value* k = a.get(0, "key");
    if (!k) return InvalidArgument("get() takes at least 1 argument");
    const Value* def = a.get(1, "default");
    const Value* found = k->is_string() ? obj.obj().find(k->str()) : nullptr;
    return found ? *found : (def ? *def : Value::none());
  }
  Value::Array out;
  for (const auto& [k, v] : items) {
    if (name == "keys") out.emplace_back(k);
    else if (name == "values") out.push_back(v);
    else out.push_back(Value::array({Value(k), v}));
  }
  return Value::array(std::move(out));
}

Value bind(Value self, std::string name, bool dict) {
  return Value::callable([self = std::move(self), name = std::move(name), dict](const CallArgs& a) -> Result<Value> {
    if (dict) return dict_method(self, name, a);
    return string_method(self.str(), name, a);
  });
}

Result<int> compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() < b.as_float() ? -1 : a.as_float() > b.as_float() ? 1 : 0;
    return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str() ? -1 : a.str() > b.str() ? 1 : 0;
  if (a.is_undefined() || b.is_undefined()) return undefined_error();
  return InvalidArgument(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" +
                         b.type_name() + "'");
}

Result<Value> to_int(const Value& v, int64_t def) {
  if (v.is_number()) return Value(v.as_int());
  if (v.is_string()) {
    std::string s = python_strip(v.str(), nullptr, true, true);
    try {
      size_t used = 0;
      int64_t i = std::stoll(s, &used);
      if (used == s.size()) return Value(i);
      double d = std::stod(s, &used);
      if (used == s.size() && std::isfinite(d)) return Value(static_cast<int64_t>(d));
    } catch (...) {
    }
  }
  return Value(def);
}

// map/select helpers: attribute path "a.b" lookup.
Result<Value> attr_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    if (digits) { ASSIGN_OR_RETURN(cur, get_item(cur, Value(static_cast<int64_t>(std::stoll(part))))); }
    else { ASSIGN_OR_RETURN(cur, get_item(cur, Value(part))); }
    if (dot == std::string::npos) return cur;
    pos = dot + 1;
  }
}

Result<Value> select_filter(const std::string& name, const Value& subject, const CallArgs& args) {
  bool by_attr = name == "selectattr" || name == "rejectattr";
  bool keep_if = name == "select" || name == "selectattr";
  ASSIGN_OR_RETURN(Value::Array items, iterate(subject));
  size_t first = 0;
  std::string attr;
  if (by_attr) {
    if (args.positional.empty() || !args.positional[0].is_string())
      return InvalidArgument(name + " expects an attribute name");
    attr = args.positional[0].str();
    first = 1;
  }
  std::string test;
  CallArgs test_args;
  if (args.positional.size() > first) {
    if (!args.positional[first].is_string()) return InvalidArgument(name + " expects a test name");
    test = args.positional[first].str();
    test_args.positional.assign(args.positional.begin() + first + 1, args.positional.end());
  }
  Value::Array out;
  for (const Value& item : items) {
    Value v = item;
    if (by_attr) { ASSIGN_OR_RETURN(v, attr_path(item, attr)); }
    bool ok;
    if (test.empty()) ok = v.truthy();
    else { ASSIGN_OR_RETURN(ok, apply_test(test, v, test_args)); }
    if (ok == keep_if) out.push_back(item);
  }
  return Value::array(std::move(out));
}

}  // namespace

Result<Value::Array> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return Value::Array{};
    case Value::Kind::kArray: return v.arr();
    case Value::Kind::kObject: {
      Value::Array keys;
      for (const auto& kv : v.obj().items) keys.emplace_back(kv.first);
      return keys;
    }
    case Value::Kind::kString: {
      Value::Array chars;
      std::vector<uint32_t> cps = utf8_decode(v.str());
      for (size_t i = 0; i < cps.size(); ++i) chars.emplace_back(utf8_encode(cps, i, i + 1));
      return chars;
    }
    default: return InvalidArgument(std::string("'") + v.type_name() + "' object is not iterable");
  }
}

Result<Value> get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) return InvalidArgument("undefined value has no attribute '" + name + "'");
  if (obj.is_string() && is_string_method(name)) return bind(obj, name, false);
  if (obj.is_object()) {
    if (!obj.obj().is_namespace && (name == "get" || name == "items" || name == "keys" || name == "values"))
      return bind(obj, name, true);
    const Value* v = obj.obj().find(name);
    return v ? *v : Value();
  }
  return Value();
}

Result<Value> get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return InvalidArgument("undefined value is not subscriptable");
  if (obj.is_object()) {
    if (!key.is_string()) return Value();
    const Value* v = obj.obj().find(key.str());
    if (v) return *v;
    return get_attr(obj, key.str());
  }
  if ((obj.is_array() || obj.is_string()) && key.is_number() && !key.is_float()) {
    int64_t i = key.as_int();
    if (obj.is_array()) {
      int64_t n = static_cast<int64_t>(obj.arr().size());
      if (i < 0) i += n;
      return (i >= 0 && i < n) ? obj.arr()[i] : Value();
    }
    std::vector<uint32_t> cps = utf8_decode(obj.str());
    int64_t n = static_cast<int64_t>(cps.size());
    if (i < 0) i += n;
    return (i >= 0 && i < n) ? Value(utf8_encode(cps, i, i + 1)) : Value();
  }
  if (key.is_string()) return get_attr(obj, key.str());
  return Value();
}

Result<Value> get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) return undefined_error();
  for (const Value* v : {&start, &stop, &step})
    if (!v->is_undefined() && !v->is_none() && !(v->is_number() && !v->is_float()))
      return InvalidArgument("slice indices must be integers or None");
  int64_t st = (step.is_undefined() || step.is_none()) ? 1 : step.as_int();
  if (st == 0) return InvalidArgument("slice step cannot be zero");
  std::vector<uint32_t> cps;
  int64_t n;
  if (obj.is_array()) n = static_cast<int64_t>(obj.arr().size());
  else if (obj.is_string()) { cps = utf8_decode(obj.str()); n = static_cast<int64_t>(cps.size()); }
  else return InvalidArgument(std::string("'") + obj.type_name() + "' object is not subscriptable");
  auto norm = [&](const Value& v, int64_t def, bool is_start) {
    if (v.is_undefined() || v.is_none()) return def;
    int64_t i = v.as_int();
    if (i < 0) i += n;
    if (st > 0) return std::clamp<int64_t>(i, 0, n);
    (void)is_start;
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t b = norm(start, st > 0 ? 0 : n - 1, true), e = norm(stop, st > 0 ? n : -1, false);
  Value::Array out;
  std::string s;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) {
    if (obj.is_array()) out.push_back(obj.arr()[i]);
    else utf8_append(s, cps[i]);
  }
  return obj.is_array() ? Value::array(std::move(out)) : Value(std::move(s));
}

Result<Value> binary_op(const std::string& op, const Value& a, const Value& b, const BuiltinLimits& limits) {
  if (op == "~") {
    std::string s = a.to_str() + b.to_str();
    if (s.size() > limits.max_string_bytes) return ResourceExhausted("string exceeds the size limit");
    return Value(std::move(s));
  }
  if (op == "==") return Value(a.equals(b));
  if (op == "!=") return Value(!a.equals(b));
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string()) return InvalidArgument("'in <string>' requires string as left operand");
      found = b.str().find(a.str()) != std::string::npos;
    } else if (b.is_array()) {
      for (const Value& x : b.arr()) if (x.equals(a)) { found = true; break; }
    } else if (b.is_object()) {
      found = a.is_string() && b.obj().find(a.str()) != nullptr;
    } else if (!b.is_undefined()) {
      return InvalidArgument(std::string("argument of type '") + b.type_name() + "' is not iterable");
    }
    return Value(op == "in" ? found : !found);
  }
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    ASSIGN_OR_RETURN(int c, compare(a, b));
    return Value(op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0);
  }
  if (a.is_undefined() || b.is_undefined()) return undefined_error();
  if (a.is_number() && b.is_number()) {
    bool fl = a.is_float() || b.is_float();
    int64_t x = a.as_int(), y = b.as_int(), r = 0;
    double fx = a.as_float(), fy = b.as_float();
    if (op == "/") {
      if (fy == 0) return InvalidArgument("division by zero");
      return Value(fx / fy);
    }
    if (op == "**") {
      if (fl || y < 0) return Value(std::pow(fx, fy));
      r = 1;
      for (int64_t i = 0; i < y; ++i) {
        if (__builtin_mul_overflow(r, x, &r)) return InvalidArgument("integer overflow in **");
        if (r == 0 || r == 1) break;
      }
      return Value(r);
    }
    if ((op == "//" || op == "%") && (fl ? fy == 0 : y == 0)) return InvalidArgument("division by zero");
    if (fl) {
      if (op == "+") return Value(fx + fy);
      if (op == "-") return Value(fx - fy);
      if (op == "*") return Value(fx * fy);
      if (op == "//") return Value(std::floor(fx / fy));
      if (op == "%") { double m = std::fmod(fx, fy); if (m != 0 && ((m < 0) != (fy < 0))) m += fy; return Value(m); }
    } else {
      bool ovf = false;
      if (op == "+") ovf = __builtin_add_overflow(x, y, &r);
      else if (op == "-") ovf = __builtin_sub_overflow(x, y, &r);
      else if (op == "*") ovf = __builtin_mul_overflow(x, y, &r);
      else if (op == "//" || op == "%") {
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) { --q; m += y; }
        r = op == "//" ? q : m;
      }
      if (ovf) return InvalidArgument("integer overflow in " + op);
      return Value(r);
    }
  }
  if (op == "+" && a.is_string() && b.is_string()) {
    if (a.str().size() + b.str().size() > limits.max_string_bytes)
      return ResourceExhausted("string exceeds the size limit");
    return Value(a.str() + b.str());
  }
  if (op == "+" && a.is_array() && b.is_array()) {
    Value::Array out = a.arr();
    out.insert(out.end(), b.arr().begin(), b.arr().end());
    return Value::array(std::move(out));
  }
  if (op == "*" && (a.is_string() || a.is_array()) && b.is_number() && !b.is_float()) {
    int64_t n = std::max<int64_t>(0, b.as_int());
    size_t unit = a.is_string() ? a.str().size() : a.arr().size() * 16;
    if (unit && static_cast<uint64_t>(n) > limits.max_string_bytes / unit)
      return ResourceExhausted("repetition exceeds the size limit");
    if (a.is_string()) {
      std::string s;
      for (int64_t i = 0; i < n; ++i) s += a.str();
      return Value(std::move(s));
    }
    Value::Array out;
    for (int64_t i = 0; i < n; ++i) out.insert(out.end(), a.arr().begin(), a.arr().end());
    return Value::array(std::move(out));
  }
  if (op == "*" && b.is_string() && a.is_number()) return binary_op(op, b, a, limits);
  return InvalidArgument("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" +
                         b.type_name() + "'");
}

bool has_test(const std::string& n) {
  static const char* kNames[] = {"defined", "undefined", "none", "string", "number", "integer", "float", "mapping",
                                 "iterable", "sequence", "boolean", "true", "false", "odd", "even", "divisibleby",
                                 "equalto", "eq", "==", "ne", "!=", "lt", "gt", "le", "ge", "in", "callable",
                                 "lower", "upper", "sameas"};
  for (const char* k : kNames) if (n == k) return true;
  return false;
}

Result<bool> apply_test(const std::string& n, const Value& v, const CallArgs& args) {
  const Value* a0 = args.get(0, "value");
  if (n == "defined") return !v.is_undefined();
  if (n == "undefined") return v.is_undefined();
  if (n == "none") return v.is_none();
  if (n == "string") return v.is_string();
  if (n == "number") return v.is_number();
  if (n == "integer") return v.is_int();
  if (n == "float") return v.is_float();
  if (n == "boolean") return v.is_bool();
  if (n == "true") return v.is_bool() && v.as_bool();
  if (n == "false") return v.is_bool() && !v.as_bool();
  if (n == "mapping") return v.is_object() && !v.obj().is_namespace;
  if (n == "iterable") return v.is_string() || v.is_array() || v.is_object() || v.is_undefined();
  if (n == "sequence") return v.is_string() || v.is_array() || v.is_object() || v.is_undefined();
  if (n == "callable") return v.is_callable();
  if (n == "lower" || n == "upper") {
    if (!v.is_string()) return InvalidArgument("test '" + n + "' expects a string");
    return n == "lower" ? lower_str(v.str()) == v.str() : upper_str(v.str()) == v.str();
  }
  if (n == "odd" || n == "even" || n == "divisibleby") {
    if (!v.is_number()) return InvalidArgument("test '" + n + "' expects a number");
    int64_t x = v.as_int();
    if (n == "odd") return x % 2 != 0;
    if (n == "even") return x % 2 == 0;
    if (!a0 || !a0->is_number() || a0->as_int() == 0) return InvalidArgument("divisibleby expects a non-zero number");
    return x % a0->as_int() == 0;
  }
  if (!a0) return InvalidArgument("test '" + n + "' expects an argument");
  if (n == "equalto" || n == "eq" || n == "==" || n == "sameas") return v.equals(*a0);
  if (n == "ne" || n == "!=") return !v.equals(*a0);
  if (n == "in") { ASSIGN_OR_RETURN(Value r, binary_op("in", v, *a0, {1u << 30})); return r.truthy(); }
  if (n == "lt" || n == "gt" || n == "le" || n == "ge") {
    ASSIGN_OR_RETURN(int c, compare(v, *a0));
    return n == "lt" ? c < 0 : n == "gt" ? c > 0 : n == "le" ? c <= 0 : c >= 0;
  }
  return InvalidArgument("no test named '" + n + "'");
}

Result<Value> apply_filter(const std::string& n, const Value& v, const CallArgs& args, const BuiltinLimits& limits) {
  const Value* a0 = args.get(0, "");
  if (n == "safe") return v;
  if (n == "string") return Value(v.to_str());
  if (n == "trim") {
    const Value* chars = args.get(0, "chars");
    const std::string* cs = (chars && chars->is_string()) ? &chars->str() : nullptr;
    return Value(python_strip(v.to_str(), cs, true, true));
  }
  if (n == "upper") return Value(upper_str(v.to_str()));
  if (n == "lower") return Value(lower_str(v.to_str()));
  if (n == "capitalize") return Value(capitalize(v.to_str()));
  if (n == "title") return Value(title(v.to_str()));
  if (n == "length" || n == "count") {
    if (v.is_string()) return Value(static_cast<int64_t>(utf8_decode(v.str()).size()));
    if (v.is_array()) return Value(static_cast<int64_t>(v.arr().size()));
    if (v.is_object()) return Value(static_cast<int64_t>(v.obj().items.size()));
    if (v.is_undefined()) return Value(int64_t{0});
    return InvalidArgument(std::string("object of type '") + v.type_name() + "' has no len()");
  }
  if (n == "default" || n == "d") {
    const Value* def = args.get(0, "default_value");
    const Value* boolean = args.get(1, "boolean");
    bool use = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
    return use ? (def ? *def : Value("")) : v;
  }
  if (n == "first" || n == "last") {
    ASSIGN_OR_RETURN(Value::Array items, iterate(v));
    if (items.empty()) return Value();
    return n == "first" ? items.front() : items.back();
  }
  if (n == "join") {
    ASSIGN_OR_RETURN(Value::Array items, iterate(v));
    const Value* sep = args.get(0, "d");
    const Value* attr = args.get(1, "attribute");
    std::string s = sep ? sep->to_str() : "", out;
    for (size_t i = 0; i < items.size(); ++i) {
      Value item = items[i];
      if (attr) { ASSIGN_OR_RETURN(item, attr_path(item, attr->to_str())); }
      out += (i ? s : "") + item.to_str();
      if (out.size() > limits.max_string_bytes) return ResourceExhausted("string exceeds the size limit");
    }
    return Value(std::move(out));
  }
  if (n == "replace") {
    const Value* o = args.get(0, "old");
    const Value* nw = args.get(1, "new");
    if (!o || !nw) return InvalidArgument("replace expects two arguments");
    std::string r = replace_all(v.to_str(), o->to_str(), nw->to_str(), arg_int(args, 2, "count", -1));
    if (r.size() > limits.max_string_bytes) return ResourceExhausted("string exceeds the size limit");
    return Value(std::move(r));
  }
  if (n == "items") {
    if (v.is_undefined()) return Value::array();
    if (!v.is_object()) return InvalidArgument("items expects a mapping");
    return dict_method(v, "items", args);
  }
  if (n == "list") { ASSIGN_OR_RETURN(Value::Array items, iterate(v)); return Value::array(std::move(items)); }
  if (n == "int") return to_int(v, arg_int(args, 0, "default", 0));
  if (n == "float") {
    if (v.is_number()) return Value(v.as_float());
    try { return Value(std::stod(v.to_str())); } catch (...) { return Value(0.0); }
  }
  if (n == "abs") {
    if (v.is_float()) return Value(std::fabs(v.as_float()));
    if (v.is_number()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
    return InvalidArgument("bad operand type for abs()");
  }
  if (n == "reverse") {
    if (v.is_string()) {
      std::vector<uint32_t> cps = utf8_decode(v.str());
      std::reverse(cps.begin(), cps.end());
      return Value(utf8_encode(cps, 0, cps.size()));
    }
    ASSIGN_OR_RETURN(Value::Array items, iterate(v));
    std::reverse(items.begin(), items.end());
    return Value::array(std::move(items));
  }
  if (n == "unique") {
    ASSIGN_OR_RETURN(Value::Array items, iterate(v));
    Value::Array out;
    for (const Value& x : items)
      if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return y.equals(x); })) out.push_back(x);
    return Value::array(std::move(out));
  }
  if (n == "tojson") {
    const Value* indent = args.get(0, "indent");
    const Value* sort = args.get(3, "sort_keys");
    int ind = (indent && indent->is_number()) ? static_cast<int>(std::clamp<int64_t>(indent->as_int(), 0, 64)) : -1;
    ASSIGN_OR_RETURN(std::string s, python_json_dumps(v, ind, sort && sort->truthy()));
    if (s.size() > limits.max_string_bytes) return ResourceExhausted("string exceeds the size limit");
    return Value(std::move(s));
  }
  if (n == "map") {
    ASSIGN_OR_RETURN(Value::Array items, iterate(v));
    const Value* attr = nullptr;
    for (const auto& [k, val] : args.keyword) if (k == "attribute") attr = &val;
    Value::Array out;
    for (const Value& x : items) {
      if (attr) {
        ASSIGN_OR_RETURN(Value r, attr_path(x, attr->to_str()));
        out.push_back(std::move(r));
      } else {
        if (!a0 || !a0->is_string()) return InvalidArgument("map expects a filter name or attribute=");
        CallArgs rest;
        rest.positional.assign(args.positional.begin() + 1, args.positional.end());
        ASSIGN_OR_RETURN(Value r, apply_filter(a0->str(), x, rest, limits));
        out.push_back(std::move(r));
      }
    }
    return Value::array(std::move(out));
  }
  if (n == "select" || n == "reject" || n == "selectattr" || n == "rejectattr") return select_filter(n, v, args);
  return InvalidArgument("no filter named '" + n + "'");
}

Value builtin_global(const std::string& name) {
  if (name == "range") {
    return Value::callable([](const CallArgs& a) -> Result<Value> {
      int64_t start = 0, stop = 0, step = 1;
      for (const Value& v : a.positional)
        if (!v.is_number() || v.is_float()) return InvalidArgument("range() arguments must be integers");
      if (a.positional.size() == 1) stop = a.positional[0].as_int();
      else if (a.positional.size() >= 2) { start = a.positional[0].as_int(); stop = a.positional[1].as_int(); }
      else return InvalidArgument("range expected at least 1 argument");
      if (a.positional.size() >= 3) step = a.positional[2].as_int();
      if (step == 0) return InvalidArgument("range() arg 3 must not be zero");
      double count = std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step));
      if (count > kMaxRange)
        return ResourceExhausted("range too big: the sandbox blocks ranges larger than 100000 items");
      Value::Array out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.emplace_back(i);
      return Value::array(std::move(out));
    });
  }
  if (name == "namespace" || name == "dict") {
    bool ns = name == "namespace";
    return Value::callable([ns](const CallArgs& a) -> Result<Value> {
      Value::Object o;
      o.is_namespace = ns;
      for (const Value& p : a.positional) {
        if (!p.is_object()) return InvalidArgument("namespace()/dict() positional argument must be a mapping");
        for (const auto& [k, v] : p.obj().items) o.set(k, v);
      }
      for (const auto& [k, v] : a.keyword) o.set(k, v);
      return Value::object(std::move(o));
    });
  }
  if (name == "raise_exception") {
    return Value::callable([](const CallArgs& a) -> Result<Value> {
      const Value* m = a.get(0, "message");
      return InvalidArgument("template raised an exception: " + (m ? m->to_str() : std::string()));
    });
  }
  if (name == "strftime_now") {
    return Value::callable([](const CallArgs& a) -> Result<Value> {
      const Value* f = a.get(0, "format");
      if (!f || !f->is_string()) return InvalidArgument("strftime_now expects a format string");
      std::time_t t = std::time(nullptr);
      std::tm tm{};
      localtime_r(&t, &tm);
      char buf[512];
      size_t len = std::strftime(buf, sizeof buf, f->str().c_str(), &tm);
      return Value(std::string(buf, len));
    });
  }
  return Value();
}

}  // namespace citadel::chat
