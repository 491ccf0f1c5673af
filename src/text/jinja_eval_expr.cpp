// See jinja_eval.h: expressions and macro calls.
#include <algorithm>

#include "m3d/error.h"
#include "text/jinja_eval.h"

namespace m3d::text::jinja {

namespace {
constexpr int kMaxCallDepth = 200;  // macro recursion, about where Python's own limit stops jinja2
}

Value Renderer::eval(const Expr& e) {
  try {
    return eval_node(e);
  } catch (const RenderError& error) { fail_at(e.pos, error.what()); }
}

Value Renderer::eval_node(const Expr& e) {
  switch (e.kind) {
    case ExprKind::Const:
      return Value::borrowed(e.value, *e.value);
    case ExprKind::Name:
      return lookup(e.name);
    case ExprKind::List:
    case ExprKind::Tuple:
    case ExprKind::Dict:
      return eval_collection(e);
    case ExprKind::GetAttr:
      return get_attribute(eval(*e.items[0]), e.name);
    case ExprKind::GetItem: {
      const Value obj = eval(*e.items[0]);
      const Expr& key = *e.items[1];
      if (key.kind != ExprKind::Slice) return get_item(obj, eval(key));
      auto part = [&](size_t i) { return key.items[i] ? eval(*key.items[i]) : Value::of(nullptr); };
      return get_slice(obj, part(0), part(1), part(2));
    }
    case ExprKind::Slice:
      render_fail("a slice is supported only as the one subscript of []");
    case ExprKind::Call:
      return eval_call(e);
    case ExprKind::Filter:
      return eval_filter(e);
    case ExprKind::Test: {
      const Value subject = eval(*e.items[0]);
      CallArgs args = eval_args(e, 1);
      return Value::of(call_test(*this, e.name, subject, args));
    }
    case ExprKind::Neg:
    case ExprKind::Plus:
      return negate(eval(*e.items[0]), e.kind == ExprKind::Neg);
    case ExprKind::Binary: {
      const Value a = eval(*e.items[0]);
      if (e.name == "%" && a.is_string() && e.items[1]->kind == ExprKind::Tuple) {  // 'format' % (x, y)
        std::vector<Value> args;
        for (const auto& item : e.items[1]->items) args.push_back(eval(*item));
        return Value::of(printf_format(a.data().get<std::string>(), args, nullptr));
      }
      return binary_op(e.name, a, eval(*e.items[1]));
    }
    case ExprKind::Concat: {
      std::string out;
      for (const auto& item : e.items) out += py_str(eval(*item));
      return Value::of(std::move(out));
    }
    default:
      return eval_logic(e);
  }
}

// not, and, or, comparisons and a if c else b; and / or give an operand, as in Python.
Value Renderer::eval_logic(const Expr& e) {
  switch (e.kind) {
    case ExprKind::Not:
      return Value::of(!truthy(eval(*e.items[0])));
    case ExprKind::And: {
      Value left = eval(*e.items[0]);
      return truthy(left) ? eval(*e.items[1]) : left;
    }
    case ExprKind::Or: {
      Value left = eval(*e.items[0]);
      return truthy(left) ? left : eval(*e.items[1]);
    }
    case ExprKind::Compare: {
      Value left = eval(*e.items[0]);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.items[i + 1]);
        if (!compare(e.ops[i], left, right)) return Value::of(false);
        left = std::move(right);
      }
      return Value::of(true);
    }
    case ExprKind::CondExpr: {
      if (truthy(eval(*e.items[0]))) return eval(*e.items[1]);
      if (e.items[2]) return eval(*e.items[2]);
      return Value::undefined(fmt::format("the inline if-expression on line {} evaluated to false and no else section was defined.", e.pos.line));
    }
    default:
      render_fail("internal: unknown expression kind");
  }
}

