// Lexer and recursive-descent parser of the Jinja subset (grammar and precedence follow jinja2's parser.py:
// or < and < not < compare < +,- < ~ < *,/,//,% < ** < unary < postfix (attr, item, call) < filter/test).
#include <algorithm>
#include <cstring>

#include "chat/jinja_ast.h"

namespace citadel::chat {
namespace {

enum class Tok { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  Tok type;
  std::string text;  // text / name / op / decoded string
  int64_t i = 0;
  double f = 0;
  size_t offset = 0;
};

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  explicit Lexer(const std::string& src) : src_(src) {}

  Status run(std::vector<Token>& out) {
    size_t pos = 0, n = src_.size();
    bool line_starting = true;
    while (pos < n) {
      size_t tag = find_tag(pos);
      std::string text = src_.substr(pos, tag - pos);
      char kind = tag < n ? src_[tag + 1] : 0;  // '{', '%', '#'
      char mod = tag + 2 < n ? src_[tag + 2] : 0;
      if (tag < n) {
        if (mod == '-') {
          while (!text.empty() && is_ws(text.back())) text.pop_back();
        } else if (kind != '{' && mod != '+') {  // lstrip_blocks
          size_t l_pos = text.rfind('\n');
          l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
          if (l_pos > 0 || line_starting) {
            bool all_ws = std::all_of(text.begin() + l_pos, text.end(), is_ws);
            if (all_ws) text.resize(l_pos);
          }
        }
      }
      if (!text.empty()) out.push_back({Tok::kText, text, 0, 0, pos});
      if (tag >= n) break;
      pos = tag + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
      if (kind == '#') {
        size_t end = src_.find("#}", pos);
        if (end == std::string::npos) return error(tag, "unterminated comment");
        bool strip = end > pos && src_[end - 1] == '-';
        pos = end + 2;
        line_starting = finish_tag(pos, strip, true, false);
        continue;
      }
      out.push_back({kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", 0, 0, tag});
      RETURN_IF_ERROR(lex_tag(pos, kind, out, line_starting));
    }
    out.push_back({Tok::kEof, "", 0, 0, n});
    return OkStatus();
  }

  Status error(size_t offset, const std::string& msg) const;

 private:
  size_t find_tag(size_t pos) const {
    while (true) {
      size_t p = src_.find('{', pos);
      if (p == std::string::npos || p + 1 >= src_.size()) return src_.size();
      char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      pos = p + 1;
    }
  }

  // Consumes what follows a tag end; returns whether the consumed text ended with a newline.
  bool finish_tag(size_t& pos, bool strip, bool block, bool plus) {
    bool nl = false;
    if (strip) {
      while (pos < src_.size() && is_ws(src_[pos])) nl = src_[pos++] == '\n';
    } else if (block && !plus && pos < src_.size() && src_[pos] == '\n') {
      ++pos;
      nl = true;
    }
    return nl;
  }

  Status lex_tag(size_t& pos, char kind, std::vector<Token>& out, bool& line_starting);
  Status lex_string(size_t& pos, std::vector<Token>& out);

  const std::string& src_;
};

Status Lexer::error(size_t offset, const std::string& msg) const {
  int line = 1, col = 1;
  for (size_t i = 0; i < offset && i < src_.size(); ++i) {
    if (src_[i] == '\n') { ++line; col = 1; } else if ((static_cast<unsigned char>(src_[i]) & 0xC0) != 0x80) ++col;
  }
  return InvalidArgument("line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + msg);
}

Status Lexer::lex_tag(size_t& pos, char kind, std::vector<Token>& out, bool& line_starting) {
  const char* end_str = kind == '{' ? "}}" : "%}";
  int depth = 0;
  size_t n = src_.size();
  while (true) {
    while (pos < n && is_ws(src_[pos])) ++pos;
    if (pos >= n) return error(pos, std::string("unexpected end of template, expected '") + end_str + "'");
    if (depth == 0) {
      bool strip = src_[pos] == '-' && src_.compare(pos + 1, 2, end_str) == 0;
      bool plus = src_[pos] == '+' && src_.compare(pos + 1, 2, end_str) == 0;
      if (strip || plus || src_.compare(pos, 2, end_str) == 0) {
        out.push_back({kind == '{' ? Tok::kVarEnd : Tok::kBlockEnd, "", 0, 0, pos});
        pos += (strip || plus) ? 3 : 2;
        line_starting = finish_tag(pos, strip, kind == '%', plus);
        return OkStatus();
      }
    }
    char c = src_[pos];
    size_t start = pos;
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (pos < n && (std::isalnum(static_cast<unsigned char>(src_[pos])) || src_[pos] == '_')) ++pos;
      out.push_back({Tok::kName, src_.substr(start, pos - start), 0, 0, start});
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      std::string digits;
      while (pos < n && (std::isdigit(static_cast<unsigned char>(src_[pos])) || src_[pos] == '_'))
        if (src_[pos++] != '_') digits += src_[pos - 1];
      bool is_float = false;
      if (pos + 1 < n && src_[pos] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos + 1]))) {
        is_float = true;
        digits += src_[pos++];
        while (pos < n && std::isdigit(static_cast<unsigned char>(src_[pos]))) digits += src_[pos++];
      }
      if (pos < n && (src_[pos] == 'e' || src_[pos] == 'E')) {
        size_t p = pos + 1;
        if (p < n && (src_[p] == '+' || src_[p] == '-')) ++p;
        if (p < n && std::isdigit(static_cast<unsigned char>(src_[p]))) {
          is_float = true;
          digits += src_.substr(pos, p - pos);
          pos = p;
          while (pos < n && std::isdigit(static_cast<unsigned char>(src_[pos]))) digits += src_[pos++];
        }
      }
      Token t{is_float ? Tok::kFloat : Tok::kInt, digits, 0, 0, start};
      try {
        if (is_float) t.f = std::stod(digits); else t.i = std::stoll(digits);
      } catch (...) {
        return error(start, "number out of range: " + digits);
      }
      out.push_back(t);
    } else if (c == '\'' || c == '"') {
      RETURN_IF_ERROR(lex_string(pos, out));
    } else {
      static const char* kOps2[] = {"//", "**", "==", "!=", "<=", ">="};
      std::string op;
      for (const char* o : kOps2)
        if (src_.compare(pos, 2, o) == 0) op = o;
      if (op.empty()) {
        if (!std::strchr("+-*/%~<>=()[]{},.:|", c)) return error(pos, std::string("unexpected character '") + c + "'");
        op = std::string(1, c);
      }
      if (op == "(" || op == "[" || op == "{") ++depth;
      if (op == ")" || op == "]" || op == "}") {
        if (depth == 0) return error(pos, "unexpected '" + op + "'");
        --depth;
      }
      pos += op.size();
      out.push_back({Tok::kOp, op, 0, 0, start});
    }
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Python 'unicode-escape' decoding of a string literal, as jinja2 does.
Status Lexer::lex_string(size_t& pos, std::vector<Token>& out) {
  char q = src_[pos];
  size_t start = pos++;
  std::string s;
  while (true) {
    if (pos >= src_.size()) return error(start, "unterminated string");
    char c = src_[pos++];
    if (c == q) break;
    if (c != '\\') { s += c; continue; }
    if (pos >= src_.size()) return error(start, "unterminated string");
    char e = src_[pos++];
    switch (e) {
      case 'n': s += '\n'; break;
      case 't': s += '\t'; break;
      case 'r': s += '\r'; break;
      case 'a': s += '\a'; break;
      case 'b': s += '\b'; break;
      case 'f': s += '\f'; break;
      case 'v': s += '\v'; break;
      case '\\': s += '\\'; break;
      case '\'': s += '\''; break;
      case '"': s += '"'; break;
      case '\n': break;
      case 'x': case 'u': case 'U': {
        int len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (int k = 0; k < len; ++k) {
          int h = pos < src_.size() ? hex_value(src_[pos]) : -1;
          if (h < 0) return error(pos, "truncated \\" + std::string(1, e) + " escape");
          cp = cp * 16 + h;
          ++pos;
        }
        if (cp > 0x10FFFF) return error(pos, "illegal Unicode character");
        utf8_append(s, cp);
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          uint32_t cp = e - '0';
          for (int k = 0; k < 2 && pos < src_.size() && src_[pos] >= '0' && src_[pos] <= '7'; ++k)
            cp = cp * 8 + (src_[pos++] - '0');
          utf8_append(s, cp);
        } else {
          s += '\\';
          s += e;
        }
    }
  }
  out.push_back({Tok::kString, s, 0, 0, start});
  return OkStatus();
}

class Parser {
 public:
  Parser(const std::string& src, std::vector<Token> toks) : lexer_(src), src_(src), toks_(std::move(toks)) {}

