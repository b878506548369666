#include "chat/jinja_eval.h"

#include "chat/jinja_builtins.h"

namespace citadel::chat {
namespace {

// A variable scope. For loops and macro calls open one; if-bodies do not (jinja2 scoping).
struct Frame {
  std::vector<std::pair<std::string, Value>> vars;
  const Frame* parent = nullptr;
  const Value* find(const std::string& n) const {
    for (const Frame* f = this; f; f = f->parent)
      for (auto it = f->vars.rbegin(); it != f->vars.rend(); ++it)
        if (it->first == n) return &it->second;
    return nullptr;
  }
  void set(const std::string& n, Value v) {
    for (auto& [k, old] : vars)
      if (k == n) { old = std::move(v); return; }
    vars.emplace_back(n, std::move(v));
  }
};

enum class Flow { kNormal, kBreak, kContinue };

class Evaluator {
 public:
  Evaluator(const RenderLimits& limits) : limits_(limits), blimits_{limits.max_output_bytes} {}

  Status exec_list(const StmtList& list, Frame& frame, std::string& out, Flow& flow);
  Frame root;

 private:
  Status err(int line, int col, const Status& st) const {
    return Status(st.code(), "line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + st.message());
  }
  Status err(const Expr& e, const Status& st) const { return err(e.line, e.col, st); }
  Status err(const Stmt& s, const Status& st) const { return err(s.line, s.col, st); }
  Status step(int line, int col) {
    if (++steps_ > limits_.max_steps)
      return err(line, col, ResourceExhausted("template exceeded " + std::to_string(limits_.max_steps) + " steps"));
    return OkStatus();
  }
  Status emit(std::string& out, const std::string& s, const Stmt& at) {
    if (out.size() + s.size() > limits_.max_output_bytes)
      return err(at, ResourceExhausted("rendered output exceeds " + std::to_string(limits_.max_output_bytes) +
                                       " bytes"));
    out += s;
    return OkStatus();
  }

  Result<Value> eval(const Expr& e, Frame& f);
  Result<Value> eval_inner(const Expr& e, Frame& f);
  Status eval_args(const Expr& e, size_t first, Frame& f, CallArgs& args);
  Status exec(const Stmt& s, Frame& frame, std::string& out, Flow& flow);
  Status exec_for(const Stmt& s, Frame& frame, std::string& out);
  Status assign(const Stmt& s, const std::vector<std::string>& targets, const Value& v, Frame& frame);
  Value make_macro(const Stmt& s);

  const RenderLimits& limits_;
  BuiltinLimits blimits_;
  int64_t steps_ = 0;
  int depth_ = 0;
};

Status Evaluator::eval_args(const Expr& e, size_t first, Frame& f, CallArgs& args) {
  for (size_t i = first; i < e.kids.size(); ++i) {
    ASSIGN_OR_RETURN(Value v, eval(*e.kids[i], f));
    if (i < e.arg_names.size() && !e.arg_names[i].empty()) args.keyword.emplace_back(e.arg_names[i], std::move(v));
    else args.positional.push_back(std::move(v));
  }
  return OkStatus();
}

Result<Value> Evaluator::eval(const Expr& e, Frame& f) {
  RETURN_IF_ERROR(step(e.line, e.col));
  if (++depth_ > limits_.max_depth + 200) {
    --depth_;
    return err(e, ResourceExhausted("expression nesting too deep"));
  }
  auto r = eval_inner(e, f);
  --depth_;
  return r;
}

Result<Value> Evaluator::eval_inner(const Expr& e, Frame& f) {
  switch (e.kind) {
    case ExprKind::kLiteral: return e.literal;
    case ExprKind::kName: {
      if (const Value* v = f.find(e.name)) return *v;
      return builtin_global(e.name);
    }
    case ExprKind::kList: case ExprKind::kTuple: {
      Value::Array a;
      for (const auto& k : e.kids) { ASSIGN_OR_RETURN(Value v, eval(*k, f)); a.push_back(std::move(v)); }
      return Value::array(std::move(a));
    }
    case ExprKind::kDict: {
      Value::Object o;
      for (size_t i = 0; i + 1 < e.kids.size(); i += 2) {
        ASSIGN_OR_RETURN(Value k, eval(*e.kids[i], f));
        if (!k.is_string()) return err(*e.kids[i], InvalidArgument("dict keys must be strings"));
        ASSIGN_OR_RETURN(Value v, eval(*e.kids[i + 1], f));
        o.set(k.str(), std::move(v));
      }
      return Value::object(std::move(o));
    }
    case ExprKind::kGetAttr: {
      ASSIGN_OR_RETURN(Value o, eval(*e.kids[0], f));
      auto r = get_attr(o, e.name);
      if (!r.ok()) return err(e, r.status());
      return r;
    }
    case ExprKind::kGetItem: case ExprKind::kSlice: {
      ASSIGN_OR_RETURN(Value o, eval(*e.kids[0], f));
      ASSIGN_OR_RETURN(Value k, eval(*e.kids[1], f));
      Result<Value> r = Value();
      if (e.kind == ExprKind::kGetItem) {
        r = get_item(o, k);
      } else {
        ASSIGN_OR_RETURN(Value stop, eval(*e.kids[2], f));
        ASSIGN_OR_RETURN(Value stp, eval(*e.kids[3], f));
        r = get_slice(o, k, stop, stp);
      }
      if (!r.ok()) return err(e, r.status());
      return r;
    }
    case ExprKind::kCall: {
      ASSIGN_OR_RETURN(Value fn, eval(*e.kids[0], f));
      CallArgs args;
      RETURN_IF_ERROR(eval_args(e, 1, f, args));
      if (!fn.is_callable())
        return err(e, InvalidArgument(fn.is_undefined() ? "call of an undefined value"
                                                        : std::string("'") + fn.type_name() + "' is not callable"));
      auto r = fn.fn()(args);
      if (!r.ok()) {
        const std::string& m = r.status().message();
        if (m.rfind("line ", 0) == 0) return r.status();  // already located (macro body)
        return err(*e.kids[0], r.status());  // report at the callee's start, not its '('
      }
      return r;
    }
    case ExprKind::kFilter: {
      ASSIGN_OR_RETURN(Value v, eval(*e.kids[0], f));
      CallArgs args;
      RETURN_IF_ERROR(eval_args(e, 1, f, args));
      auto r = apply_filter(e.name, v, args, blimits_);
      if (!r.ok()) return err(e, r.status());
      return r;
    }
    case ExprKind::kTest: {
      if (!has_test(e.name)) return err(e, InvalidArgument("no test named '" + e.name + "'"));
      ASSIGN_OR_RETURN(Value v, eval(*e.kids[0], f));
      CallArgs args;
      RETURN_IF_ERROR(eval_args(e, 1, f, args));
      auto r = apply_test(e.name, v, args);
      if (!r.ok()) return err(e, r.status());
      return Value(*r != e.negate);
    }
    case ExprKind::kUnary: {
      ASSIGN_OR_RETURN(Value v, eval(*e.kids[0], f));
      if (e.op == "not") return Value(!v.truthy());
      if (!v.is_number()) return err(e, InvalidArgument(std::string("bad operand type for unary ") + e.op));
      if (e.op == "+") return v.is_float() ? Value(v.as_float()) : Value(v.as_int());
      if (v.is_float()) return Value(-v.as_float());
      if (v.as_int() == INT64_MIN) return err(e, InvalidArgument("integer overflow"));
      return Value(-v.as_int());
    }
    case ExprKind::kBinary: {
      ASSIGN_OR_RETURN(Value a, eval(*e.kids[0], f));
      if (e.op == "and") { if (!a.truthy()) return a; return eval(*e.kids[1], f); }
      if (e.op == "or") { if (a.truthy()) return a; return eval(*e.kids[1], f); }
      ASSIGN_OR_RETURN(Value b, eval(*e.kids[1], f));
      auto r = binary_op(e.op, a, b, blimits_);
      if (!r.ok()) return err(e, r.status());
      return r;
    }
    case ExprKind::kCondExpr: {
      ASSIGN_OR_RETURN(Value c, eval(*e.kids[1], f));
      if (c.truthy()) return eval(*e.kids[0], f);
      if (e.kids.size() > 2) return eval(*e.kids[2], f);
      return Value();
    }
  }
  return err(e, Internal("bad expression node"));
}

Status Evaluator::assign(const Stmt& s, const std::vector<std::string>& targets, const Value& v, Frame& frame) {
  if (targets.size() == 1) { frame.set(targets[0], v); return OkStatus(); }
  auto items = iterate(v);
  if (!items.ok()) return err(s, items.status());
  if (items->size() != targets.size())
    return err(s, InvalidArgument("cannot unpack " + std::to_string(items->size()) + " values into " +
                                  std::to_string(targets.size()) + " names"));
  for (size_t i = 0; i < targets.size(); ++i) frame.set(targets[i], (*items)[i]);
  return OkStatus();
}

Status Evaluator::exec_for(const Stmt& s, Frame& frame, std::string& out) {
  ASSIGN_OR_RETURN(Value seq, eval(*s.expr, frame));
  auto items_r = iterate(seq);
  if (!items_r.ok()) return err(*s.expr, items_r.status());
  Value::Array items = std::move(items_r).value();
  Frame body{{}, &frame};
  if (s.filter) {
    Value::Array kept;
    for (const Value& it : items) {
      RETURN_IF_ERROR(assign(s, s.targets, it, body));
      ASSIGN_OR_RETURN(Value c, eval(*s.filter, body));
      if (c.truthy()) kept.push_back(it);
    }
    items = std::move(kept);
  }
  int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    RETURN_IF_ERROR(step(s.line, s.col));
    Value::Object loop;
    loop.set("index0", Value(i));
    loop.set("index", Value(i + 1));
    loop.set("revindex", Value(n - i));
    loop.set("revindex0", Value(n - i - 1));
    loop.set("first", Value(i == 0));
    loop.set("last", Value(i == n - 1));
    loop.set("length", Value(n));
    loop.set("depth", Value(1));
    loop.set("depth0", Value(0));
    loop.set("previtem", i > 0 ? items[i - 1] : Value());
    loop.set("nextitem", i + 1 < n ? items[i + 1] : Value());
    loop.set("cycle", Value::callable([i](const CallArgs& a) -> Result<Value> {
      if (a.positional.empty()) return InvalidArgument("no items for cycling given");
      return a.positional[i % a.positional.size()];
    }));
    body.set("loop", Value::object(std::move(loop)));
    RETURN_IF_ERROR(assign(s, s.targets, items[i], body));
    Flow flow = Flow::kNormal;
    RETURN_IF_ERROR(exec_list(s.bodies[0], body, out, flow));
    if (flow == Flow::kBreak) break;
  }
  if (n == 0) {
    Flow flow = Flow::kNormal;
    RETURN_IF_ERROR(exec_list(s.else_body, frame, out, flow));
  }
  return OkStatus();
}

Value Evaluator::make_macro(const Stmt& s) {
  return Value::callable([this, &s](const CallArgs& a) -> Result<Value> {
    if (depth_ >= limits_.max_depth)
      return err(s, ResourceExhausted("macro recursion deeper than " + std::to_string(limits_.max_depth)));
    Frame call{{}, &root};
    for (size_t i = 0; i < s.targets.size(); ++i) {
      const Value* v = a.get(i, s.targets[i].c_str());
      if (v) {
        call.set(s.targets[i], *v);
      } else if (s.defaults[i]) {
        ASSIGN_OR_RETURN(Value d, eval(*s.defaults[i], call));
        call.set(s.targets[i], std::move(d));
      } else {
        call.set(s.targets[i], Value());
      }
    }
    if (a.positional.size() > s.targets.size())
      return err(s, InvalidArgument("macro '" + s.text + "' takes " + std::to_string(s.targets.size()) +
                                    " arguments"));
    std::string out;
    Flow flow = Flow::kNormal;
    ++depth_;
    Status st = exec_list(s.bodies[0], call, out, flow);
    --depth_;
    RETURN_IF_ERROR(st);
    return Value(std::move(out));
  });
}

Status Evaluator::exec(const Stmt& s, Frame& frame, std::string& out, Flow& flow) {
  switch (s.kind) {
    case StmtKind::kText: return emit(out, s.text, s);
    case StmtKind::kOutput: {
      ASSIGN_OR_RETURN(Value v, eval(*s.expr, frame));
      return emit(out, v.to_str(), s);
    }
    case StmtKind::kIf: {
      for (size_t i = 0; i < s.conds.size(); ++i) {
        ASSIGN_OR_RETURN(Value c, eval(*s.conds[i], frame));
        if (c.truthy()) return exec_list(s.bodies[i], frame, out, flow);
      }
      return exec_list(s.else_body, frame, out, flow);
    }
    case StmtKind::kFor: return exec_for(s, frame, out);
    case StmtKind::kSet: {
      ASSIGN_OR_RETURN(Value v, eval(*s.expr, frame));
      if (s.text.empty()) return assign(s, s.targets, v, frame);
      const Value* ns = frame.find(s.targets[0]);
      if (!ns || !ns->is_object() || !ns->obj().is_namespace)
        return err(s, InvalidArgument("cannot assign attribute on non-namespace object '" + s.targets[0] + "'"));
      ns->obj().set(s.text, std::move(v));
      return OkStatus();
    }
    case StmtKind::kSetBlock: {
      std::string body;
      Flow f = Flow::kNormal;
      RETURN_IF_ERROR(exec_list(s.bodies[0], frame, body, f));
      frame.set(s.targets[0], Value(std::move(body)));
      return OkStatus();
    }
    case StmtKind::kMacro: frame.set(s.text, make_macro(s)); return OkStatus();
    case StmtKind::kBreak: flow = Flow::kBreak; return OkStatus();
    case StmtKind::kContinue: flow = Flow::kContinue; return OkStatus();
    case StmtKind::kBody: return exec_list(s.bodies[0], frame, out, flow);
  }
  return err(s, Internal("bad statement node"));
}

Status Evaluator::exec_list(const StmtList& list, Frame& frame, std::string& out, Flow& flow) {
  for (const auto& s : list) {
    RETURN_IF_ERROR(exec(*s, frame, out, flow));
    if (flow != Flow::kNormal) return OkStatus();
  }
  return OkStatus();
}

}  // namespace

Result<std::string> render_template(const StmtList& tmpl, const std::vector<std::pair<std::string, Value>>& globals,
                                    const RenderLimits& limits) {
  Frame globals_frame;
  for (const auto& [k, v] : globals) globals_frame.set(k, v);
  Evaluator ev(limits);
  ev.root.parent = &globals_frame;
  std::string out;
  Flow flow = Flow::kNormal;
  RETURN_IF_ERROR(ev.exec_list(tmpl, ev.root, out, flow));
  return out;
}

}  // namespace citadel::chat
