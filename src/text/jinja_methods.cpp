// See jinja_value.h: the str / dict / list methods templates call (`s.strip()`,
// `d.items()`), the globals transformers' environment has, and argument binding.
// As jinja2's ImmutableSandboxedEnvironment, methods that mutate a list or dict
// are unsafe: reading one gives an undefined that fails when called.
#include <algorithm>
#include <map>

#include "text/jinja_value.h"
#include "text/utf8.h"

namespace m3d::text::jinja {

Params::Params(const char* function, const CallArgs& args, std::initializer_list<const char*> names) : values_(names.size()), present_(names.size()) {
  if (args.positional.size() > names.size()) render_fail("{}() takes at most {} argument(s) ({} given)", function, names.size(), args.positional.size());
  for (size_t i = 0; i < args.positional.size(); ++i) values_[i] = args.positional[i], present_[i] = true;
  for (const auto& keyword : args.keywords) {
    const std::string& key = keyword.first;
    const Value& value = keyword.second;
    const auto it = std::find_if(names.begin(), names.end(), [&](const char* n) { return key == n; });
    if (it == names.end()) render_fail("{}() got an unexpected keyword argument '{}'", function, key);
    const auto i = static_cast<size_t>(it - names.begin());
    if (present_[i]) render_fail("{}() got multiple values for argument '{}'", function, key);
    values_[i] = value, present_[i] = true;
  }
}

namespace {

using Method = Value (*)(const Value& self, const CallArgs& args);

const std::string& text(const Value& v) { return v.data().get_ref<const std::string&>(); }

std::string string_arg(const Value& v, const char* function) {
  if (!v.is_string()) render_fail("{}() argument must be str, not {}", function, type_name(v));
  return text(v);
}

bool is_space(std::string_view ch) { return utf8::valid_char_length(ch) > 0 && utf8::python_space(utf8::code_point(ch)); }

// str.strip / lstrip / rstrip: whitespace, or any character of `chars`.
Value strip(const Value& self, const CallArgs& args, bool left, bool right, const char* function) {
  const Params p(function, args, {"chars"});
  const bool whitespace = !p.has(0) || p.get(0).is_none();
  const std::string chars_arg = whitespace ? std::string() : string_arg(p.get(0), function);
  const auto set = code_points(chars_arg);
  auto strip_it = [&](std::string_view ch) { return whitespace ? is_space(ch) : std::find(set.begin(), set.end(), ch) != set.end(); };
  const std::string& s = text(self);
  const auto chars = code_points(s);
  size_t from = 0, to = chars.size();
  while (left && from < to && strip_it(chars[from])) ++from;
  while (right && to > from && strip_it(chars[to - 1])) --to;
  std::string out;
  for (size_t i = from; i < to; ++i) out += chars[i];
  return Value::of(std::move(out));
}

// str.split / rsplit; `reverse` splits from the right.
Value split(const Value& self, const CallArgs& args, bool reverse) {
  const char* function = reverse ? "rsplit" : "split";
  const Params p(function, args, {"sep", "maxsplit"});
  const int64_t maxsplit = p.has(1) ? as_int(p.get(1), "maxsplit") : -1;
  std::vector<std::string> parts;
  if (!p.has(0) || p.get(0).is_none()) {
    auto chars = code_points(text(self));
    if (reverse) std::reverse(chars.begin(), chars.end());
    size_t i = 0;
    while (true) {
      while (i < chars.size() && is_space(chars[i])) ++i;
      if (i == chars.size()) break;
      std::string part;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        while (i < chars.size()) part += chars[i++];  // the rest, trailing whitespace kept
      } else {
        while (i < chars.size() && !is_space(chars[i])) part += chars[i++];
      }
      parts.push_back(std::move(part));
    }
    if (reverse) {
      for (auto& part : parts) {
        auto cps = code_points(part);
        std::string fixed;
        for (auto it = cps.rbegin(); it != cps.rend(); ++it) fixed += *it;
        part = std::move(fixed);
      }
      std::reverse(parts.begin(), parts.end());
    }
  } else {
    const std::string sep = string_arg(p.get(0), function), s = text(self);
    if (sep.empty()) render_fail("empty separator");
    if (!reverse) {
      size_t start = 0, at;
      while ((maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) && (at = s.find(sep, start)) != std::string::npos) {
        parts.push_back(s.substr(start, at - start));
        start = at + sep.size();
      }
      parts.push_back(s.substr(start));
    } else {
      size_t end = s.size();
      std::vector<std::string> rev;
      while ((maxsplit < 0 || static_cast<int64_t>(rev.size()) < maxsplit) && end >= sep.size()) {
        const size_t at = s.rfind(sep, end - sep.size());
        if (at == std::string::npos) break;
        rev.push_back(s.substr(at + sep.size(), end - at - sep.size()));
        end = at;
      }
      rev.push_back(s.substr(0, end));
      parts.assign(rev.rbegin(), rev.rend());
    }
  }
  Json out = Json::array();
  for (auto& part : parts) out.push_back(std::move(part));
  return Value::of(std::move(out));
}

Value splitlines(const Value& self, const CallArgs& args) {
  const Params p("splitlines", args, {"keepends"});
  const bool keep = p.has(0) && truthy(p.get(0));
  Json out = Json::array();
  const auto chars = code_points(text(self));
  std::string line;
  for (size_t i = 0; i < chars.size(); ++i) {
    const uint32_t cp = utf8::valid_char_length(chars[i]) ? utf8::code_point(chars[i]) : 0;
    const bool brk = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || (cp >= 0x1C && cp <= 0x1E) || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
    if (!brk) {
      line += chars[i];
      continue;
    }
    std::string ending(chars[i]);
    if (cp == '\r' && i + 1 < chars.size() && chars[i + 1] == "\n") ending += chars[++i];
    out.push_back(keep ? line + ending : line);
    line.clear();
  }
  if (!line.empty()) out.push_back(line);
  return Value::of(std::move(out));
}

// str.startswith / endswith with a str or a tuple (list) of them.
Value affix(const Value& self, const CallArgs& args, bool prefix) {
  const char* function = prefix ? "startswith" : "endswith";
  const Params p(function, args, {"affix", "start", "end"});
  if (!p.has(0)) render_fail("{}() takes at least 1 argument (0 given)", function);
  const Value subject = p.has(1) || p.has(2) ? get_slice(self, p.get_or(1, Value()), p.get_or(2, Value()), Value()) : self;
  const std::string& s = text(subject);
  std::vector<std::string> options;
  if (p.get(0).is_list()) {
    for (const auto& item : p.get(0).data()) options.push_back(string_arg(Value::of(item), function));
  } else {
    options.push_back(string_arg(p.get(0), function));
  }
  for (const auto& o : options) {
    if (o.size() > s.size()) continue;
    if (prefix ? s.compare(0, o.size(), o) == 0 : s.compare(s.size() - o.size(), o.size(), o) == 0) return Value::of(true);
  }
  return Value::of(false);
}

Value replace(const Value& self, const CallArgs& args) {
  const Params p("replace", args, {"old", "new", "count"});
  if (!p.has(1)) render_fail("replace() takes at least 2 arguments");
  const std::string old = string_arg(p.get(0), "replace"), with = string_arg(p.get(1), "replace");
  int64_t count = p.has(2) ? as_int(p.get(2), "count") : -1;
  const std::string& s = text(self);
  std::string out;
  if (old.empty()) {  // Python inserts `with` around every character
    const auto chars = code_points(s);
    for (size_t i = 0; i <= chars.size(); ++i) {
      if (count != 0) out += with, --count;
      if (i < chars.size()) out += chars[i];
    }
    return Value::of(std::move(out));
  }
  size_t start = 0, at;
  while (count != 0 && (at = s.find(old, start)) != std::string::npos) {
    out += s.substr(start, at - start) + with;
    start = at + old.size();
    --count;
  }
  return Value::of(out + s.substr(start));
}

// str.title and str.capitalize as Python 3.8+: titlecase starts, lowercase rest.
Value title(const Value& self, const CallArgs& args) {
  Params("title", args, {});
  std::string out;
  bool previous_cased = false;
  for (const auto ch : code_points(text(self))) {
    out += previous_cased ? py_lower(ch) : py_title_case_char(ch);
    const uint32_t cp = utf8::valid_char_length(ch) ? utf8::code_point(ch) : 0;
    previous_cased = py_is_cased_upper(cp) || py_is_cased_lower(cp);
  }
  return Value::of(std::move(out));
}

Value capitalize(const Value& self, const CallArgs& args) {
  Params("capitalize", args, {});
  const auto chars = code_points(text(self));
  std::string out;
  for (size_t i = 0; i < chars.size(); ++i) out += i == 0 ? py_title_case_char(chars[i]) : py_lower(chars[i]);
  return Value::of(std::move(out));
}

// str.format with {} / {0} / {name} fields, !r / !s conversions and no format specs.
Value format(const Value& self, const CallArgs& args) {
  const std::string& f = text(self);
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == '}') {
      if (i + 1 < f.size() && f[i + 1] == '}') ++i;
      else render_fail("Single '}}' encountered in format string");
      out += '}';
      continue;
    }
    if (f[i] != '{') {
      out += f[i];
      continue;
    }
    if (i + 1 < f.size() && f[i + 1] == '{') {
      out += '{', ++i;
      continue;
    }
    const size_t close = f.find('}', i);
    if (close == std::string::npos) render_fail("Single '{{' encountered in format string");
    std::string field = f.substr(i + 1, close - i - 1);
    i = close;
    if (field.find(':') != std::string::npos) render_fail("str.format: format specifications are not supported ('{}')", field);
    char conversion = 's';
    if (const size_t bang = field.find('!'); bang != std::string::npos) conversion = field[bang + 1], field.resize(bang);
    Value v;
    if (field.empty() || std::all_of(field.begin(), field.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      const size_t index = field.empty() ? auto_index++ : field.size() < 10 ? std::stoul(field) : SIZE_MAX;
      if (index >= args.positional.size()) render_fail("Replacement index {} out of range for positional args tuple", index);
      v = args.positional[index];
    } else {
      const auto it = std::find_if(args.keywords.begin(), args.keywords.end(), [&](const auto& kv) { return kv.first == field; });
      if (it == args.keywords.end()) render_fail("KeyError: '{}'", field);
      v = it->second;
    }
    out += conversion == 'r' || conversion == 'a' ? py_repr(v) : py_str(v);
  }
  return Value::of(std::move(out));
}

