// See jinja_value.h: jinja2 3.1's builtin filters on strings and numbers (filters.py),
// with transformers' tojson (json.dumps, ensure_ascii=False). The sequence filters are
// in jinja_filters_seq.cpp. jinja2 filters not implemented here parse, and fail when run.
#include <cmath>
#include <cstdio>
#include <map>

#include "text/jinja_value.h"
#include "text/utf8.h"

namespace m3d::text::jinja {

namespace {

Value method(Renderer& r, const Value& self, const char* name, CallArgs args) { return bound_method(self, name).object()->call(r, args); }

Value soft_str(const Value& v) { return v.is_string() ? v : Value::of(py_str(v)); }

Value f_string(Renderer&, const Value& v, CallArgs& args) { return Params("string", args, {}), Value::of(py_str(v)); }
Value f_trim(Renderer& r, const Value& v, CallArgs& args) { return method(r, soft_str(v), "strip", args); }
Value f_upper(Renderer& r, const Value& v, CallArgs& args) { return method(r, soft_str(v), "upper", args); }
Value f_lower(Renderer& r, const Value& v, CallArgs& args) { return method(r, soft_str(v), "lower", args); }
Value f_capitalize(Renderer& r, const Value& v, CallArgs& args) { return method(r, soft_str(v), "capitalize", args); }
Value f_length(Renderer&, const Value& v, CallArgs& args) { return Params("length", args, {}), Value::of(length(v)); }
Value f_safe(Renderer&, const Value& v, CallArgs& args) { return Params("safe", args, {}), Value::markup(py_str(v)); }

// jinja2's do_title: words begin after runs of -, whitespace and opening brackets.
Value f_title(Renderer&, const Value& v, CallArgs& args) {
  Params("title", args, {});
  std::string out;
  bool word_start = true;
  const std::string s = py_str(v);
  for (const auto ch : code_points(s)) {
    const bool separator =
        ch == "-" || ch == "(" || ch == "{" || ch == "[" || ch == "<" || (utf8::valid_char_length(ch) && utf8::python_space(utf8::code_point(ch)));
    out += separator ? std::string(ch) : word_start ? py_upper(ch) : py_lower(ch);
    word_start = separator;
  }
  return Value::of(std::move(out));
}

Value f_replace(Renderer& r, const Value& v, CallArgs& args) {
  const Params p("replace", args, {"old", "new", "count"});
  CallArgs call;
  call.positional = {Value::of(py_str(p.get(0))), Value::of(py_str(p.get(1)))};
  if (p.has(2) && !p.get(2).is_none()) call.positional.push_back(p.get(2));
  return method(r, soft_str(v), "replace", call);
}

Value f_center(Renderer&, const Value& v, CallArgs& args) {
  const Params p("center", args, {"width"});
  const std::string s = py_str(v);
  const int64_t width = p.has(0) ? as_int(p.get(0), "width") : 80, n = length(Value::of(s));
  if (width <= n) return Value::of(s);
  const int64_t margin = width - n, left = margin / 2 + (margin & width & 1);  // CPython's pad()
  return Value::of(std::string(size_arg(left, "center width"), ' ') + s + std::string(size_arg(margin - left, "center width"), ' '));
}

Value f_indent(Renderer& r, const Value& v, CallArgs& args) {
  const Params p("indent", args, {"width", "first", "blank"});
  if (v.is_undefined()) undefined_error(v);
  if (!v.is_string()) render_fail("unsupported operand type(s) for +=: '{}' and 'str'", type_name(v));  // do_indent's s += newline
  const Value width = p.get_or(0, Value::of(4));
  const std::string indention = width.is_string() ? width.data().get<std::string>() : std::string(size_arg(as_int(width, "width"), "indent width"), ' ');
  const bool first = p.has(1) && truthy(p.get(1)), blank = p.has(2) && truthy(p.get(2));
  const Value lines = method(r, Value::of(py_str(v) + "\n"), "splitlines", {});
  std::string out;
  size_t i = 0;
  for (const auto& line : lines.data()) {
    const std::string& l = line.get_ref<const std::string&>();
    if (i++ > 0) out += "\n" + std::string(blank || !l.empty() ? indention : "");
    out += l;
  }
  return Value::of(first ? indention + out : out);
}

Value f_escape(Renderer&, const Value& v, CallArgs& args) {
  Params("escape", args, {});
  return v.is_safe() ? v : Value::markup(html_escape(py_str(v)));
}

Value f_default(Renderer&, const Value& v, CallArgs& args) {
  const Params p("default", args, {"default_value", "boolean"});
  const bool boolean = p.has(1) && truthy(p.get(1));
  if (v.is_undefined() || (boolean && !truthy(v))) return p.get_or(0, Value::of(""));
  return v;
}

// Python's int(str, base): whitespace around, a sign, _ between digits, base prefixes.
std::optional<__int128> parse_int(std::string_view s, int base) {
  const std::string t = utf8::python_rstrip(utf8::python_lstrip(s));
  size_t i = 0;
  const bool negative = i < t.size() && t[i] == '-';
  if (i < t.size() && (t[i] == '-' || t[i] == '+')) ++i;
  if (i + 1 < t.size() && t[i] == '0') {
    const char p = static_cast<char>(t[i + 1] | 0x20);
    const int prefixed = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
    if (prefixed && (base == 0 || base == prefixed)) base = prefixed, i += 2;
    if (i < t.size() && t[i] == '_' && prefixed) ++i;
  }
  if (base == 0) base = 10;
  __int128 value = 0;
  bool digit_seen = false, underscore = false;
  for (; i < t.size(); ++i) {
    if (t[i] == '_' && digit_seen && !underscore) {
      underscore = true;
      continue;
    }
    const char c = static_cast<char>(t[i] | 0x20);
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'z' ? c - 'a' + 10 : 99;
    if (d >= base) return std::nullopt;
    value = value * base + d;
    if (value > static_cast<__int128>(UINT64_MAX)) return std::nullopt;
    digit_seen = true, underscore = false;
  }
  if (!digit_seen || underscore) return std::nullopt;
  return negative ? -value : value;
}

// Python's float(str): decimal literals with _ between digits, inf / infinity / nan.
std::optional<double> parse_float(std::string_view s) {
  std::string t = utf8::python_rstrip(utf8::python_lstrip(s)), lower;
  for (const char c : t) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
  const std::string body = !lower.empty() && (lower[0] == '+' || lower[0] == '-') ? lower.substr(1) : lower;
  if (body == "inf" || body == "infinity") return lower[0] == '-' ? -INFINITY : INFINITY;
  if (body == "nan") return NAN;
  std::string clean;
  bool digits = false;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    const bool digit = c >= '0' && c <= '9';
    if (c == '_') {
      if (i == 0 || i + 1 >= t.size() || !(t[i - 1] >= '0' && t[i - 1] <= '9') || !(t[i + 1] >= '0' && t[i + 1] <= '9')) return std::nullopt;
      continue;
    }
    if (!digit && c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-') return std::nullopt;
    digits = digits || digit;
    clean += c;
  }
  if (!digits) return std::nullopt;
  char* end = nullptr;
  const double d = std::strtod(clean.c_str(), &end);
  if (end != clean.c_str() + clean.size()) return std::nullopt;
  return d;
}

Value int_value(__int128 x) {
  if (x >= INT64_MIN && x <= INT64_MAX) return Value::of(static_cast<int64_t>(x));
  return Value::of(static_cast<uint64_t>(x));
}

Value f_int(Renderer&, const Value& v, CallArgs& args) {
  const Params p("int", args, {"default", "base"});
  const Value fallback = p.get_or(0, Value::of(0));
  if (v.is_undefined()) undefined_error(v);
  if (v.is_integer() || v.is_bool()) return Value::of(as_int(v, "value"));
  if (v.is_float()) {
    const double d = v.data().get<double>();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return fallback;
    return Value::of(static_cast<int64_t>(std::trunc(d)));
  }
  if (!v.is_string()) return fallback;
  const std::string& s = v.data().get_ref<const std::string&>();
  if (const auto i = parse_int(s, p.has(1) ? static_cast<int>(as_int(p.get(1), "base")) : 10)) return int_value(*i);
  const auto d = parse_float(s);  // "42.23"|int is 42
  if (!d || !std::isfinite(*d) || std::fabs(*d) >= 9.2e18) return fallback;
  return Value::of(static_cast<int64_t>(std::trunc(*d)));
}

Value f_float(Renderer&, const Value& v, CallArgs& args) {
  const Params p("float", args, {"default"});
  if (v.is_undefined()) undefined_error(v);
  if (v.is_number()) return Value::of(as_number(v, "value"));
  if (v.is_string())
    if (const auto d = parse_float(v.data().get_ref<const std::string&>())) return Value::of(*d);
  return p.get_or(0, Value::of(0.0));
}

Value f_abs(Renderer&, const Value& v, CallArgs& args) {
  Params("abs", args, {});
  if (!v.is_number()) render_fail("bad operand type for abs(): '{}'", type_name(v));
  if (v.is_float()) return Value::of(std::fabs(v.data().get<double>()));
  const int64_t i = as_int(v, "value");
  if (i == INT64_MIN) render_fail("integer overflow: the result does not fit in 64 bits");
  return Value::of(i < 0 ? -i : i);
}

// do_round: 'common' is Python's round() (to even on exact ties, an int stays an int);
// 'ceil' / 'floor' scale by 10**precision and give a float.
Value f_round(Renderer&, const Value& v, CallArgs& args) {
  const Params p("round", args, {"precision", "method"});
  const int64_t precision = p.has(0) ? as_int(p.get(0), "precision") : 0;
  const std::string how = p.has(1) ? py_str(p.get(1)) : "common";
  if (how != "common" && how != "ceil" && how != "floor") render_fail("method must be common, ceil or floor");
  if (!v.is_number()) render_fail("type {} doesn't define __round__ method", type_name(v));
  const double x = as_number(v, "value"), scale = std::pow(10.0, static_cast<double>(precision));
  if (how != "common") return Value::of((how == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale);
  if (!v.is_float() && precision >= 0) return Value::of(as_int(v, "value"));
  if (!std::isfinite(x)) return Value::of(x);
  if (precision < 0) return Value::of(std::nearbyint(x / std::pow(10.0, static_cast<double>(-precision))) * std::pow(10.0, static_cast<double>(-precision)));
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::min<int64_t>(precision, 300)), x);  // exact decimal rounding, ties to even
  return Value::of(std::strtod(buf, nullptr));
}

// transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
Value f_tojson(Renderer&, const Value& v, CallArgs& args) {
  const Params p("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions o;
  o.ensure_ascii = p.has(0) && truthy(p.get(0));
  if (p.has(1) && !p.get(1).is_none())
    o.indent = p.get(1).is_string() ? p.get(1).data().get<std::string>() : std::string(size_arg(as_int(p.get(1), "indent"), "tojson indent"), ' ');
  if (p.has(2) && !p.get(2).is_none()) {
    const Value& s = p.get(2);
    if (!s.is_list() || s.data().size() != 2 || !s.data()[0].is_string() || !s.data()[1].is_string())
      render_fail("tojson: separators must be a pair of strings");
    o.separators = std::make_pair(s.data()[0].get<std::string>(), s.data()[1].get<std::string>());
  }
  o.sort_keys = p.has(3) && truthy(p.get(3));
  return Value::of(json_dumps(v, o));
}

Value f_attr(Renderer&, const Value& v, CallArgs& args) {
  const Params p("attr", args, {"name"});
  const std::string name = py_str(p.get(0));
  if (v.is_undefined()) undefined_error(v);
  if (v.is_object()) return v.object()->attribute(name);
  if (has_method(v, name)) return bound_method(v, name);
  return Value::undefined(undefined_hint_attribute(v, name));
}

// printf-style formatting (value % args): %s %r %d %i %f %x %o %% with flags, width, precision.
Value f_format(Renderer&, const Value& v, CallArgs& args) {
  if (!args.positional.empty() && !args.keywords.empty()) render_fail("can't handle positional and keyword arguments at the same time");
  if (args.keywords.empty()) return Value::of(printf_format(py_str(v), args.positional, nullptr));  // value % args (a tuple)
  Json mapping = Json::object();
  for (const auto& [key, item] : args.keywords) mapping[key] = to_json(item);
  const Value m = Value::of(std::move(mapping));
  return Value::of(printf_format(py_str(v), {m}, &m));
}

const std::map<std::string, FilterFn>& string_filters() {
  static const std::map<std::string, FilterFn> filters = {
      {"abs", f_abs},         {"attr", f_attr},     {"capitalize", f_capitalize}, {"center", f_center},   {"count", f_length},  {"d", f_default},
      {"default", f_default}, {"e", f_escape},      {"escape", f_escape},         {"float", f_float},     {"format", f_format}, {"indent", f_indent},
      {"int", f_int},         {"length", f_length}, {"lower", f_lower},           {"replace", f_replace}, {"round", f_round},   {"safe", f_safe},
      {"string", f_string},   {"title", f_title},   {"tojson", f_tojson},         {"trim", f_trim},       {"upper", f_upper},
  };
  return filters;
}

// jinja2 builtins this engine leaves out: they parse, and fail when run.
bool unimplemented_builtin(const std::string& name) {
  static const char* const names[] = {"filesizeformat", "forceescape", "groupby", "pprint",    "random",   "striptags",
                                      "truncate",       "urlencode",   "urlize",  "wordcount", "wordwrap", "xmlattr"};
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

}  // namespace

bool filter_exists(const std::string& name) { return string_filters().count(name) || sequence_filters().count(name) || unimplemented_builtin(name); }

Value call_filter(Renderer& renderer, const std::string& name, const Value& subject, CallArgs& args) {
  if (const auto it = string_filters().find(name); it != string_filters().end()) return it->second(renderer, subject, args);
  if (const auto it = sequence_filters().find(name); it != sequence_filters().end()) return it->second(renderer, subject, args);
  if (unimplemented_builtin(name)) render_fail("the filter '{}' is not supported by this Jinja engine", name);
  render_fail("No filter named '{}' found.", name);
}

}  // namespace m3d::text::jinja
