// The front end of the Jinja engine (internal to src/text/jinja_*.cpp): tokens as
// jinja2's lexer.py produces them and the syntax tree of its parser.py.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace m3d::text::jinja {

using Json = nlohmann::ordered_json;  // Python dicts keep insertion order

struct Pos {
  int line = 1, column = 1;
};

enum class Tok { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Op, Eof };

struct Token {
  Tok type = Tok::Eof;
  std::string text;  // data, name, operator, or the decoded string literal
  int64_t integer = 0;
  double real = 0;
  Pos pos;
};

// Tokens of `source` ending with Eof; trim_blocks and lstrip_blocks applied, comments
// dropped, raw blocks turned into data. Throws m3d::Error "NAME:LINE:COLUMN: ...".
std::vector<Token> lex(const std::string& source, const std::string& name);

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Keyword {
  std::string name;
  ExprPtr value;
};

enum class ExprKind { Const, Name, List, Tuple, Dict, GetAttr, GetItem, Slice, Call, Filter, Test, Neg, Plus, Not, And, Or, Binary, Concat, Compare, CondExpr };

struct Expr {
  ExprKind kind = ExprKind::Const;
  Pos pos;
  std::string name;  // Name, GetAttr's attribute, Filter / Test name, Binary operator
  std::shared_ptr<const Json> value;  // Const
  // Operands. Dict: key, value, key, value, ... Slice: start, stop, step (null when
  // absent). Call: callee, then arguments. Filter / Test: subject (null for the body
  // of a filter block), then arguments. Compare: the first operand, then one per op.
  // CondExpr: condition, then value, else value (null when absent).
  std::vector<ExprPtr> items;
  std::vector<Keyword> keywords;
  ExprPtr star_args, star_kwargs;
  std::vector<std::string> ops;  // Compare: == != < <= > >= in notin
  int depth = 1;  // of the subtree; the parser bounds it so evaluation cannot exhaust the stack
};

// An assignment target: a name, names to unpack, or `namespace.attribute`.
struct Target {
  enum class Kind { Name, Tuple, NsAttr } kind = Kind::Name;
  std::vector<std::string> names;  // Name: one; Tuple: several; NsAttr: namespace, attribute
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

enum class StmtKind { Text, Print, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, With, Scope, Break, Continue };

struct Stmt {
  StmtKind kind = StmtKind::Text;
  Pos pos;
  std::string text;  // Text: the data; Macro: its name
  // Print: the expression. If: one condition per branch. For: iterable, filter
  // condition (or null). Set: the value. SetBlock / FilterBlock: the filter chain
  // (or null). With: the values. Macro / CallBlock: parameter defaults (null when
  // absent); CallBlock then the call, last.
  std::vector<ExprPtr> exprs;
  // If: one per branch, then the else body. For: body, else body. Macro, CallBlock,
  // SetBlock, FilterBlock, With, Scope: the body.
  std::vector<Body> bodies;
  std::vector<Target> targets;  // For / Set / SetBlock: one; With: one per value
  std::vector<std::string> params;  // Macro / CallBlock parameters
};

struct Program {
  std::string name;
  Body body;
};

// Parses a template; throws m3d::Error "NAME:LINE:COLUMN: ..." saying what was expected.
std::unique_ptr<Program> parse(const std::string& source, const std::string& name);

// For the parser's name check: whether a filter or test of that name exists.
bool filter_exists(const std::string& name);
bool test_exists(const std::string& name);

}  // namespace m3d::text::jinja