Value join(const Value& self, const CallArgs& args) {
  const Params p("join", args, {"iterable"});
  std::string out;
  size_t i = 0;
  for (const Value& item : iterate(p.get(0))) {
    if (!item.is_string()) render_fail("sequence item {}: expected str instance, {} found", i, type_name(item));
    out += (i++ > 0 ? text(self) : "") + text(item);
  }
  return Value::of(std::move(out));
}

Value find(const Value& self, const CallArgs& args, bool from_right, bool count) {
  const char* function = count ? "count" : from_right ? "rfind" : "find";
  const Params p(function, args, {"sub"});
  const std::string sub = string_arg(p.get(0), function), &s = text(self);
  if (count) {
    if (sub.empty()) return Value::of(static_cast<int64_t>(code_points(s).size()) + 1);
    int64_t n = 0;
    for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
    return Value::of(n);
  }
  const size_t at = from_right ? s.rfind(sub) : s.find(sub);
  if (at == std::string::npos) return Value::of(-1);
  return Value::of(static_cast<int64_t>(code_points(std::string_view(s).substr(0, at)).size()));
}

const std::map<std::string, Method>& str_methods() {
  static const std::map<std::string, Method> methods = {
      {"strip", [](const Value& s, const CallArgs& a) { return strip(s, a, true, true, "strip"); }},
      {"lstrip", [](const Value& s, const CallArgs& a) { return strip(s, a, true, false, "lstrip"); }},
      {"rstrip", [](const Value& s, const CallArgs& a) { return strip(s, a, false, true, "rstrip"); }},
      {"split", [](const Value& s, const CallArgs& a) { return split(s, a, false); }},
      {"rsplit", [](const Value& s, const CallArgs& a) { return split(s, a, true); }},
      {"splitlines", splitlines},
      {"startswith", [](const Value& s, const CallArgs& a) { return affix(s, a, true); }},
      {"endswith", [](const Value& s, const CallArgs& a) { return affix(s, a, false); }},
      {"upper", [](const Value& s, const CallArgs& a) { return Params("upper", a, {}), Value::of(py_upper(text(s))); }},
      {"lower", [](const Value& s, const CallArgs& a) { return Params("lower", a, {}), Value::of(py_lower(text(s))); }},
      {"replace", replace},
      {"title", title},
      {"capitalize", capitalize},
      {"format", format},
      {"join", join},
      {"find", [](const Value& s, const CallArgs& a) { return find(s, a, false, false); }},
      {"rfind", [](const Value& s, const CallArgs& a) { return find(s, a, true, false); }},
      {"count", [](const Value& s, const CallArgs& a) { return find(s, a, false, true); }},
  };
  return methods;
}