  Result<std::shared_ptr<StmtList>> parse() {
    auto list = std::make_shared<StmtList>();
    std::string end;
    RETURN_IF_ERROR(parse_body(*list, {}, end));
    return list;
  }

 private:
  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  bool is_op(const char* op) const { return cur().type == Tok::kOp && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::kName && cur().text == n; }
  Status error(const std::string& msg) const { return lexer_.error(cur().offset, msg); }
  Status expect_op(const char* op) {
    if (!is_op(op)) return error(std::string("expected '") + op + "'" + got());
    ++pos_;
    return OkStatus();
  }
  std::string got() const {
    switch (cur().type) {
      case Tok::kEof: return ", got end of template";
      case Tok::kBlockEnd: return ", got end of statement block";
      case Tok::kVarEnd: return ", got end of print statement";
      default: return ", got '" + cur().text + "'";
    }
  }
  void locate(size_t offset, int& line, int& col) const {
    line = 1; col = 1;
    for (size_t i = 0; i < offset && i < src_.size(); ++i) {
      if (src_[i] == '\n') { ++line; col = 1; } else if ((static_cast<unsigned char>(src_[i]) & 0xC0) != 0x80) ++col;
    }
  }
  ExprPtr make(ExprKind k, size_t offset) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    locate(offset, e->line, e->col);
    return e;
  }
  std::unique_ptr<Stmt> make_stmt(StmtKind k, size_t offset) {
    auto s = std::make_unique<Stmt>();
    s->kind = k;
    locate(offset, s->line, s->col);
    return s;
  }

