// See jinja_parser.h: expressions, with jinja2's precedence (loosest first): a if c else b,
// or, and, not, comparisons / in, + -, ~, * / // %, **, unary - +, then postfix
// (. [] ()) and filters / tests (| is), which bind tightest.
#include "m3d/error.h"
#include "text/jinja_parser.h"

namespace m3d::text::jinja {

namespace {

constexpr int kMaxDepth = 200;  // of an expression tree, as Python bounds nesting
constexpr int kMaxRecursion = 100;

class Recursion {
 public:
  explicit Recursion(int* depth) : depth_(depth) { ++*depth_; }
  ~Recursion() { --*depth_; }
  bool too_deep() const { return *depth_ > kMaxRecursion; }

 private:
  int* depth_;
};

}  // namespace

ExprPtr Parser::make(ExprKind kind, Pos pos, std::vector<ExprPtr> items) {
  auto node = std::make_unique<Expr>();
  node->kind = kind;
  node->pos = pos;
  node->items = std::move(items);
  finish(node.get());
  return node;
}

void Parser::finish(Expr* node) {
  int depth = 0;
  for (const auto& item : node->items)
    if (item) depth = std::max(depth, item->depth);
  for (const auto& k : node->keywords) depth = std::max(depth, k.value->depth);
  if (node->star_args) depth = std::max(depth, node->star_args->depth);
  if (node->star_kwargs) depth = std::max(depth, node->star_kwargs->depth);
  node->depth = depth + 1;
  if (node->depth > kMaxDepth) error(node->pos, "expression nested too deeply");
}

ExprPtr Parser::expression(bool with_condexpr) {
  Recursion guard(&nesting_);
  if (guard.too_deep()) error(cur().pos, "expression nested too deeply");
  return with_condexpr ? condexpr() : or_expr();
}

ExprPtr Parser::tuple(bool simplified, bool with_condexpr, const char* extra_end, bool explicit_parentheses, bool with_namespace) {
  const Pos pos = cur().pos;
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) expect_op(",");
    const Tok t = cur().type;
    if (t == Tok::VarEnd || t == Tok::BlockEnd || at_op(")") || (extra_end && at_name(extra_end))) break;
    items.push_back(simplified ? primary(with_namespace) : expression(with_condexpr));
    if (!at_op(",")) break;
    is_tuple = true;
  }
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parentheses) error(cur().pos, fmt::format("Expected an expression, got '{}'", describe_token(cur())));
  }
  return make(ExprKind::Tuple, pos, std::move(items));
}

ExprPtr Parser::condexpr() {
  ExprPtr expr = or_expr();
  while (at_name("if")) {
    const Pos pos = next().pos;
    std::vector<ExprPtr> items;
    items.push_back(or_expr());
    items.push_back(std::move(expr));
    items.push_back(skip_name("else") ? condexpr() : nullptr);
    expr = make(ExprKind::CondExpr, pos, std::move(items));
  }
  return expr;
}

ExprPtr Parser::or_expr() {
  ExprPtr left = and_expr();
  while (at_name("or")) {
    const Pos pos = next().pos;
    std::vector<ExprPtr> items;
    items.push_back(std::move(left));
    items.push_back(and_expr());
    left = make(ExprKind::Or, pos, std::move(items));
  }
  return left;
}

ExprPtr Parser::and_expr() {
  ExprPtr left = not_expr();
  while (at_name("and")) {
    const Pos pos = next().pos;
    std::vector<ExprPtr> items;
    items.push_back(std::move(left));
    items.push_back(not_expr());
    left = make(ExprKind::And, pos, std::move(items));
  }
  return left;
}

ExprPtr Parser::not_expr() {
  if (!at_name("not")) return compare();
  const Pos pos = next().pos;
  Recursion guard(&nesting_);
  if (guard.too_deep()) error(pos, "expression nested too deeply");
  std::vector<ExprPtr> items;
  items.push_back(not_expr());
  return make(ExprKind::Not, pos, std::move(items));
}

ExprPtr Parser::compare() {
  const Pos pos = cur().pos;
  std::vector<ExprPtr> items;
  items.push_back(math1());
  std::vector<std::string> ops;
  while (true) {
    const Token& t = cur();
    if (t.type == Tok::Op && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">=")) {
      ops.push_back(next().text);
    } else if (at_name("in")) {
      next();
      ops.push_back("in");
    } else if (at_name("not") && peek().type == Tok::Name && peek().text == "in") {
      next();
      next();
      ops.push_back("notin");
    } else {
      break;
    }
    items.push_back(math1());
  }
  if (ops.empty()) return std::move(items[0]);
  ExprPtr node = make(ExprKind::Compare, pos, std::move(items));
  node->ops = std::move(ops);
  return node;
}

namespace {
bool at_any(const Token& t, std::initializer_list<const char*> ops) {
  if (t.type != Tok::Op) return false;
  for (const char* op : ops)
    if (t.text == op) return true;
  return false;
}
}  // namespace

