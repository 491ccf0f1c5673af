// The runtime values of the Jinja engine (internal to src/text/jinja_*.cpp) and
// Python's semantics for them: data are JSON values shared without copies (a value
// inside the context points into it), plus jinja2's Undefined and the objects a
// template can hold (namespaces, macros, functions, bound methods, loop state).
#pragma once

#include <fmt/format.h>

#include <ctime>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/jinja_ast.h"

namespace m3d::text::jinja {

class Renderer;
class Value;

// A runtime error whose template location the evaluator adds (NAME:LINE:COLUMN: ...).
class RenderError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void render_fail(fmt::format_string<Args...> format, Args&&... args) {
  throw RenderError(fmt::format(format, std::forward<Args>(args)...));
}

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
};

class Object {
 public:
  virtual ~Object() = default;
  virtual std::string type_name() const = 0;  // as Python names the type
  virtual Value attribute(const std::string& name) const;  // default: undefined
  virtual bool callable() const { return false; }
  virtual Value call(Renderer& renderer, CallArgs& args) const;  // default: not callable
  virtual std::string repr() const;
  virtual void release() {}  // drops the values it holds, breaking reference cycles after a render
};

// Registers an object that can hold values (and so reference cycles) for release
// when the render ends (jinja_eval.cpp).
void track_object(Renderer& renderer, const std::shared_ptr<Object>& object);

class Value {
 public:
  enum class Kind { Undefined, Data, Object };

  Value() = default;  // undefined, named by nothing
  static Value undefined(std::string hint) {
    Value v;
    v.hint_ = std::move(hint);
    return v;
  }
  // Lists and dicts hold jinja2's Undefined as a discarded JSON value (see to_json).
  static Value of(Json json) {
    if (json.is_discarded()) return undefined("an undefined value stored in a list or dict");
    Value v;
    v.kind_ = Kind::Data;
    v.data_ = std::make_shared<const Json>(std::move(json));
    return v;
  }
  // A node inside `owner`, which it keeps alive.
  static Value borrowed(const std::shared_ptr<const Json>& owner, const Json& node) {
    if (node.is_discarded()) return undefined("an undefined value stored in a list or dict");
    Value v;
    v.kind_ = Kind::Data;
    v.data_ = std::shared_ptr<const Json>(owner, &node);
    return v;
  }
  // A markupsafe.Markup string (from |safe, |escape): `+` escapes the other operand.
  static Value markup(std::string text) {
    Value v = of(std::move(text));
    v.safe_ = true;
    return v;
  }
  static Value object(std::shared_ptr<Object> object) {
    Value v;
    v.kind_ = Kind::Object;
    v.object_ = std::move(object);
    return v;
  }

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_data() const { return kind_ == Kind::Data; }
  bool is_object() const { return kind_ == Kind::Object; }
  bool is_string() const { return is_data() && data_->is_string(); }
  bool is_safe() const { return safe_; }
  bool is_none() const { return is_data() && data_->is_null(); }
  bool is_list() const { return is_data() && data_->is_array(); }
  bool is_dict() const { return is_data() && data_->is_object(); }
  bool is_bool() const { return is_data() && data_->is_boolean(); }
  bool is_integer() const { return is_data() && data_->is_number_integer(); }  // bool excluded
  bool is_float() const { return is_data() && data_->is_number_float(); }
  bool is_number() const { return is_data() && (data_->is_number() || data_->is_boolean()); }  // Python: bool is an int

  const Json& data() const { return *data_; }
  const std::shared_ptr<const Json>& data_ptr() const { return data_; }
  Object* object() const { return object_.get(); }
  const std::shared_ptr<Object>& object_ptr() const { return object_; }
  template <typename T>
  T* as() const {
    return dynamic_cast<T*>(object_.get());
  }
  // Undefined: the message jinja2's UndefinedError would carry.
  const std::string& hint() const { return hint_; }

 private:
  Kind kind_ = Kind::Undefined;
  std::shared_ptr<const Json> data_;
  std::shared_ptr<Object> object_;
  std::string hint_;
  bool safe_ = false;
};

// Throws jinja2's UndefinedError for `v` (an undefined value being used).
[[noreturn]] void undefined_error(const Value& v);
std::string undefined_hint_attribute(const Value& owner, const std::string& attribute);