  Status parse_body(StmtList& out, const std::vector<std::string>& ends, std::string& found);
  Status parse_statement(StmtList& out, size_t offset);
  Status parse_if(StmtList& out, size_t offset);
  Status parse_for(StmtList& out, size_t offset);
  Status parse_set(StmtList& out, size_t offset);
  Status parse_macro(StmtList& out, size_t offset);
  Status parse_targets(std::vector<std::string>& targets);
  Status end_block() {
    if (cur().type != Tok::kBlockEnd) return error("expected end of statement block" + got());
    ++pos_;
    return OkStatus();
  }

  Result<ExprPtr> expression(bool allow_cond = true);
  Result<ExprPtr> tuple_or_expr();
  Result<ExprPtr> binary(int level);
  Result<ExprPtr> unary(bool with_filter);
  Result<ExprPtr> primary();
  Result<ExprPtr> postfix(ExprPtr e);
  Result<ExprPtr> filter_expr(ExprPtr e);
  Status call_args(Expr& call);
  // e -> a call of e, its arguments parsed from the "(" at the cursor.
  Status wrap_call(ExprPtr& e, size_t offset) {
    auto c = make(ExprKind::kCall, offset);
    c->kids.push_back(std::move(e));
    c->arg_names.push_back("");
    RETURN_IF_ERROR(call_args(*c));
    e = std::move(c);
    return OkStatus();
  }