ExprPtr Parser::math1() {
  ExprPtr left = concat();
  while (at_any(cur(), {"+", "-"})) {
    const Token& op = next();
    std::vector<ExprPtr> items;
    items.push_back(std::move(left));
    items.push_back(concat());
    left = make(ExprKind::Binary, op.pos, std::move(items));
    left->name = op.text;
  }
  return left;
}

ExprPtr Parser::concat() {
  const Pos pos = cur().pos;
  std::vector<ExprPtr> items;
  items.push_back(math2());
  while (skip_op("~")) items.push_back(math2());
  if (items.size() == 1) return std::move(items[0]);
  return make(ExprKind::Concat, pos, std::move(items));
}

ExprPtr Parser::math2() {
  ExprPtr left = power();
  while (at_any(cur(), {"*", "/", "//", "%"})) {
    const Token& op = next();
    std::vector<ExprPtr> items;
    items.push_back(std::move(left));
    items.push_back(power());
    left = make(ExprKind::Binary, op.pos, std::move(items));
    left->name = op.text;
  }
  return left;
}

ExprPtr Parser::power() {
  ExprPtr left = unary(true);
  while (at_op("**")) {
    const Pos pos = next().pos;
    std::vector<ExprPtr> items;
    items.push_back(std::move(left));
    items.push_back(unary(true));
    left = make(ExprKind::Binary, pos, std::move(items));
    left->name = "**";
  }
  return left;
}

ExprPtr Parser::unary(bool with_filter) {
  Recursion guard(&nesting_);
  if (guard.too_deep()) error(cur().pos, "expression nested too deeply");
  ExprPtr node;
  if (at_op("-") || at_op("+")) {
    const Token& op = next();
    std::vector<ExprPtr> items;
    items.push_back(unary(false));
    node = make(op.text == "-" ? ExprKind::Neg : ExprKind::Plus, op.pos, std::move(items));
  } else {
    node = primary();
  }
  node = postfix(std::move(node));
  return with_filter ? filter_expr(std::move(node)) : std::move(node);
}

ExprPtr Parser::primary(bool with_namespace) {
  const Token& t = cur();
  auto constant = [&](Json value) {
    ExprPtr node = make(ExprKind::Const, t.pos);
    node->value = std::make_shared<const Json>(std::move(value));
    return node;
  };
  if (t.type == Tok::Name) {
    next();
    if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") return constant(t.text == "true" || t.text == "True");
    if (t.text == "none" || t.text == "None") return constant(nullptr);
    ExprPtr node = make(ExprKind::Name, t.pos);
    node->name = t.text;
    if (with_namespace && at_op(".")) {
      next();
      std::vector<ExprPtr> items;
      items.push_back(std::move(node));
      node = make(ExprKind::GetAttr, t.pos, std::move(items));
      node->name = expect_name();
    }
    return node;
  }
  if (t.type == Tok::String) {
    std::string text;
    const Token& first = t;
    while (cur().type == Tok::String) text += next().text;  // adjacent literals concatenate
    ExprPtr node = make(ExprKind::Const, first.pos);
    node->value = std::make_shared<const Json>(std::move(text));
    return node;
  }
  if (t.type == Tok::Integer || t.type == Tok::Float) {
    next();
    return t.type == Tok::Integer ? constant(t.integer) : constant(t.real);
  }
  if (at_op("(")) {
    next();
    ExprPtr node = tuple(false, true, nullptr, true);
    expect_op(")");
    return node;
  }
  if (at_op("[")) return list();
  if (at_op("{")) return dict();
  if (t.type == Tok::Eof) error(t.pos, "unexpected end of template");
  error(t.pos, fmt::format("unexpected '{}'", describe_token(t)));
}

ExprPtr Parser::list() {
  const Pos pos = next().pos;
  std::vector<ExprPtr> items;
  while (!at_op("]")) {
    if (!items.empty()) expect_op(",");
    if (at_op("]")) break;
    items.push_back(expression());
  }
  expect_op("]");
  return make(ExprKind::List, pos, std::move(items));
}

ExprPtr Parser::dict() {
  const Pos pos = next().pos;
  std::vector<ExprPtr> items;
  while (!at_op("}")) {
    if (!items.empty()) expect_op(",");
    if (at_op("}")) break;
    items.push_back(expression());
    expect_op(":");
    items.push_back(expression());
  }
  expect_op("}");
  return make(ExprKind::Dict, pos, std::move(items));
}

ExprPtr Parser::postfix(ExprPtr node) {
  while (true) {
    if (at_op(".") || at_op("[")) {
      node = subscript(std::move(node));
    } else if (at_op("(")) {
      const Pos pos = node->pos;  // a failing call points at its callee
      std::vector<ExprPtr> items;
      items.push_back(std::move(node));
      node = make(ExprKind::Call, pos, std::move(items));
      call_args(node.get());
    } else {
      return node;
    }
  }
}

