// See jinja_parser.h: the token stream, statements and the name check.
#include "text/jinja_parser.h"

#include <set>

#include "m3d/error.h"

namespace m3d::text::jinja {

namespace {

constexpr int kMaxNesting = 100;  // open blocks plus expression recursion

}  // namespace

// jinja2's lexer.describe_token.
std::string describe_token(const Token& t) {
  switch (t.type) {
    case Tok::Data:
      return "template data";
    case Tok::VarBegin:
      return "begin of print statement";
    case Tok::VarEnd:
      return "end of print statement";
    case Tok::BlockBegin:
      return "begin of statement block";
    case Tok::BlockEnd:
      return "end of statement block";
    case Tok::String:
      return "string";
    case Tok::Integer:
      return "integer";
    case Tok::Float:
      return "float";
    case Tok::Eof:
      return "end of template";
    default:
      return t.text;
  }
}

namespace {

std::string describe(Tok type) {
  Token t;
  t.type = type;
  return describe_token(t);
}

std::string quoted_list(const std::vector<std::string>& names, const char* separator) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "'" : std::string(separator) + "'") + n + "'";
  return out;
}

}  // namespace

const Token& Parser::next() {
  const Token& t = tokens_[index_];
  if (index_ + 1 < tokens_.size()) ++index_;
  return t;
}

bool Parser::skip_op(const char* op) {
  if (!at_op(op)) return false;
  next();
  return true;
}

bool Parser::skip_name(const char* name) {
  if (!at_name(name)) return false;
  next();
  return true;
}

void Parser::error(Pos pos, const std::string& message) const { fail("{}:{}:{}: {}", name_, pos.line, pos.column, message); }

void Parser::expected(const std::string& what) const {
  if (cur().type == Tok::Eof) error(cur().pos, fmt::format("unexpected end of template, expected '{}'", what));
  error(cur().pos, fmt::format("expected token '{}', got '{}'", what, describe_token(cur())));
}

void Parser::expect_op(const char* op) {
  if (!skip_op(op)) expected(op);
}

void Parser::expect(Tok type) {
  if (cur().type != type) expected(describe(type));
  next();
}

std::string Parser::expect_name() {
  if (cur().type != Tok::Name) expected("name");
  return next().text;
}

// jinja2's Parser._fail_ut_eof: an unknown tag, or the end of the template inside a block.
void Parser::fail_tag(const std::string* unknown, const std::vector<std::string>* extra_end) const {
  std::vector<std::vector<std::string>> stack = end_stack_;
  if (extra_end) stack.push_back(*extra_end);
  std::set<std::string> expected_tags;
  for (const auto& tags : stack) expected_tags.insert(tags.begin(), tags.end());
  std::string message = unknown ? fmt::format("Encountered unknown tag '{}'.", *unknown) : "Unexpected end of template.";
  if (!stack.empty()) {
    const std::string looking = quoted_list(stack.back(), " or ");
    if (unknown && expected_tags.count(*unknown))
      message += fmt::format(" You probably made a nesting mistake. Jinja is expecting this tag, but currently looking for {}.", looking);
    else message += fmt::format(" Jinja was looking for the following tags: {}.", looking);
  }
  if (!tag_stack_.empty()) message += fmt::format(" The innermost block that needs to be closed is '{}'.", tag_stack_.back());
  error(cur().pos, message);
}

Body Parser::parse_template() {
  Body body = subparse({});
  check_names(body, false);
  return body;
}

Body Parser::subparse(const std::vector<std::string>& end_tags) {
  Body body;
  if (!end_tags.empty()) end_stack_.push_back(end_tags);
  while (cur().type != Tok::Eof) {
    const Token& t = cur();
    if (t.type == Tok::Data) {
      auto node = std::make_unique<Stmt>();
      node->kind = StmtKind::Text;
      node->pos = t.pos;
      node->text = t.text;
      body.push_back(std::move(node));
      next();
    } else if (t.type == Tok::VarBegin) {
      auto node = std::make_unique<Stmt>();
      node->kind = StmtKind::Print;
      node->pos = next().pos;
      node->exprs.push_back(tuple(false, true, nullptr, false));
      expect(Tok::VarEnd);
      body.push_back(std::move(node));
    } else {
      next();  // BlockBegin
      if (cur().type == Tok::Name && std::find(end_tags.begin(), end_tags.end(), cur().text) != end_tags.end()) {
        end_stack_.pop_back();
        return body;
      }
      body.push_back(statement());
      expect(Tok::BlockEnd);
    }
  }
  if (!end_tags.empty()) end_stack_.pop_back();
  return body;
}

