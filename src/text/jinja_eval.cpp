// See jinja_eval.h: statements, loops, scopes, and the JinjaTemplate API. Scoping
// follows jinja2: a for loop's body starts every iteration in a fresh scope (what it
// sets is gone after the iteration), if blocks share their enclosing scope, macros
// see the scope they were defined in, and namespace() objects carry state out of loops.
#include "text/jinja_eval.h"

#include <ctime>

#include "m3d/error.h"

namespace m3d::text::jinja {

namespace {

constexpr int64_t kWorkBudget = 10'000'000;  // loop iterations and calls of one render; chat templates need thousands
constexpr size_t kMaxOutput = size_t{1} << 28;

class LoopCycle : public Object {
 public:
  explicit LoopCycle(size_t index) : index_(index) {}
  std::string type_name() const override { return "method"; }
  bool callable() const override { return true; }
  Value call(Renderer&, CallArgs& args) const override {
    if (args.positional.empty()) render_fail("no items for cycling given");
    return args.positional[index_ % args.positional.size()];
  }

 private:
  size_t index_;
};

// jinja2's LoopContext for one iteration.
class Loop : public Object {
 public:
  Loop(std::shared_ptr<const std::vector<Value>> items, size_t index) : items_(std::move(items)), index_(index) {}
  std::string type_name() const override { return "LoopContext"; }
  std::string repr() const override { return fmt::format("<LoopContext {}/{}>", index_ + 1, items_->size()); }

  Value attribute(const std::string& name) const override {
    const auto i = static_cast<int64_t>(index_), n = static_cast<int64_t>(items_->size());
    if (name == "index") return Value::of(i + 1);
    if (name == "index0") return Value::of(i);
    if (name == "revindex") return Value::of(n - i);
    if (name == "revindex0") return Value::of(n - i - 1);
    if (name == "first") return Value::of(i == 0);
    if (name == "last") return Value::of(i == n - 1);
    if (name == "length") return Value::of(n);
    if (name == "depth") return Value::of(1);
    if (name == "depth0") return Value::of(0);
    if (name == "previtem") return i > 0 ? (*items_)[index_ - 1] : Value::undefined("there is no previous item");
    if (name == "nextitem") return i + 1 < n ? (*items_)[index_ + 1] : Value::undefined("there is no next item");
    if (name == "cycle") return Value::object(std::make_shared<LoopCycle>(index_));
    return Object::attribute(name);
  }

