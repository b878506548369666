// AST of the Jinja subset: expressions and statements, each with the source line/column they start at.
// Produced by parse_template() (jinja_parser.cc), walked by the evaluator (jinja_eval.cc). Immutable after parsing.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "chat/jinja_value.h"

namespace citadel::chat {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  kLiteral,    // literal
  kName,       // name
  kList,       // kids = items
  kTuple,      // kids = items
  kDict,       // kids = k0, v0, k1, v1, ...
  kGetAttr,    // kids[0].name
  kGetItem,    // kids[0][kids[1]]
  kSlice,      // kids[0][kids[1]:kids[2]:kids[3]] (null kids omitted -> kLiteral undefined)
  kCall,       // kids[0](kids[1..]); arg_names[i] = keyword name of kids[i] or ""
  kFilter,     // name = filter; kids[0] = subject, kids[1..] args (arg_names as kCall)
  kTest,       // name = test; kids[0] = subject; negate; kids[1..] args
  kUnary,      // op: "not", "-", "+"; kids[0]
  kBinary,     // op; kids[0], kids[1]  (and/or short-circuit)
  kCondExpr,   // kids[0] if kids[1] else kids[2] (kids[2] may be absent -> undefined)
};

struct Expr {
  ExprKind kind;
  int line = 0, col = 0;
  std::string name;  // name / attribute / filter / test
  std::string op;
  bool negate = false;
  Value literal;
  std::vector<ExprPtr> kids;
  std::vector<std::string> arg_names;
};

struct Stmt;
using StmtList = std::vector<std::unique_ptr<Stmt>>;

enum class StmtKind {
  kText,       // text
  kOutput,     // {{ expr }}
  kIf,         // conds[i] -> bodies[i]; else_body
  kFor,        // targets in expr [if filter]: body; else_body
  kSet,        // targets (or ns.attr via attr) = expr
  kSetBlock,   // {% set x %}body{% endset %}
  kMacro,      // name(params=defaults): body
  kBreak,
  kContinue,
  kBody,       // a plain body (e.g. {% generation %})
};

struct Stmt {
  StmtKind kind;
  int line = 0, col = 0;
  std::string text;                  // kText; kMacro name; kSet attribute for ns.attr
  ExprPtr expr;                      // kOutput, kFor iterable, kSet value
  ExprPtr filter;                    // kFor filter
  std::vector<std::string> targets;  // kFor/kSet target names; kMacro params
  std::vector<ExprPtr> defaults;     // kMacro defaults (null when none)
  std::vector<ExprPtr> conds;        // kIf
  std::vector<StmtList> bodies;      // kIf bodies; kFor/kSetBlock/kMacro/kBody: bodies[0]
  StmtList else_body;
};

// Parses template source with HF's settings (trim_blocks, lstrip_blocks, no trailing newline kept).
// Errors: "line L, column C: message".
Result<std::shared_ptr<StmtList>> parse_template(const std::string& source);

}  // namespace citadel::chat