  Lexer lexer_;
  const std::string& src_;
  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
};

Status Parser::parse_body(StmtList& out, const std::vector<std::string>& ends, std::string& found) {
  while (true) {
    const Token& t = cur();
    if (t.type == Tok::kEof) {
      if (ends.empty()) return OkStatus();
      return error("unexpected end of template, expected '" + ends[0] + "'");
    }
    if (t.type == Tok::kText) {
      auto s = make_stmt(StmtKind::kText, t.offset);
      s->text = t.text;
      out.push_back(std::move(s));
      ++pos_;
    } else if (t.type == Tok::kVarBegin) {
      auto s = make_stmt(StmtKind::kOutput, t.offset);
      ++pos_;
      ASSIGN_OR_RETURN(s->expr, tuple_or_expr());
      if (cur().type != Tok::kVarEnd) return error("expected end of print statement" + got());
      ++pos_;
      out.push_back(std::move(s));
    } else if (t.type == Tok::kBlockBegin) {
      size_t offset = t.offset;
      ++pos_;
      if (cur().type != Tok::kName) return error("expected statement name" + got());
      const std::string& kw = cur().text;
      if (std::find(ends.begin(), ends.end(), kw) != ends.end()) {
        found = kw;
        ++pos_;
        return OkStatus();
      }
      RETURN_IF_ERROR(parse_statement(out, offset));
    } else {
      return error("unexpected token" + got());
    }
  }
}

Status Parser::parse_statement(StmtList& out, size_t offset) {
  if (++depth_ > 200) return error("statements nested too deeply");
  std::string kw = cur().text;
  Status st;
  if (kw == "if") st = parse_if(out, offset);
  else if (kw == "for") st = parse_for(out, offset);
  else if (kw == "set") st = parse_set(out, offset);
  else if (kw == "macro") st = parse_macro(out, offset);
  else if (kw == "break" || kw == "continue") {
    ++pos_;
    out.push_back(make_stmt(kw == "break" ? StmtKind::kBreak : StmtKind::kContinue, offset));
    st = end_block();
  } else if (kw == "generation") {  // transformers' AssistantTracker block: renders its body
    ++pos_;
    RETURN_IF_ERROR(end_block());
    auto s = make_stmt(StmtKind::kBody, offset);
    s->bodies.emplace_back();
    std::string found;
    RETURN_IF_ERROR(parse_body(s->bodies[0], {"endgeneration"}, found));
    out.push_back(std::move(s));
    st = end_block();
  } else {
    st = error("unknown or unsupported tag '" + kw + "'");
  }
  --depth_;
  return st;
}

Status Parser::parse_if(StmtList& out, size_t offset) {
  auto s = make_stmt(StmtKind::kIf, offset);
  ++pos_;  // if
  while (true) {
    ASSIGN_OR_RETURN(auto cond, tuple_or_expr());
    RETURN_IF_ERROR(end_block());
    s->conds.push_back(std::move(cond));
    s->bodies.emplace_back();
    std::string found;
    RETURN_IF_ERROR(parse_body(s->bodies.back(), {"endif", "elif", "else"}, found));
    if (found == "elif") continue;
    if (found == "else") {
      RETURN_IF_ERROR(end_block());
      RETURN_IF_ERROR(parse_body(s->else_body, {"endif"}, found));
    }
    break;
  }
  out.push_back(std::move(s));
  return end_block();
}

Status Parser::parse_targets(std::vector<std::string>& targets) {
  bool paren = is_op("(");
  if (paren) ++pos_;
  while (true) {
    if (cur().type != Tok::kName) return error("expected a variable name" + got());
    targets.push_back(cur().text);
    ++pos_;
    if (!is_op(",")) break;
    ++pos_;
  }
  if (paren) RETURN_IF_ERROR(expect_op(")"));
  return OkStatus();
}

Status Parser::parse_for(StmtList& out, size_t offset) {
  auto s = make_stmt(StmtKind::kFor, offset);
  ++pos_;  // for
  RETURN_IF_ERROR(parse_targets(s->targets));
  if (!is_name("in")) return error("expected 'in'" + got());
  ++pos_;
  ASSIGN_OR_RETURN(s->expr, expression(false));
  if (is_name("if")) {
    ++pos_;
    ASSIGN_OR_RETURN(s->filter, expression());
  }
  if (is_name("recursive")) return error("recursive loops are not supported");
  RETURN_IF_ERROR(end_block());
  s->bodies.emplace_back();
  std::string found;
  RETURN_IF_ERROR(parse_body(s->bodies[0], {"endfor", "else"}, found));
  if (found == "else") {
    RETURN_IF_ERROR(end_block());
    RETURN_IF_ERROR(parse_body(s->else_body, {"endfor"}, found));
  }
  out.push_back(std::move(s));
  return end_block();
}

Status Parser::parse_set(StmtList& out, size_t offset) {
  ++pos_;  // set
  auto s = make_stmt(StmtKind::kSet, offset);
  if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == ".") {
    s->targets.push_back(cur().text);
    pos_ += 2;
    if (cur().type != Tok::kName) return error("expected an attribute name" + got());
    s->text = cur().text;
    ++pos_;
  } else {
    RETURN_IF_ERROR(parse_targets(s->targets));
  }
  if (cur().type == Tok::kBlockEnd && s->text.empty() && s->targets.size() == 1) {
    s->kind = StmtKind::kSetBlock;
    ++pos_;
    s->bodies.emplace_back();
    std::string found;
    RETURN_IF_ERROR(parse_body(s->bodies[0], {"endset"}, found));
    out.push_back(std::move(s));
    return end_block();
  }
  RETURN_IF_ERROR(expect_op("="));
  ASSIGN_OR_RETURN(s->expr, tuple_or_expr());
  out.push_back(std::move(s));
  return end_block();
}