Body Parser::statements(const std::vector<std::string>& end_tags, bool drop_needle) {
  skip_op(":");
  expect(Tok::BlockEnd);
  Body body = subparse(end_tags);
  if (cur().type == Tok::Eof) fail_tag(nullptr, &end_tags);
  if (drop_needle) next();
  return body;
}

std::unique_ptr<Stmt> Parser::statement() {
  if (cur().type != Tok::Name) error(cur().pos, "tag name expected");
  if (++nesting_ > kMaxNesting) error(cur().pos, "blocks nested too deeply");
  const std::string tag = cur().text;
  tag_stack_.push_back(tag);
  std::unique_ptr<Stmt> node;
  if (tag == "if") node = statement_if();
  else if (tag == "for") node = statement_for();
  else if (tag == "set") node = statement_set();
  else if (tag == "macro" || tag == "call") node = statement_macro(tag == "call");
  else if (tag == "filter") node = statement_filter();
  else if (tag == "with") node = statement_with();
  else if (tag == "break") node = statement_loop_control(StmtKind::Break);
  else if (tag == "continue") node = statement_loop_control(StmtKind::Continue);
  else if (tag == "generation") node = statement_filter();  // transformers' AssistantTracker: renders its body
  else if (tag == "print") {
    node = std::make_unique<Stmt>();
    node->kind = StmtKind::Print;
    node->pos = next().pos;
    node->exprs.push_back(tuple(false, true, nullptr, false));
  } else if (tag == "extends" || tag == "include" || tag == "import" || tag == "from" || tag == "block" || tag == "autoescape") {
    error(cur().pos, fmt::format("the '{}' tag is not supported: a chat template is one self-contained template", tag));
  } else {
    tag_stack_.pop_back();
    fail_tag(&tag, nullptr);
  }
  tag_stack_.pop_back();
  --nesting_;
  return node;
}

std::unique_ptr<Stmt> Parser::statement_if() {
  auto node = std::make_unique<Stmt>();
  node->kind = StmtKind::If;
  node->pos = next().pos;
  while (true) {
    node->exprs.push_back(tuple(false, false, nullptr, false));
    node->bodies.push_back(statements({"elif", "else", "endif"}, false));
    const std::string end = next().text;
    if (end == "elif") continue;
    node->bodies.push_back(end == "else" ? statements({"endif"}, true) : Body{});
    return node;
  }
}

std::unique_ptr<Stmt> Parser::statement_for() {
  auto node = std::make_unique<Stmt>();
  node->kind = StmtKind::For;
  node->pos = next().pos;
  node->targets.push_back(assign_target(true, "in", false));
  if (!skip_name("in")) expected("in");
  node->exprs.push_back(tuple(false, false, "recursive", false));
  node->exprs.push_back(skip_name("if") ? expression() : nullptr);
  if (at_name("recursive")) error(cur().pos, "recursive for loops are not supported");
  ++loop_depth_;
  node->bodies.push_back(statements({"endfor", "else"}, false));
  --loop_depth_;
  const bool has_else = next().text == "else";
  node->bodies.push_back(has_else ? statements({"endfor"}, true) : Body{});
  return node;
}

std::unique_ptr<Stmt> Parser::statement_set() {
  auto node = std::make_unique<Stmt>();
  node->pos = next().pos;
  node->targets.push_back(assign_target(true, nullptr, true));
  if (skip_op("=")) {
    node->kind = StmtKind::Set;
    node->exprs.push_back(tuple(false, true, nullptr, false));
    return node;
  }
  node->kind = StmtKind::SetBlock;
  node->exprs.push_back(at_op("|") ? filter(nullptr, false) : nullptr);
  node->bodies.push_back(statements({"endset"}, true));
  return node;
}

void Parser::signature(Stmt* node) {
  expect_op("(");
  while (!at_op(")")) {
    if (!node->params.empty()) expect_op(",");
    const Pos pos = cur().pos;
    node->params.push_back(expect_name());
    if (skip_op("=")) {
      node->exprs.push_back(expression());
    } else {
      for (const auto& d : node->exprs)
        if (d) error(pos, "non-default argument follows default argument");
      node->exprs.push_back(nullptr);
    }
  }
  expect_op(")");
}