Value dict_items(const Value& self, const CallArgs& args) {
  Params("items", args, {});
  Json out = Json::array();
  for (const auto& [key, item] : self.data().items()) out.push_back(Json::array({key_value(key).data(), item}));
  return Value::of(std::move(out));
}

Value dict_keys(const Value& self, const CallArgs& args) {
  Params("keys", args, {});
  Json out = Json::array();
  for (const auto& [key, item] : self.data().items()) out.push_back(key_value(key).data());
  return Value::of(std::move(out));
}

Value dict_values(const Value& self, const CallArgs& args) {
  Params("values", args, {});
  Json out = Json::array();
  for (const auto& [key, item] : self.data().items()) out.push_back(item);
  return Value::of(std::move(out));
}

// dict.get(key, default=None): None, not undefined, for a missing key.
Value dict_get(const Value& self, const CallArgs& args) {
  const Params p("get", args, {"key", "default"});
  if (!p.has(0)) render_fail("get expected at least 1 argument, got 0");
  const auto it = self.data().find(dict_key(p.get(0)));
  if (it != self.data().end()) return Value::borrowed(self.data_ptr(), *it);
  return p.get_or(1, Value::of(nullptr));
}

Value list_index(const Value& self, const CallArgs& args) {
  const Params p("index", args, {"value"});
  int64_t i = 0;
  for (const Value& item : iterate(self)) {
    if (equal(item, p.get(0))) return Value::of(i);
    ++i;
  }
  render_fail("{} is not in list", py_repr(p.get(0)));
}