ExprPtr Parser::filter_expr(ExprPtr node) {
  while (true) {
    if (at_op("|")) {
      node = filter(std::move(node), false);
    } else if (at_name("is")) {
      node = test(std::move(node));
    } else if (at_op("(")) {
      const Pos pos = node->pos;  // a failing call points at its callee
      std::vector<ExprPtr> items;
      items.push_back(std::move(node));
      node = make(ExprKind::Call, pos, std::move(items));
      call_args(node.get());
    } else {
      return node;
    }
  }
}

ExprPtr Parser::subscript(ExprPtr node) {
  const Token& t = next();
  std::vector<ExprPtr> items;
  items.push_back(std::move(node));
  if (t.text == ".") {
    const Token& attr = next();
    if (attr.type == Tok::Name) {
      ExprPtr get = make(ExprKind::GetAttr, t.pos, std::move(items));
      get->name = attr.text;
      return get;
    }
    if (attr.type != Tok::Integer) error(attr.pos, "expected name or number");
    ExprPtr index = make(ExprKind::Const, attr.pos);
    index->value = std::make_shared<const Json>(attr.integer);
    items.push_back(std::move(index));
    return make(ExprKind::GetItem, t.pos, std::move(items));
  }
  std::vector<ExprPtr> args;
  while (!at_op("]")) {
    if (!args.empty()) expect_op(",");
    args.push_back(subscribed());
  }
  expect_op("]");
  items.push_back(args.size() == 1 ? std::move(args[0]) : make(ExprKind::Tuple, t.pos, std::move(args)));
  return make(ExprKind::GetItem, t.pos, std::move(items));
}

// An index or a slice start:stop:step, each part optional.
ExprPtr Parser::subscribed() {
  const Pos pos = cur().pos;
  std::vector<ExprPtr> parts;
  if (skip_op(":")) {
    parts.push_back(nullptr);
  } else {
    ExprPtr node = expression();
    if (!skip_op(":")) return node;
    parts.push_back(std::move(node));
  }
  auto part_end = [&] { return at_op("]") || at_op(","); };
  parts.push_back(at_op(":") || part_end() ? nullptr : expression());
  if (skip_op(":")) parts.push_back(part_end() ? nullptr : expression());
  else parts.push_back(nullptr);
  return make(ExprKind::Slice, pos, std::move(parts));
}

void Parser::call_args(Expr* node) {
  const Pos pos = cur().pos;
  expect_op("(");
  auto ensure = [&](bool ok) {
    if (!ok) error(pos, "invalid syntax for function call expression");
  };
  bool require_comma = false;
  while (!at_op(")")) {
    if (require_comma) {
      expect_op(",");
      if (at_op(")")) break;
    }
    if (skip_op("*")) {
      ensure(!node->star_args && !node->star_kwargs);
      node->star_args = expression();
    } else if (skip_op("**")) {
      ensure(!node->star_kwargs);
      node->star_kwargs = expression();
    } else if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
      ensure(!node->star_kwargs);
      std::string key = next().text;
      next();
      node->keywords.push_back({std::move(key), expression()});
    } else {
      ensure(!node->star_args && !node->star_kwargs && node->keywords.empty());
      node->items.push_back(expression());
    }
    require_comma = true;
  }
  expect_op(")");
  finish(node);
}

ExprPtr Parser::filter(ExprPtr node, bool start_inline) {
  while (at_op("|") || start_inline) {
    if (!start_inline) next();
    start_inline = false;
    const Pos pos = cur().pos;
    std::string name = expect_name();
    while (skip_op(".")) name += "." + expect_name();
    std::vector<ExprPtr> items;
    items.push_back(std::move(node));
    node = make(ExprKind::Filter, pos, std::move(items));
    node->name = std::move(name);
    if (at_op("(")) call_args(node.get());
  }
  return node;
}

ExprPtr Parser::test(ExprPtr node) {
  const Pos pos = next().pos;
  const bool negated = skip_name("not");
  std::string name = expect_name();
  while (skip_op(".")) name += "." + expect_name();
  std::vector<ExprPtr> items;
  items.push_back(std::move(node));
  node = make(ExprKind::Test, pos, std::move(items));
  node->name = std::move(name);
  const Tok t = cur().type;
  if (at_op("(")) {
    call_args(node.get());
  } else if ((t == Tok::Name || t == Tok::String || t == Tok::Integer || t == Tok::Float || at_op("[") || at_op("{")) && !at_name("else") && !at_name("or") &&
             !at_name("and")) {
    if (at_name("is")) error(cur().pos, "You cannot chain multiple tests with is");
    node->items.push_back(postfix(primary()));
    finish(node.get());
  }
  if (!negated) return node;
  std::vector<ExprPtr> wrapped;
  wrapped.push_back(std::move(node));
  return make(ExprKind::Not, pos, std::move(wrapped));
}

}  // namespace m3d::text::jinja