Status Parser::parse_macro(StmtList& out, size_t offset) {
  ++pos_;  // macro
  auto s = make_stmt(StmtKind::kMacro, offset);
  if (cur().type != Tok::kName) return error("expected macro name" + got());
  s->text = cur().text;
  ++pos_;
  RETURN_IF_ERROR(expect_op("("));
  while (!is_op(")")) {
    if (cur().type != Tok::kName) return error("expected parameter name" + got());
    s->targets.push_back(cur().text);
    ++pos_;
    ExprPtr def;
    if (is_op("=")) {
      ++pos_;
      ASSIGN_OR_RETURN(def, expression());
    }
    s->defaults.push_back(std::move(def));
    if (!is_op(",")) break;
    ++pos_;
  }
  RETURN_IF_ERROR(expect_op(")"));
  RETURN_IF_ERROR(end_block());
  s->bodies.emplace_back();
  std::string found;
  RETURN_IF_ERROR(parse_body(s->bodies[0], {"endmacro"}, found));
  out.push_back(std::move(s));
  return end_block();
}

Result<ExprPtr> Parser::tuple_or_expr() {
  size_t offset = cur().offset;
  ASSIGN_OR_RETURN(auto first, expression());
  if (!is_op(",")) return first;
  auto t = make(ExprKind::kTuple, offset);
  t->kids.push_back(std::move(first));
  while (is_op(",")) {
    ++pos_;
    if (cur().type == Tok::kBlockEnd || cur().type == Tok::kVarEnd || is_op(")")) break;
    ASSIGN_OR_RETURN(auto e, expression());
    t->kids.push_back(std::move(e));
  }
  return t;
}

Result<ExprPtr> Parser::expression(bool allow_cond) {
  if (++depth_ > 200) return error("expression nested too deeply");
  size_t offset = cur().offset;
  auto r = binary(0);
  if (!r.ok()) { --depth_; return r; }
  ExprPtr e = std::move(r).value();
  while (allow_cond && is_name("if")) {
    ++pos_;
    auto c = make(ExprKind::kCondExpr, offset);
    ASSIGN_OR_RETURN(auto cond, binary(0));
    c->kids.push_back(std::move(e));
    c->kids.push_back(std::move(cond));
    if (is_name("else")) {
      ++pos_;
      ASSIGN_OR_RETURN(auto other, expression());
      c->kids.push_back(std::move(other));
    }
    e = std::move(c);
  }
  --depth_;
  return e;
}