Value list_count(const Value& self, const CallArgs& args) {
  const Params p("count", args, {"value"});
  int64_t n = 0;
  for (const Value& item : iterate(self)) n += equal(item, p.get(0)) ? 1 : 0;
  return Value::of(n);
}

Value copy(const Value& self, const CallArgs& args) { return Params("copy", args, {}), Value::of(self.data()); }

const std::map<std::string, Method>& dict_methods() {
  static const std::map<std::string, Method> methods = {{"items", dict_items}, {"keys", dict_keys}, {"values", dict_values}, {"get", dict_get}, {"copy", copy}};
  return methods;
}

const std::map<std::string, Method>& list_methods() {
  static const std::map<std::string, Method> methods = {{"index", list_index}, {"count", list_count}, {"copy", copy}};
  return methods;
}

bool mutating(const Value& v, const std::string& name) {
  static const char* const list_names[] = {"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"};
  static const char* const dict_names[] = {"pop", "popitem", "setdefault", "update", "clear"};
  if (v.is_list()) return std::find(std::begin(list_names), std::end(list_names), name) != std::end(list_names);
  if (v.is_dict()) return std::find(std::begin(dict_names), std::end(dict_names), name) != std::end(dict_names);
  return false;
}

const std::map<std::string, Method>* methods_of(const Value& v) {
  if (v.is_string()) return &str_methods();
  if (v.is_dict()) return &dict_methods();
  if (v.is_list()) return &list_methods();
  return nullptr;
}

class BoundMethod : public Object {
 public:
  BoundMethod(Value self, Method method, std::string name) : self_(std::move(self)), method_(method), name_(std::move(name)) {}
  std::string type_name() const override { return "builtin_function_or_method"; }
  bool callable() const override { return true; }
  Value call(Renderer&, CallArgs& args) const override { return method_(self_, args); }
  std::string repr() const override { return fmt::format("<built-in method {} of {} object>", name_, jinja::type_name(self_)); }

 private:
  Value self_;
  Method method_;
  std::string name_;
};

}  // namespace

bool has_method(const Value& value, const std::string& name) {
  const auto* methods = methods_of(value);
  return (methods && methods->count(name)) || mutating(value, name);
}

Value bound_method(const Value& self, const std::string& name) {
  if (mutating(self, name)) return Value::undefined(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, type_name(self)));
  return Value::object(std::make_shared<BoundMethod>(self, methods_of(self)->at(name), name));
}

}  // namespace m3d::text::jinja
