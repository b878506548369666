#include "chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace citadel::chat {

const Value* CallArgs::get(size_t pos, const char* name) const {
  if (pos < positional.size()) return &positional[pos];
  for (const auto& [k, v] : keyword)
    if (k == name) return &v;
  return nullptr;
}

const Value* Value::Object::find(const std::string& key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

void Value::Object::set(const std::string& key, Value v) {
  for (auto& [k, old] : items)
    if (k == key) { old = std::move(v); return; }
  items.emplace_back(key, std::move(v));
}

Value Value::array(Array a) {
  Value v; v.kind_ = Kind::kArray; v.a_ = std::make_shared<Array>(std::move(a)); return v;
}
Value Value::object() { return object(Object{}); }
Value Value::object(Object o) {
  Value v; v.kind_ = Kind::kObject; v.o_ = std::make_shared<Object>(std::move(o)); return v;
}
Value Value::callable(Callable fn) {
  Value v; v.kind_ = Kind::kCallable; v.c_ = std::make_shared<Callable>(std::move(fn)); return v;
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined: case Kind::kNone: return false;
    case Kind::kBool: case Kind::kInt: return i_ != 0;
    case Kind::kFloat: return f_ != 0.0;
    case Kind::kString: return !s_->empty();
    case Kind::kArray: return !a_->empty();
    case Kind::kObject: return !o_->items.empty();
    case Kind::kCallable: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kArray: return "list";
    case Kind::kObject: return o_->is_namespace ? "Namespace" : "dict";
    case Kind::kCallable: return "function";
  }
  return "?";
}

std::string python_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-d.ddde+XX"
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t e = sci.find('e');
  int exp = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : sci.substr(0, e)) if (c != '.') digits += c;
  std::string out;
  if (exp >= -5 + 1 && exp < 16) {  // Python repr: fixed for -4 <= exp < 16
    if (exp >= 0) {
      if (static_cast<int>(digits.size()) <= exp + 1) {
        out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
      }
    } else {
      out = "0." + std::string(-exp - 1, '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out.append(".").append(digits, 1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return neg ? "-" + out : out;
}

static std::string repr_string(const std::string& s) {
  bool has_sq = s.find('\'') != std::string::npos, has_dq = s.find('"') != std::string::npos;
  char q = (has_sq && !has_dq) ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == static_cast<unsigned char>(q)) { out += '\\'; out += q; }
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) { char b[8]; std::snprintf(b, sizeof b, "\\x%02x", c); out += b; }
    else out += static_cast<char>(c);
  }
  return out + q;
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::kString: return repr_string(*s_);
    case Kind::kArray: {
      std::string out = "[";
      for (size_t i = 0; i < a_->size(); ++i) out += (i ? ", " : "") + (*a_)[i].repr();
      return out + "]";
    }
    case Kind::kObject: {
      if (o_->is_namespace) return "<Namespace>";
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : o_->items) {
        out += (first ? "" : ", ") + repr_string(k) + ": " + v.repr();
        first = false;
      }
      return out + "}";
    }
    default: return to_str();
  }
}

std::string Value::to_str() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return i_ ? "True" : "False";
    case Kind::kInt: return std::to_string(i_);
    case Kind::kFloat: return python_float_repr(f_);
    case Kind::kString: return *s_;
    case Kind::kCallable: return "<function>";
    default: return repr();
  }
}

bool Value::equals(const Value& o) const {
  if (is_number() && o.is_number()) {
    if (is_float() || o.is_float()) return as_float() == o.as_float();
    return i_ == o.i_;
  }
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined: case Kind::kNone: return true;
    case Kind::kString: return *s_ == *o.s_;
    case Kind::kArray: {
      if (a_->size() != o.a_->size()) return false;
      for (size_t i = 0; i < a_->size(); ++i)
        if (!(*a_)[i].equals((*o.a_)[i])) return false;
      return true;
    }
    case Kind::kObject: {
      if (o_->items.size() != o.o_->items.size()) return false;
      for (const auto& [k, v] : o_->items) {
        const Value* ov = o.o_->find(k);
        if (!ov || !v.equals(*ov)) return false;
      }
      return true;
    }
    case Kind::kCallable: return c_ == o.c_;
    default: return false;
  }
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      a.reserve(j.size());
      for (const auto& e : j) a.push_back(from_json(e));
      return array(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object o;
      for (auto it = j.begin(); it != j.end(); ++it) o.set(it.key(), from_json(it.value()));
      return object(std::move(o));
    }
    default: return none();
  }
}