// Levels: 0 or, 1 and, 2 not, 3 compare, 4 + -, 5 ~, 6 * / // %, 7 **.
Result<ExprPtr> Parser::binary(int level) {
  size_t offset = cur().offset;
  if (level == 2) {
    if (is_name("not")) {
      ++pos_;
      auto u = make(ExprKind::kUnary, offset);
      u->op = "not";
      ASSIGN_OR_RETURN(auto k, binary(2));
      u->kids.push_back(std::move(k));
      return u;
    }
    return binary(3);
  }
  if (level == 8) return unary(true);
  ASSIGN_OR_RETURN(auto left, binary(level + 1));
  while (true) {
    std::string op;
    if (level == 0 && is_name("or")) op = "or";
    else if (level == 1 && is_name("and")) op = "and";
    else if (level == 3) {
      if (cur().type == Tok::kOp && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                     cur().text == ">" || cur().text == "<=" || cur().text == ">="))
        op = cur().text;
      else if (is_name("in")) op = "in";
      else if (is_name("not") && peek().type == Tok::kName && peek().text == "in") { op = "not in"; ++pos_; }
    } else if (level == 4 && (is_op("+") || is_op("-"))) op = cur().text;
    else if (level == 5 && is_op("~")) op = "~";
    else if (level == 6 && (is_op("*") || is_op("/") || is_op("//") || is_op("%"))) op = cur().text;
    else if (level == 7 && is_op("**")) op = "**";
    if (op.empty()) return left;
    ++pos_;
    auto b = make(ExprKind::kBinary, offset);
    b->op = op;
    ASSIGN_OR_RETURN(auto right, binary(level + 1));
    b->kids.push_back(std::move(left));
    b->kids.push_back(std::move(right));
    left = std::move(b);
  }
}

Result<ExprPtr> Parser::unary(bool with_filter) {
  size_t offset = cur().offset;
  ExprPtr e;
  if (is_op("-") || is_op("+")) {
    auto u = make(ExprKind::kUnary, offset);
    u->op = cur().text;
    ++pos_;
    ASSIGN_OR_RETURN(auto k, unary(false));
    u->kids.push_back(std::move(k));
    e = std::move(u);
  } else {
    ASSIGN_OR_RETURN(e, primary());
  }
  ASSIGN_OR_RETURN(e, postfix(std::move(e)));
  if (with_filter) { ASSIGN_OR_RETURN(e, filter_expr(std::move(e))); }
  return e;
}

Result<ExprPtr> Parser::primary() {
  const Token& t = cur();
  size_t offset = t.offset;
  if (t.type == Tok::kName) {
    ++pos_;
    auto e = make(ExprKind::kLiteral, offset);
    if (t.text == "true" || t.text == "True") e->literal = Value(true);
    else if (t.text == "false" || t.text == "False") e->literal = Value(false);
    else if (t.text == "none" || t.text == "None") e->literal = Value::none();
    else { e->kind = ExprKind::kName; e->name = t.text; }
    return e;
  }
  if (t.type == Tok::kString) {
    std::string s;
    while (cur().type == Tok::kString) s += toks_[pos_++].text;  // adjacent literals concatenate
    auto e = make(ExprKind::kLiteral, offset);
    e->literal = Value(std::move(s));
    return e;
  }
  if (t.type == Tok::kInt || t.type == Tok::kFloat) {
    ++pos_;
    auto e = make(ExprKind::kLiteral, offset);
    e->literal = t.type == Tok::kInt ? Value(t.i) : Value(t.f);
    return e;
  }
  if (is_op("(")) {
    ++pos_;
    if (is_op(")")) { ++pos_; return make(ExprKind::kTuple, offset); }
    ASSIGN_OR_RETURN(auto e, tuple_or_expr());
    RETURN_IF_ERROR(expect_op(")"));
    return e;
  }
  if (is_op("[") || is_op("{")) {
    bool dict = is_op("{");
    const char* close = dict ? "}" : "]";
    ++pos_;
    auto e = make(dict ? ExprKind::kDict : ExprKind::kList, offset);
    while (!is_op(close)) {
      ASSIGN_OR_RETURN(auto item, expression());
      e->kids.push_back(std::move(item));
      if (dict) {
        RETURN_IF_ERROR(expect_op(":"));
        ASSIGN_OR_RETURN(auto v, expression());
        e->kids.push_back(std::move(v));
      }
      if (!is_op(",")) break;
      ++pos_;
    }
    RETURN_IF_ERROR(expect_op(close));
    return e;
  }
  return error("unexpected token" + got());
}

Status Parser::call_args(Expr& call) {
  RETURN_IF_ERROR(expect_op("("));
  while (!is_op(")")) {
    std::string kw;
    if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == "=") {
      kw = cur().text;
      pos_ += 2;
    }
    ASSIGN_OR_RETURN(auto arg, expression());
    call.kids.push_back(std::move(arg));
    call.arg_names.push_back(kw);
    if (!is_op(",")) break;
    ++pos_;
  }
  return expect_op(")");
}

