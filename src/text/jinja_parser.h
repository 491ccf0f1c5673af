// The Jinja parser (internal): jinja2 3.1's parser.py as recursive descent over the
// lexer's tokens. Statements are in jinja_parser.cpp, expressions in jinja_parser_expr.cpp.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "text/jinja_ast.h"

namespace m3d::text::jinja {

std::string describe_token(const Token& t);  // as jinja2's error messages name a token

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& name) : tokens_(std::move(tokens)), name_(name) {}
  Body parse_template();

 private:
  // The token stream.
  const Token& cur() const { return tokens_[index_]; }
  const Token& peek() const { return tokens_[std::min(index_ + 1, tokens_.size() - 1)]; }
  const Token& next();
  bool at_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool at_name(const char* name) const { return cur().type == Tok::Name && cur().text == name; }
  bool skip_op(const char* op);
  bool skip_name(const char* name);
  void expect_op(const char* op);
  void expect(Tok type);
  std::string expect_name();
  [[noreturn]] void error(Pos pos, const std::string& message) const;
  [[noreturn]] void expected(const std::string& what) const;
  [[noreturn]] void fail_tag(const std::string* unknown, const std::vector<std::string>* extra_end) const;

  // Statements.
  Body subparse(const std::vector<std::string>& end_tags);
  Body statements(const std::vector<std::string>& end_tags, bool drop_needle);
  std::unique_ptr<Stmt> statement();
  std::unique_ptr<Stmt> statement_if();
  std::unique_ptr<Stmt> statement_for();
  std::unique_ptr<Stmt> statement_set();
  std::unique_ptr<Stmt> statement_macro(bool call_block);
  std::unique_ptr<Stmt> statement_filter();
  std::unique_ptr<Stmt> statement_with();
  std::unique_ptr<Stmt> statement_loop_control(StmtKind kind);
  void signature(Stmt* node);
  Target assign_target(bool with_tuple, const char* extra_end, bool with_namespace);

  // Expressions (jinja_parser_expr.cpp), loosest binding first.
  ExprPtr expression(bool with_condexpr = true);
  ExprPtr tuple(bool simplified, bool with_condexpr, const char* extra_end, bool explicit_parentheses, bool with_namespace = false);
  ExprPtr condexpr();
  ExprPtr or_expr();
  ExprPtr and_expr();
  ExprPtr not_expr();
  ExprPtr compare();
  ExprPtr math1();
  ExprPtr concat();
  ExprPtr math2();
  ExprPtr power();
  ExprPtr unary(bool with_filter);
  ExprPtr primary(bool with_namespace = false);
  ExprPtr list();
  ExprPtr dict();
  ExprPtr postfix(ExprPtr node);
  ExprPtr filter_expr(ExprPtr node);
  ExprPtr subscript(ExprPtr node);
  ExprPtr subscribed();
  void call_args(Expr* node);
  ExprPtr filter(ExprPtr node, bool start_inline);
  ExprPtr test(ExprPtr node);
  ExprPtr make(ExprKind kind, Pos pos, std::vector<ExprPtr> items = {});
  void finish(Expr* node);  // bounds the depth of a finished node

  // Filter and test names are checked after parsing: inside if / conditional
  // expressions an unknown one fails only when evaluated (jinja2's soft frames).
  void check_names(const Body& body, bool soft) const;
  void check_names(const Expr* expr, bool soft) const;

  std::vector<Token> tokens_;
  const std::string& name_;
  size_t index_ = 0;
  std::vector<std::vector<std::string>> end_stack_;  // end tags looked for, innermost last
  std::vector<std::string> tag_stack_;  // open tags, innermost last
  int loop_depth_ = 0;  // for bodies around here in the same macro (break / continue)
  int nesting_ = 0;  // open blocks and expression recursion
};

}  // namespace m3d::text::jinja