 private:
  std::shared_ptr<const std::vector<Value>> items_;
  size_t index_;
};

}  // namespace

void Scope::set(const std::string& name, Value value) {
  for (auto& [key, old] : vars) {
    if (key == name) {
      old = std::move(value);
      return;
    }
  }
  vars.emplace_back(name, std::move(value));
}

Renderer::Renderer(const Program& program, std::shared_ptr<const Json> context, const JinjaRenderOptions& options)
    : program_(program), context_(std::move(context)), options_(options), scope_(std::make_shared<Scope>(nullptr)) {}

Renderer::~Renderer() {
  for (const auto& object : tracked_) object->release();
}

void track_object(Renderer& renderer, const std::shared_ptr<Object>& object) { renderer.track(object); }

std::string Renderer::run() {
  std::string out;
  exec(program_.body, out);
  return out;
}

void Renderer::fail_at(Pos pos, const std::string& message) const { fail("{}:{}:{}: {}", program_.name, pos.line, pos.column, message); }

void Renderer::spend(int64_t work) {
  work_ += work;
  if (work_ > kWorkBudget) render_fail("the template ran past its budget of {} loop iterations and calls", kWorkBudget);
}

Renderer::Flow Renderer::exec(const Body& body, std::string& out) {
  for (const auto& stmt : body) {
    const Flow flow = exec(*stmt, out);
    if (flow != Flow::Normal) return flow;
    if (out.size() > kMaxOutput) fail_at(stmt->pos, fmt::format("the output grew past {} bytes", kMaxOutput));
  }
  return Flow::Normal;
}

Renderer::Flow Renderer::exec(const Stmt& s, std::string& out) {
  try {
    switch (s.kind) {
      case StmtKind::Text:
        out += s.text;
        return Flow::Normal;
      case StmtKind::Print:
        out += py_str(eval(*s.exprs[0]));
        return Flow::Normal;
      case StmtKind::If:
        return exec_if(s, out);
      case StmtKind::For:
        return exec_for(s, out);
      case StmtKind::Set:
        assign(s.targets[0], eval(*s.exprs[0]));
        return Flow::Normal;
      case StmtKind::Macro: {
        auto macro = std::make_shared<Macro>(&s, s.text, scope_);
        track(macro);
        scope_->set(s.text, Value::object(std::move(macro)));
        return Flow::Normal;
      }
      case StmtKind::CallBlock:
        exec_call_block(s, out);
        return Flow::Normal;
      case StmtKind::Break:
        return Flow::Break;
      case StmtKind::Continue:
        return Flow::Continue;
      default:
        return exec_block(s, out);
    }
  } catch (const RenderError& e) { fail_at(s.pos, e.what()); }
}

Renderer::Flow Renderer::exec_if(const Stmt& s, std::string& out) {
  for (size_t i = 0; i < s.exprs.size(); ++i)
    if (truthy(eval(*s.exprs[i]))) return exec(s.bodies[i], out);
  return exec(s.bodies.back(), out);
}

Renderer::Flow Renderer::exec_for(const Stmt& s, std::string& out) {
  const Value iterable = eval(*s.exprs[0]);
  std::vector<Value> items = iterate(iterable);
  const auto outer = scope_;
  if (s.exprs[1]) {  // for x in xs if cond: the loop sees only the items that pass
    std::vector<Value> kept;
    for (auto& item : items) {
      spend(1);
      scope_ = std::make_shared<Scope>(outer);
      assign(s.targets[0], item);
      const bool keep = truthy(eval(*s.exprs[1]));
      scope_ = outer;
      if (keep) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec(s.bodies[1], out);
  const auto shared = std::make_shared<const std::vector<Value>>(std::move(items));
  for (size_t i = 0; i < shared->size(); ++i) {
    spend(1);
    scope_ = std::make_shared<Scope>(outer);  // an error ends the render, so no restore is needed on throw
    assign(s.targets[0], (*shared)[i]);
    scope_->set("loop", Value::object(std::make_shared<Loop>(shared, i)));
    const Flow flow = exec(s.bodies[0], out);
    scope_ = outer;
    if (flow == Flow::Break) break;
  }
  return Flow::Normal;
}

// Blocks whose body runs in a scope of its own: {% set x %}, {% filter %}, {% with %},
// {% generation %}.
Renderer::Flow Renderer::exec_block(const Stmt& s, std::string& out) {
  std::vector<Value> values;  // a with block's values are evaluated outside it
  for (const auto& e : s.exprs)
    if (s.kind == StmtKind::With) values.push_back(eval(*e));
  const auto outer = scope_;
  scope_ = std::make_shared<Scope>(outer);
  for (size_t i = 0; i < values.size(); ++i) assign(s.targets[i], values[i]);
  std::string body;
  const Flow flow = exec(s.bodies[0], s.kind == StmtKind::With || s.kind == StmtKind::Scope ? out : body);
  scope_ = outer;
  if (s.kind == StmtKind::SetBlock || s.kind == StmtKind::FilterBlock) {
    Value result = Value::of(std::move(body));
    if (s.exprs[0]) {
      block_subject_ = &result;
      Value filtered = eval(*s.exprs[0]);
      block_subject_ = nullptr;
      result = std::move(filtered);
    }
    if (s.kind == StmtKind::SetBlock) assign(s.targets[0], result);
    else out += py_str(result);
  }
  return flow;
}

// {% call(params) m(args) %}body{% endcall %}: m(args, caller=<the body as a macro>).
void Renderer::exec_call_block(const Stmt& s, std::string& out) {
  const Expr& call = *s.exprs.back();
  Value callee = eval(*call.items[0]);
  CallArgs args = eval_args(call, 1);
  auto caller = std::make_shared<Macro>(&s, "caller", scope_);
  track(caller);
  args.keywords.emplace_back("caller", Value::object(std::move(caller)));
  if (callee.is_undefined()) undefined_error(callee);
  if (!callee.is_object() || !callee.object()->callable()) render_fail("'{}' object is not callable", type_name(callee));
  out += py_str(callee.object()->call(*this, args));
}

void Renderer::assign(const Target& target, const Value& value) {
  switch (target.kind) {
    case Target::Kind::Name:
      scope_->set(target.names[0], value);
      return;
    case Target::Kind::Tuple: {
      const std::vector<Value> items = iterate(value);
      const size_t n = target.names.size();
      if (items.size() < n) render_fail("not enough values to unpack (expected {}, got {})", n, items.size());
      if (items.size() > n) render_fail("too many values to unpack (expected {})", n);
      for (size_t i = 0; i < n; ++i) scope_->set(target.names[i], items[i]);
      return;
    }
    case Target::Kind::NsAttr: {
      const Value ns = lookup(target.names[0]);
      auto* space = ns.as<Namespace>();
      if (!space) render_fail("cannot assign attribute on non-namespace object");
      space->set(target.names[1], value);
      return;
    }
  }
}

Value Renderer::lookup(const std::string& name) const {
  for (const Scope* s = scope_.get(); s; s = s->parent.get())
    for (const auto& [key, value] : s->vars)
      if (key == name) return value;
  const auto it = context_->find(name);
  if (it != context_->end()) return Value::borrowed(context_, *it);
  return global_function(name);
}

std::tm render_time(const Renderer& renderer) {
  if (renderer.options().now) {
    std::tm given = *renderer.options().now;
    timegm(&given);  // fills in the weekday and day of the year
    return given;
  }
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  localtime_r(&t, &local);
  return local;
}

}  // namespace m3d::text::jinja

namespace m3d::text {

JinjaTemplate JinjaTemplate::parse(const std::string& source, const std::string& name) {
  JinjaTemplate t;
  t.program_ = jinja::parse(source, name);
  return t;
}

const std::string& JinjaTemplate::name() const {
  static const std::string none;
  return program_ ? program_->name : none;
}

std::string JinjaTemplate::render(const nlohmann::ordered_json& context, const JinjaRenderOptions& options) const {
  if (!program_) fail("jinja: render() of a template that was never parsed");
  if (!context.is_object()) fail("{}: the render context must be a JSON object, not {}", program_->name, context.type_name());
  // The context outlives the render, so values point into it without owning it.
  std::shared_ptr<const jinja::Json> borrowed(std::shared_ptr<const void>(), &context);
  try {
    return jinja::Renderer(*program_, borrowed, options).run();
  } catch (const jinja::RenderError& e) { fail("{}: {}", program_->name, e.what()); } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", program_->name, e.what());
  }
}

std::string JinjaTemplate::render(const nlohmann::json& context, const JinjaRenderOptions& options) const {
  return render(nlohmann::ordered_json(context), options);
}

}  // namespace m3d::text
