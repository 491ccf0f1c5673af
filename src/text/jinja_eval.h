// The Jinja evaluator (internal): runs a parsed template over a context. Statements
// and the public API are in jinja_eval.cpp, expressions and macro calls in
// jinja_eval_expr.cpp.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja.h"
#include "text/jinja_value.h"

namespace m3d::text::jinja {

// Variables of one block: the template's top level, a loop iteration, a macro call.
// Lookups fall through to the enclosing scope; the outermost falls through to the
// render context and then the globals.
struct Scope {
  explicit Scope(std::shared_ptr<Scope> parent) : parent(std::move(parent)) {}
  std::shared_ptr<Scope> parent;
  std::vector<std::pair<std::string, Value>> vars;
  void set(const std::string& name, Value value);
};

class Macro;

class Renderer {
 public:
  Renderer(const Program& program, std::shared_ptr<const Json> context, const JinjaRenderOptions& options);
  ~Renderer();
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;
  std::string run();
  void track(const std::shared_ptr<Object>& object) { tracked_.push_back(object); }

  // Evaluates an expression; a RenderError inside becomes m3d::Error "NAME:LINE:COLUMN: ...".
  Value eval(const Expr& e);
  Value call_macro(const Macro& macro, CallArgs& args);
  const JinjaRenderOptions& options() const { return options_; }
  void spend(int64_t work);  // bounds loop iterations and calls

 private:
  enum class Flow { Normal, Break, Continue };

  Flow exec(const Body& body, std::string& out);
  Flow exec(const Stmt& s, std::string& out);
  Flow exec_for(const Stmt& s, std::string& out);
  Flow exec_if(const Stmt& s, std::string& out);
  Flow exec_block(const Stmt& s, std::string& out);  // SetBlock, FilterBlock, With, Scope
  void exec_call_block(const Stmt& s, std::string& out);
  void assign(const Target& target, const Value& value);
  [[noreturn]] void fail_at(Pos pos, const std::string& message) const;

  Value eval_node(const Expr& e);
  Value lookup(const std::string& name) const;
  Value eval_call(const Expr& e);
  CallArgs eval_args(const Expr& e, size_t first);
  Value eval_filter(const Expr& e);
  Value eval_collection(const Expr& e);
  Value eval_logic(const Expr& e);

  const Program& program_;
  std::shared_ptr<const Json> context_;
  JinjaRenderOptions options_;
  std::shared_ptr<Scope> scope_;
  const Value* block_subject_ = nullptr;  // the rendered body a {% filter %} / {% set %} block filters
  std::vector<std::shared_ptr<Object>> tracked_;  // macros and namespaces, released when the render ends
  int call_depth_ = 0;
  int64_t work_ = 0;
};

// A {% macro %}, or the body of a {% call %} block as `caller`.
class Macro : public Object {
 public:
  Macro(const Stmt* definition, std::string name, std::shared_ptr<Scope> closure)
      : definition(definition), name(std::move(name)), closure(std::move(closure)) {}
  std::string type_name() const override { return "Macro"; }
  bool callable() const override { return true; }
  Value call(Renderer& renderer, CallArgs& args) const override { return renderer.call_macro(*this, args); }
  std::string repr() const override { return fmt::format("<Macro '{}'>", name); }
  void release() override { closure.reset(); }

  const Stmt* definition;
  std::string name;
  std::shared_ptr<Scope> closure;
};

}  // namespace m3d::text::jinja
