// See jinja_value.h: the global functions of transformers' chat template environment
// (jinja2's range / namespace / dict, transformers' raise_exception / strftime_now)
// and the namespace object that `{% set ns.x = ... %}` writes to.
#include <algorithm>
#include <ctime>

#include "text/jinja_value.h"

namespace m3d::text::jinja {

Value Namespace::attribute(const std::string& name) const {
  for (const auto& [key, value] : attributes)
    if (key == name) return value;
  return Value::undefined(fmt::format("'Namespace object' has no attribute '{}'", name));
}

void Namespace::set(const std::string& name, Value value) {
  for (auto& [key, old] : attributes) {
    if (key == name) {
      old = std::move(value);
      return;
    }
  }
  attributes.emplace_back(name, std::move(value));
}

std::string Namespace::repr() const {
  std::string out = "<Namespace {";
  for (size_t i = 0; i < attributes.size(); ++i) out += (i ? ", " : "") + py_repr_string(attributes[i].first) + ": " + py_repr(attributes[i].second);
  return out + "}>";
}

namespace {

using Function = Value (*)(Renderer& renderer, CallArgs& args);

class GlobalFunction : public Object {
 public:
  GlobalFunction(std::string name, Function f) : name_(std::move(name)), f_(f) {}
  std::string type_name() const override { return "function"; }
  bool callable() const override { return true; }
  Value call(Renderer& renderer, CallArgs& args) const override { return f_(renderer, args); }
  std::string repr() const override { return fmt::format("<function {}>", name_); }

 private:
  std::string name_;
  Function f_;
};

// range(stop) / range(start, stop[, step]) as a list; the sandbox's MAX_RANGE bounds it.
Value range(Renderer&, CallArgs& args) {
  if (!args.keywords.empty()) render_fail("range() takes no keyword arguments");
  const auto& a = args.positional;
  if (a.empty() || a.size() > 3) render_fail("range expected 1 to 3 arguments, got {}", a.size());
  const int64_t start = a.size() == 1 ? 0 : as_int(a[0], "range() argument");
  const int64_t stop = as_int(a.size() == 1 ? a[0] : a[1], "range() argument");
  const int64_t step = a.size() == 3 ? as_int(a[2], "range() argument") : 1;
  if (step == 0) render_fail("range() arg 3 must not be zero");
  Json out = Json::array();
  for (__int128 i = start; step > 0 ? i < stop : i > stop; i += step) {  // 128 bits: no overflow past the end
    if (out.size() >= 100000) render_fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    out.push_back(static_cast<int64_t>(i));
  }
  return Value::of(std::move(out));
}

// The items of dict(mapping, **kwargs) / namespace(mapping, **kwargs).
std::vector<std::pair<std::string, Value>> mapping_items(const CallArgs& args, const char* function) {
  if (args.positional.size() > 1) render_fail("{} expected at most 1 argument, got {}", function, args.positional.size());
  std::vector<std::pair<std::string, Value>> items;
  if (!args.positional.empty()) {
    const Value& m = args.positional[0];
    if (m.is_dict()) {
      for (const auto& [key, item] : m.data().items()) items.emplace_back(key, Value::borrowed(m.data_ptr(), item));
    } else if (m.is_list()) {
      for (const auto& pair : m.data()) {
        if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string()) render_fail("{}: each item of the sequence must be a (str, value) pair", function);
        items.emplace_back(pair[0].get<std::string>(), Value::of(pair[1]));
      }
    } else {
      render_fail("'{}' object is not iterable", type_name(m));
    }
  }
  for (const auto& kv : args.keywords) items.push_back(kv);
  return items;
}

Value make_namespace(Renderer& renderer, CallArgs& args) {
  auto ns = std::make_shared<Namespace>();
  track_object(renderer, ns);
  for (auto& [key, value] : mapping_items(args, "namespace")) ns->set(key, std::move(value));
  return Value::object(std::move(ns));
}

Value make_dict(Renderer&, CallArgs& args) {
  Json out = Json::object();
  for (auto& [key, value] : mapping_items(args, "dict")) out[key] = to_json(value);
  return Value::of(std::move(out));
}

// transformers' raise_exception: a TemplateError carrying the template's message.
Value raise_exception(Renderer&, CallArgs& args) {
  const Params p("raise_exception", args, {"message"});
  throw RenderError(py_str(p.get(0)));
}

// transformers' strftime_now: datetime.now().strftime(format).
Value strftime_now(Renderer& renderer, CallArgs& args) {
  const Params p("strftime_now", args, {"format"});
  if (!p.get(0).is_string()) render_fail("strftime() argument 1 must be str, not {}", type_name(p.get(0)));
  const std::string& format = p.get(0).data().get_ref<const std::string&>();
  const std::tm now = render_time(renderer);
  std::string out(format.size() * 4 + 64, '\0');
  const size_t n = format.empty() ? 0 : std::strftime(out.data(), out.size(), format.c_str(), &now);
  out.resize(n);
  return Value::of(std::move(out));
}

}  // namespace

Value global_function(const std::string& name) {
  static const std::pair<const char*, Function> globals[] = {
      {"range", range}, {"namespace", make_namespace}, {"dict", make_dict}, {"raise_exception", raise_exception}, {"strftime_now", strftime_now},
  };
  for (const auto& [n, f] : globals)
    if (name == n) return Value::object(std::make_shared<GlobalFunction>(n, f));
  return Value::undefined(fmt::format("'{}' is undefined", name));
}

}  // namespace m3d::text::jinja