Value Renderer::eval_collection(const Expr& e) {
  if (e.kind != ExprKind::Dict) {
    Json out = Json::array();
    for (const auto& item : e.items) out.push_back(to_json(eval(*item)));
    return Value::of(std::move(out));
  }
  Json out = Json::object();
  for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
    const std::string key = dict_key(eval(*e.items[i]));
    out[key] = to_json(eval(*e.items[i + 1]));
  }
  return Value::of(std::move(out));
}

CallArgs Renderer::eval_args(const Expr& e, size_t first) {
  CallArgs args;
  for (size_t i = first; i < e.items.size(); ++i) args.positional.push_back(eval(*e.items[i]));
  if (e.star_args)
    for (auto& v : iterate(eval(*e.star_args))) args.positional.push_back(std::move(v));
  for (const auto& k : e.keywords) args.keywords.emplace_back(k.name, eval(*k.value));
  if (e.star_kwargs) {
    const Value extra = eval(*e.star_kwargs);
    if (!extra.is_dict()) render_fail("argument after ** must be a mapping, not {}", type_name(extra));
    for (const auto& [key, item] : extra.data().items()) args.keywords.emplace_back(key, Value::borrowed(extra.data_ptr(), item));
  }
  return args;
}

Value Renderer::eval_call(const Expr& e) {
  const Value callee = eval(*e.items[0]);
  CallArgs args = eval_args(e, 1);
  if (callee.is_undefined()) undefined_error(callee);
  if (!callee.is_object() || !callee.object()->callable()) render_fail("'{}' object is not callable", type_name(callee));
  spend(1);
  return callee.object()->call(*this, args);
}

Value Renderer::eval_filter(const Expr& e) {
  Value subject;
  if (e.items[0]) {
    subject = eval(*e.items[0]);
  } else {
    if (!block_subject_) render_fail("internal: a filter without a subject");
    subject = *block_subject_;
  }
  CallArgs args = eval_args(e, 1);
  return call_filter(*this, e.name, subject, args);
}

// A macro call: parameters bound from the arguments (missing ones are undefined,
// defaults evaluated in the call's scope), then the body rendered to a string.
Value Renderer::call_macro(const Macro& macro, CallArgs& args) {
  const Stmt& def = *macro.definition;
  if (call_depth_ >= kMaxCallDepth) render_fail("maximum recursion depth exceeded in macro '{}'", macro.name);
  const auto outer = scope_;
  scope_ = std::make_shared<Scope>(macro.closure);
  const size_t n = def.params.size();
  Json varargs = Json::array(), kwargs = Json::object();
  for (size_t i = n; i < args.positional.size(); ++i) varargs.push_back(to_json(args.positional[i]));
  std::vector<bool> bound(n, false);
  for (size_t i = 0; i < n && i < args.positional.size(); ++i) scope_->set(def.params[i], args.positional[i]), bound[i] = true;
  for (const auto& [key, value] : args.keywords) {
    const auto it = std::find(def.params.begin(), def.params.end(), key);
    if (it != def.params.end()) {
      const auto i = static_cast<size_t>(it - def.params.begin());
      if (bound[i]) render_fail("macro '{}' got multiple values for argument '{}'", macro.name, key);
      scope_->set(key, value), bound[i] = true;
    } else if (key == "caller") {
      scope_->set("caller", value);
    } else {
      kwargs[key] = to_json(value);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (bound[i]) continue;
    const Expr* fallback = i < def.exprs.size() ? def.exprs[i].get() : nullptr;  // defaults align with params
    scope_->set(def.params[i], fallback ? eval(*fallback) : Value::undefined(fmt::format("parameter '{}' was not provided", def.params[i])));
  }
  scope_->set("varargs", Value::of(std::move(varargs)));
  scope_->set("kwargs", Value::of(std::move(kwargs)));
  ++call_depth_;
  std::string out;
  exec(def.bodies[0], out);
  --call_depth_;
  scope_ = outer;
  return Value::of(std::move(out));
}

}  // namespace m3d::text::jinja