static void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out += b; }
        else out += static_cast<char>(c);
    }
  }
  out += '"';
}

static Status dumps(std::string& out, const Value& v, int indent, bool sort_keys, int depth) {
  if (depth > 64) return InvalidArgument("tojson: nesting deeper than 64");
  auto newline = [&](int d) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent) * d, ' ');
  };
  const char* item_sep = indent < 0 ? ", " : ",";
  switch (v.kind()) {
    case Value::Kind::kNone: out += "null"; return OkStatus();
    case Value::Kind::kBool: out += v.as_bool() ? "true" : "false"; return OkStatus();
    case Value::Kind::kInt: out += std::to_string(v.as_int()); return OkStatus();
    case Value::Kind::kFloat: {
      double f = v.as_float();
      if (std::isnan(f)) out += "NaN";
      else if (std::isinf(f)) out += f > 0 ? "Infinity" : "-Infinity";
      else out += python_float_repr(f);
      return OkStatus();
    }
    case Value::Kind::kString: json_string(out, v.str()); return OkStatus();
    case Value::Kind::kArray: {
      if (v.arr().empty()) { out += "[]"; return OkStatus(); }
      out += '[';
      for (size_t i = 0; i < v.arr().size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        RETURN_IF_ERROR(dumps(out, v.arr()[i], indent, sort_keys, depth + 1));
      }
      newline(depth);
      out += ']';
      return OkStatus();
    }
    case Value::Kind::kObject: {
      if (v.obj().is_namespace) return InvalidArgument("tojson: Object of type Namespace is not JSON serializable");
      if (v.obj().items.empty()) { out += "{}"; return OkStatus(); }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.obj().items) items.push_back(&kv);
      if (sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        json_string(out, items[i]->first);
        out += ": ";
        RETURN_IF_ERROR(dumps(out, items[i]->second, indent, sort_keys, depth + 1));
      }
      newline(depth);
      out += '}';
      return OkStatus();
    }
    default:
      return InvalidArgument(std::string("tojson: Object of type ") + v.type_name() + " is not JSON serializable");
  }
}

Result<std::string> python_json_dumps(const Value& v, int indent, bool sort_keys) {
  std::string out;
  RETURN_IF_ERROR(dumps(out, v, indent, sort_keys, 0));
  return out;
}

std::vector<uint32_t> utf8_decode(const std::string& s) {
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) { cps.push_back(0xFFFD); ++i; continue; }
    uint32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    cps.push_back(cp);
    i += n;
  }
  return cps;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) out += static_cast<char>(cp);
  else if (cp < 0x800) { out += static_cast<char>(0xC0 | (cp >> 6)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12)); out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18)); out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_encode(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end && i < cps.size(); ++i) utf8_append(out, cps[i]);
  return out;
}

bool python_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string python_strip(const std::string& s, const std::string* chars, bool left, bool right) {
  std::vector<uint32_t> cps = utf8_decode(s);
  std::vector<uint32_t> set;
  if (chars) set = utf8_decode(*chars);
  auto strip_me = [&](uint32_t c) {
    return chars ? std::find(set.begin(), set.end(), c) != set.end() : python_isspace(c);
  };
  size_t b = 0, e = cps.size();
  if (left) while (b < e && strip_me(cps[b])) ++b;
  if (right) while (e > b && strip_me(cps[e - 1])) --e;
  if (b == 0 && e == cps.size()) return s;
  return utf8_encode(cps, b, e);
}

}  // namespace citadel::chat