// {% macro name(params) %} and {% call(params) macro(...) %}: bodies that run as functions.
std::unique_ptr<Stmt> Parser::statement_macro(bool call_block) {
  auto node = std::make_unique<Stmt>();
  node->kind = call_block ? StmtKind::CallBlock : StmtKind::Macro;
  node->pos = next().pos;
  if (!call_block) node->text = expect_name();
  if (!call_block || at_op("(")) signature(node.get());
  if (call_block) {
    ExprPtr call = expression();
    if (call->kind != ExprKind::Call) error(node->pos, "expected call");
    node->exprs.push_back(std::move(call));
  }
  const int outer_loops = loop_depth_;
  loop_depth_ = 0;
  node->bodies.push_back(statements({call_block ? "endcall" : "endmacro"}, true));
  loop_depth_ = outer_loops;
  return node;
}

// {% filter f %} and transformers' {% generation %}.
std::unique_ptr<Stmt> Parser::statement_filter() {
  auto node = std::make_unique<Stmt>();
  const bool generation = at_name("generation");
  node->pos = next().pos;
  node->kind = generation ? StmtKind::Scope : StmtKind::FilterBlock;
  if (!generation) node->exprs.push_back(filter(nullptr, true));
  const int outer_loops = loop_depth_;
  if (generation) loop_depth_ = 0;  // its body is a macro in jinja2
  node->bodies.push_back(statements({generation ? "endgeneration" : "endfilter"}, true));
  loop_depth_ = outer_loops;
  return node;
}

std::unique_ptr<Stmt> Parser::statement_with() {
  auto node = std::make_unique<Stmt>();
  node->kind = StmtKind::With;
  node->pos = next().pos;
  while (cur().type != Tok::BlockEnd) {
    if (!node->targets.empty()) expect_op(",");
    node->targets.push_back(assign_target(true, nullptr, false));
    expect_op("=");
    node->exprs.push_back(expression());
  }
  node->bodies.push_back(statements({"endwith"}, true));
  return node;
}

std::unique_ptr<Stmt> Parser::statement_loop_control(StmtKind kind) {
  auto node = std::make_unique<Stmt>();
  node->kind = kind;
  node->pos = cur().pos;
  if (loop_depth_ == 0) error(cur().pos, fmt::format("'{}' outside of a loop", cur().text));
  next();
  return node;
}

// jinja2's parse_assign_target: a name, a tuple of names, or namespace.attribute.
Target Parser::assign_target(bool with_tuple, const char* extra_end, bool with_namespace) {
  const Pos pos = cur().pos;
  ExprPtr expr = with_tuple ? tuple(true, true, extra_end, false, with_namespace) : primary(with_namespace);
  Target target;
  auto assignable = [&](const Expr& e) {
    if (e.kind != ExprKind::Name) error(pos, "can't assign to this expression; expected a name");
    return e.name;
  };
  if (expr->kind == ExprKind::Tuple) {
    target.kind = Target::Kind::Tuple;
    for (const auto& item : expr->items) target.names.push_back(assignable(*item));
  } else if (expr->kind == ExprKind::GetAttr && with_namespace) {
    target.kind = Target::Kind::NsAttr;
    target.names = {expr->items[0]->name, expr->name};
  } else {
    target.names.push_back(assignable(*expr));
  }
  return target;
}

void Parser::check_names(const Body& body, bool soft) const {
  for (const auto& stmt : body) {
    const bool is_if = stmt->kind == StmtKind::If;
    for (const auto& e : stmt->exprs) check_names(e.get(), soft || is_if);
    for (const auto& b : stmt->bodies) check_names(b, is_if);  // other blocks open jinja2 frames that are not soft
  }
}

void Parser::check_names(const Expr* e, bool soft) const {
  if (!e) return;
  soft = soft || e->kind == ExprKind::CondExpr;
  if (!soft && e->kind == ExprKind::Filter && !filter_exists(e->name)) error(e->pos, fmt::format("No filter named '{}'.", e->name));
  if (!soft && e->kind == ExprKind::Test && !test_exists(e->name)) error(e->pos, fmt::format("No test named '{}'.", e->name));
  for (const auto& item : e->items) check_names(item.get(), soft);
  for (const auto& k : e->keywords) check_names(k.value.get(), soft);
  check_names(e->star_args.get(), soft);
  check_names(e->star_kwargs.get(), soft);
}

std::unique_ptr<Program> parse(const std::string& source, const std::string& name) {
  auto program = std::make_unique<Program>();
  program->name = name;
  program->body = Parser(lex(source, name), name).parse_template();
  return program;
}

}  // namespace m3d::text::jinja