Result<ExprPtr> Parser::postfix(ExprPtr e) {
  while (true) {
    size_t offset = cur().offset;
    if (is_op(".")) {
      ++pos_;
      if (cur().type == Tok::kName) {
        auto a = make(ExprKind::kGetAttr, offset);
        a->name = cur().text;
        ++pos_;
        a->kids.push_back(std::move(e));
        e = std::move(a);
      } else if (cur().type == Tok::kInt) {
        auto a = make(ExprKind::kGetItem, offset);
        auto idx = make(ExprKind::kLiteral, offset);
        idx->literal = Value(cur().i);
        ++pos_;
        a->kids.push_back(std::move(e));
        a->kids.push_back(std::move(idx));
        e = std::move(a);
      } else {
        return error("expected attribute name" + got());
      }
    } else if (is_op("[")) {
      ++pos_;
      ExprPtr parts[3];
      int n = 0;
      bool slice = false;
      while (true) {
        if (!is_op(":") && !is_op("]")) { ASSIGN_OR_RETURN(parts[n], expression()); }
        if (is_op(":") && n < 2) { slice = true; ++n; ++pos_; continue; }
        break;
      }
      RETURN_IF_ERROR(expect_op("]"));
      auto a = make(slice ? ExprKind::kSlice : ExprKind::kGetItem, offset);
      a->kids.push_back(std::move(e));
      if (!slice && !parts[0]) return error("empty subscript");
      for (int k = 0; k < (slice ? 3 : 1); ++k) {
        if (!parts[k]) parts[k] = make(ExprKind::kLiteral, offset);
        a->kids.push_back(std::move(parts[k]));
      }
      e = std::move(a);
    } else if (is_op("(")) {
      RETURN_IF_ERROR(wrap_call(e, offset));
    } else {
      return e;
    }
  }
}

Result<ExprPtr> Parser::filter_expr(ExprPtr e) {
  while (true) {
    size_t offset = cur().offset;
    if (is_op("|")) {
      ++pos_;
      if (cur().type != Tok::kName) return error("expected filter name" + got());
      auto f = make(ExprKind::kFilter, offset);
      f->name = cur().text;
      ++pos_;
      f->kids.push_back(std::move(e));
      f->arg_names.push_back("");
      if (is_op("(")) RETURN_IF_ERROR(call_args(*f));
      e = std::move(f);
    } else if (is_name("is")) {
      ++pos_;
      auto t = make(ExprKind::kTest, offset);
      if (is_name("not")) { t->negate = true; ++pos_; }
      if (cur().type != Tok::kName) return error("expected test name" + got());
      t->name = cur().text;
      ++pos_;
      t->kids.push_back(std::move(e));
      t->arg_names.push_back("");
      if (is_op("(")) {
        RETURN_IF_ERROR(call_args(*t));
      } else if ((cur().type == Tok::kName || cur().type == Tok::kString || cur().type == Tok::kInt ||
                  cur().type == Tok::kFloat || is_op("(") || is_op("[") || is_op("{")) &&
                 !is_name("else") && !is_name("or") && !is_name("and")) {
        ASSIGN_OR_RETURN(auto arg, primary());
        ASSIGN_OR_RETURN(arg, postfix(std::move(arg)));
        t->kids.push_back(std::move(arg));
        t->arg_names.push_back("");
      }
      e = std::move(t);
    } else if (is_op("(")) {
      RETURN_IF_ERROR(wrap_call(e, offset));
    } else {
      return e;
    }
  }
}

}  // namespace

Result<std::shared_ptr<StmtList>> parse_template(const std::string& source) {
  std::string src = source;
  if (!src.empty() && src.back() == '\n') {  // jinja2 keep_trailing_newline=False
    src.pop_back();
    if (!src.empty() && src.back() == '\r') src.pop_back();
  }
  std::vector<Token> toks;
  Lexer lexer(src);
  RETURN_IF_ERROR(lexer.run(toks));
  Parser parser(src, std::move(toks));
  return parser.parse();
}

}  // namespace citadel::chat