// --- Python semantics (jinja_value.cpp) ---
std::string py_str(const Value& v);  // str(v)
std::string py_repr(const Value& v);  // repr(v)
std::string py_repr_string(std::string_view s);
std::string float_repr(double d);  // repr(float)
std::string type_name(const Value& v);  // type(v).__name__
bool truthy(const Value& v);
bool equal(const Value& a, const Value& b);
bool less(const Value& a, const Value& b, const char* op);  // a < b; TypeError text names `op`
int64_t length(const Value& v);
std::vector<Value> iterate(const Value& v);  // for x in v
Json to_json(const Value& v);  // for storing in a list or dict; undefined becomes a discarded value
// json.dumps with transformers' defaults (ensure_ascii=False).
struct JsonDumpOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // None: one line
  std::optional<std::pair<std::string, std::string>> separators;  // item, key; None: Python's defaults
  bool sort_keys = false;
};
std::string json_dumps(const Value& v, const JsonDumpOptions& options);
int64_t as_int(const Value& v, const char* what);  // an int (or bool) argument
// A count of characters or items to make: negative is 0, past 64 Mi fails (the
// output could not hold it anyway).
size_t size_arg(int64_t n, const char* what);
// Dict keys: JSON objects have string keys, so a Python key of another type (a
// template's {512: 128}) is stored as "\x01" + its JSON text and decoded on the way out.
std::string dict_key(const Value& key);
Value key_value(const std::string& key);
std::string html_escape(std::string_view s);  // markupsafe.escape  // an int (or bool) argument
double as_number(const Value& v, const char* what);

// --- UTF-8 strings as Python's str (jinja_value.cpp) ---
std::vector<std::string_view> code_points(std::string_view s);  // views into `s`: keep it alive
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
bool py_is_cased_upper(uint32_t cp);
bool py_is_cased_lower(uint32_t cp);
std::string py_title_case_char(std::string_view ch);  // the titlecase form of one character

// --- Attributes, items and operators (jinja_operators.cpp) ---
Value get_attribute(const Value& obj, const std::string& name);  // obj.name
Value get_item(const Value& obj, const Value& key);  // obj[key]
Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
Value binary_op(const std::string& op, const Value& a, const Value& b);
Value negate(const Value& v, bool minus);
bool contains(const Value& container, const Value& item);  // item in container
bool compare(const std::string& op, const Value& a, const Value& b);

// --- Methods and globals (jinja_methods.cpp) ---
// Whether `value.name` is a method of a str / dict / list that templates may call.
bool has_method(const Value& value, const std::string& name);
Value bound_method(const Value& self, const std::string& name);
// range, namespace, dict, raise_exception, strftime_now; undefined for other names.
Value global_function(const std::string& name);
std::tm render_time(const Renderer& renderer);  // what strftime_now formats (jinja_eval.cpp)
class Namespace : public Object {
 public:
  std::string type_name() const override { return "Namespace"; }
  Value attribute(const std::string& name) const override;
  std::string repr() const override;
  std::vector<std::pair<std::string, Value>> attributes;
  void set(const std::string& name, Value value);
  void release() override { attributes.clear(); }
};

// printf-style formatting, Python's `format % args`: `args` fill %s / %d / ...,
// `mapping` (a dict, or null) fills %(name)s and excuses unused arguments (jinja_operators.cpp).
std::string printf_format(const std::string& format, const std::vector<Value>& args, const Value* mapping);

// --- Filters and tests (jinja_filters.cpp, jinja_filters_seq.cpp, jinja_tests.cpp) ---
using FilterFn = Value (*)(Renderer& renderer, const Value& subject, CallArgs& args);
const std::map<std::string, FilterFn>& sequence_filters();
Value call_filter(Renderer& renderer, const std::string& name, const Value& subject, CallArgs& args);
bool call_test(Renderer& renderer, const std::string& name, const Value& subject, CallArgs& args);

// Python-style binding of call arguments to named parameters.
class Params {
 public:
  Params(const char* function, const CallArgs& args, std::initializer_list<const char*> names);
  bool has(size_t i) const { return present_[i]; }
  const Value& get(size_t i) const { return values_[i]; }
  Value get_or(size_t i, Value fallback) const { return present_[i] ? values_[i] : std::move(fallback); }

 private:
  std::vector<Value> values_;
  std::vector<bool> present_;
};

}  // namespace m3d::text::jinja
