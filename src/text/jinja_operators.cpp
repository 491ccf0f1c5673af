// See jinja_value.h: jinja2's getattr / getitem (sandboxed environment) and Python's
// arithmetic, containment and comparison operators. Integers are 64-bit: a result
// Python would widen past that fails instead.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "text/jinja_value.h"

namespace m3d::text::jinja {

namespace {

std::string element_hint(const Value& owner, const Value& key) {
  const std::string owner_repr = owner.is_none() ? "None" : type_name(owner) + " object";
  return fmt::format("{} has no element {}", owner_repr, py_repr(key));
}

}  // namespace

Value get_attribute(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) undefined_error(obj);
  if (obj.is_object()) return obj.object()->attribute(name);
  if (has_method(obj, name)) return bound_method(obj, name);
  if (obj.is_dict()) {
    const auto it = obj.data().find(name);
    if (it != obj.data().end()) return Value::borrowed(obj.data_ptr(), *it);
  }
  return Value::undefined(undefined_hint_attribute(obj, name));
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) undefined_error(obj);
  if (obj.is_object()) return key.is_string() ? obj.object()->attribute(key.data().get<std::string>()) : Value::undefined(element_hint(obj, key));
  const Json& data = obj.data();
  if (obj.is_dict() && (key.is_string() || key.is_number() || key.is_none())) {
    const auto it = data.find(dict_key(key));
    if (it != data.end()) return Value::borrowed(obj.data_ptr(), *it);
  }
  if ((obj.is_list() || obj.is_string()) && (key.is_integer() || key.is_bool())) {
    int64_t index = as_int(key, "an index");
    if (obj.is_list()) {
      const auto n = static_cast<int64_t>(data.size());
      if (index < 0) index += n;
      if (index >= 0 && index < n) return Value::borrowed(obj.data_ptr(), data[static_cast<size_t>(index)]);
    } else {
      const auto chars = code_points(data.get_ref<const std::string&>());
      const auto n = static_cast<int64_t>(chars.size());
      if (index < 0) index += n;
      if (index >= 0 && index < n) return Value::of(std::string(chars[static_cast<size_t>(index)]));
    }
  }
  // jinja2 falls back to the attribute when the key is a string.
  if (key.is_string()) return get_attribute(obj, key.data().get<std::string>());
  return Value::undefined(element_hint(obj, key));
}

namespace {

// Python's PySlice_AdjustIndices: the positions a[start:stop:step] takes.
std::vector<int64_t> slice_indices(int64_t n, const Value& start, const Value& stop, const Value& step) {
  auto bound = [](const Value& v) -> std::optional<int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    return as_int(v, "slice indices");
  };
  const int64_t by = bound(step).value_or(1);
  if (by == 0) render_fail("slice step cannot be zero");
  const int64_t lower = by < 0 ? -1 : 0, upper = by < 0 ? n - 1 : n;
  auto adjust = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v) return fallback;
    int64_t i = *v < 0 ? *v + n : *v;
    return std::min(std::max(i, lower), upper);
  };
  const int64_t from = adjust(bound(start), by < 0 ? upper : lower), to = adjust(bound(stop), by < 0 ? lower : upper);
  std::vector<int64_t> out;
  for (__int128 i = from; by > 0 ? i < to : i > to; i += by) out.push_back(static_cast<int64_t>(i));  // 128 bits: no overflow past the end
  return out;
}

}  // namespace

Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) undefined_error(obj);
  if (obj.is_list()) {
    Json out = Json::array();
    for (const int64_t i : slice_indices(static_cast<int64_t>(obj.data().size()), start, stop, step)) out.push_back(obj.data()[static_cast<size_t>(i)]);
    return Value::of(std::move(out));
  }
  if (obj.is_string()) {
    const auto chars = code_points(obj.data().get_ref<const std::string&>());
    std::string out;
    for (const int64_t i : slice_indices(static_cast<int64_t>(chars.size()), start, stop, step)) out += chars[static_cast<size_t>(i)];
    return Value::of(std::move(out));
  }
  return Value::undefined(fmt::format("{} object is not subscriptable with a slice", type_name(obj)));
}

namespace {

bool is_int_like(const Value& v) { return v.is_integer() || v.is_bool(); }

__int128 wide_int(const Value& v) {
  const Json& j = v.data();
  if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
  if (j.is_number_unsigned()) return static_cast<__int128>(j.get<uint64_t>());
  return j.get<int64_t>();
}

Value int_result(__int128 x) {
  if (x >= INT64_MIN && x <= INT64_MAX) return Value::of(static_cast<int64_t>(x));
  if (x > 0 && x <= static_cast<__int128>(UINT64_MAX)) return Value::of(static_cast<uint64_t>(x));
  render_fail("integer overflow: the result does not fit in 64 bits");
}

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  render_fail("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b));
}

Value repeat(const Value& seq, int64_t times) {
  const uint64_t unit = seq.is_string() ? seq.data().get_ref<const std::string&>().size() : seq.data().size();
  if (times > 0 && unit > 0) size_arg(static_cast<int64_t>(std::min<uint64_t>(static_cast<uint64_t>(times), uint64_t{1} << 30) * unit), "a repetition");
  if (seq.is_string()) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += seq.data().get_ref<const std::string&>();
    return Value::of(std::move(out));
  }
  Json out = Json::array();
  for (int64_t i = 0; i < times; ++i)
    for (const auto& item : seq.data()) out.push_back(item);
  return Value::of(std::move(out));
}

Value int_power(__int128 base, __int128 exponent) {
  __int128 result = 1;
  for (__int128 i = 0; i < exponent; ++i) {
    result *= base;
    if (result > static_cast<__int128>(UINT64_MAX) || result < static_cast<__int128>(INT64_MIN))
      render_fail("integer overflow: the result does not fit in 64 bits");
    if (result == 0 || result == 1) break;
  }
  return int_result(result);
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (is_int_like(a) && is_int_like(b)) {
    const __int128 x = wide_int(a), y = wide_int(b);
    if (op == "+") return int_result(x + y);
    if (op == "-") return int_result(x - y);
    if (op == "*") return int_result(x * y);
    if (op == "/") {
      if (y == 0) render_fail("division by zero");
      return Value::of(static_cast<double>(x) / static_cast<double>(y));
    }
    if (op == "//" || op == "%") {
      if (y == 0) render_fail(op == "//" ? "integer division or modulo by zero" : "integer modulo by zero");
      __int128 q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) --q, r += y;
      return int_result(op == "//" ? q : r);
    }
    if (y >= 0) return int_power(x, y);
    if (x == 0) render_fail("0.0 cannot be raised to a negative power");
    return Value::of(std::pow(static_cast<double>(x), static_cast<double>(y)));
  }
  const double x = as_number(a, "an operand"), y = as_number(b, "an operand");
  if (op == "+") return Value::of(x + y);
  if (op == "-") return Value::of(x - y);
  if (op == "*") return Value::of(x * y);
  if (op == "/") {
    if (y == 0) render_fail("float division by zero");
    return Value::of(x / y);
  }
  if (op == "//" || op == "%") {
    if (y == 0) render_fail(op == "//" ? "float floor division by zero" : "float modulo");
    // Python's float_divmod.
    double mod = std::fmod(x, y), div = (x - mod) / y;
    if (mod != 0 && ((y < 0) != (mod < 0))) mod += y, div -= 1.0;
    if (mod == 0) mod = std::copysign(0.0, y);
    if (op == "%") return Value::of(mod);
    if (div == 0) return Value::of(std::copysign(0.0, x / y));
    double floor_div = std::floor(div);
    if (div - floor_div > 0.5) floor_div += 1.0;
    return Value::of(floor_div);
  }
  if (x == 0 && y < 0) render_fail("0.0 cannot be raised to a negative power");
  const double result = std::pow(x, y);
  if (std::isinf(result) && std::isfinite(x) && std::isfinite(y)) render_fail("(34, 'Numerical result out of range')");  // Python's OverflowError
  return Value::of(result);
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) undefined_error(a);
  if (op == "%" && a.is_string() && b.is_undefined()) return Value::of(printf_format(a.data().get<std::string>(), {b}, &b));  // Undefined acts as a mapping
  if (b.is_undefined()) undefined_error(b);
  if (a.is_number() && b.is_number()) return arithmetic(op, a, b);
  if (op == "+") {
    if (a.is_string() && b.is_string() && (a.is_safe() || b.is_safe())) {  // Markup.__add__ / __radd__ escape plain str
      auto part = [](const Value& v) { return v.is_safe() ? v.data().get<std::string>() : html_escape(v.data().get_ref<const std::string&>()); };
      return Value::markup(part(a) + part(b));
    }
    if (a.is_string() && b.is_string()) return Value::of(a.data().get_ref<const std::string&>() + b.data().get_ref<const std::string&>());
    if (a.is_list() && b.is_list()) {
      Json out = a.data();
      for (const auto& item : b.data()) out.push_back(item);
      return Value::of(std::move(out));
    }
    if (a.is_string() || a.is_list()) render_fail("can only concatenate {} (not \"{}\") to {}", type_name(a), type_name(b), type_name(a));
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && is_int_like(b)) return repeat(a, as_int(b, "a repeat count"));
    if ((b.is_string() || b.is_list()) && is_int_like(a)) return repeat(b, as_int(a, "a repeat count"));
  }
  if (op == "%" && a.is_string()) {  // one argument; the evaluator unpacks a tuple literal
    const bool subscriptable = b.is_list() || b.is_dict();
    return Value::of(printf_format(a.data().get<std::string>(), {b}, subscriptable ? &b : nullptr));
  }
  unsupported(op, a, b);
}

Value negate(const Value& v, bool minus) {
  if (v.is_undefined()) undefined_error(v);
  if (!v.is_number()) render_fail("bad operand type for unary {}: '{}'", minus ? '-' : '+', type_name(v));
  if (v.is_float()) return Value::of(minus ? -v.data().get<double>() : v.data().get<double>());
  return int_result(minus ? -wide_int(v) : wide_int(v));
}

bool contains(const Value& container, const Value& item) {
  if (container.is_undefined()) return false;
  if (container.is_string()) {
    if (!item.is_string()) render_fail("'in <string>' requires string as left operand, not {}", type_name(item));
    return container.data().get_ref<const std::string&>().find(item.data().get_ref<const std::string&>()) != std::string::npos;
  }
  if (container.is_list()) {
    for (const auto& element : container.data())
      if (equal(item, Value::borrowed(container.data_ptr(), element))) return true;
    return false;
  }
  if (container.is_dict()) {
    if (item.is_undefined()) return false;
    return container.data().contains(dict_key(item));
  }
  render_fail("argument of type '{}' is not iterable", type_name(container));
}

namespace {

struct Spec {
  std::string flags;
  int width = -1, precision = -1;
  char conversion = 's';
};

std::string pad(std::string s, const Spec& spec) {
  const auto n = static_cast<int>(code_points(s).size());
  if (spec.width <= n) return s;
  const std::string fill(static_cast<size_t>(spec.width - n), ' ');
  return spec.flags.find('-') != std::string::npos ? s + fill : fill + s;
}

std::string format_one(const Value& v, const Spec& spec) {
  const char c = spec.conversion;
  if (c == 's' || c == 'r' || c == 'a') {
    std::string s = c == 's' ? py_str(v) : py_repr(v);
    if (spec.precision >= 0) {
      const auto chars = code_points(s);
      std::string cut;
      for (size_t i = 0; i < chars.size() && static_cast<int>(i) < spec.precision; ++i) cut += chars[i];
      s = std::move(cut);
    }
    return pad(std::move(s), spec);
  }
  if (!v.is_number()) render_fail("%{} format: a real number is required, not {}", c, type_name(v));
  std::string cfmt = "%" + spec.flags;
  if (spec.width >= 0) cfmt += std::to_string(spec.width);
  if (spec.precision >= 0) cfmt += "." + std::to_string(spec.precision);
  auto print = [](const std::string& c_format, auto value) {
    std::string out(static_cast<size_t>(std::max(std::snprintf(nullptr, 0, c_format.c_str(), value), 0)), '\0');
    std::snprintf(out.data(), out.size() + 1, c_format.c_str(), value);
    return out;
  };
  if (c == 'd' || c == 'i' || c == 'u' || c == 'x' || c == 'X' || c == 'o') {
    if (v.is_float() && c != 'd' && c != 'i' && c != 'u') render_fail("%{} format: an integer is required, not float", c);
    const double d = v.is_float() ? v.data().get<double>() : 0;
    if (v.is_float() && !(std::fabs(d) < 9.2e18)) render_fail("%{} format: the number does not fit in 64 bits", c);
    const long long i = v.is_float() ? static_cast<long long>(std::trunc(d)) : as_int(v, "a %d argument");
    const bool decimal = c == 'd' || c == 'i' || c == 'u';
    if (!decimal && i < 0) render_fail("%{} format of a negative number is not supported", c);
    if (decimal) cfmt.erase(std::remove(cfmt.begin(), cfmt.end(), '#'), cfmt.end());  // C leaves %#d undefined; Python ignores it
    return print(cfmt + "ll" + (decimal ? 'd' : c), i);
  }
  if (std::string_view("fFeEgG").find(c) == std::string_view::npos) render_fail("unsupported format character '{}'", c);
  return print(cfmt + c, as_number(v, "a %f argument"));
}

}  // namespace

std::string printf_format(const std::string& format, const std::vector<Value>& args, const Value* mapping) {
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (++i >= format.size()) render_fail("incomplete format");
    Value v;
    bool keyed = false;
    if (format[i] == '(') {
      const size_t close = format.find(')', i);
      if (close == std::string::npos) render_fail("incomplete format key");
      if (!mapping || !mapping->is_dict()) render_fail("format requires a mapping");
      const std::string key = format.substr(i + 1, close - i - 1);
      v = get_item(*mapping, Value::of(key));
      if (v.is_undefined()) render_fail("KeyError: '{}'", key);
      keyed = true, i = close + 1;
    }
    Spec spec;
    while (i < format.size() && std::string_view("-+ #0").find(format[i]) != std::string_view::npos) spec.flags += format[i++];
    auto number = [&](int* value) {
      for (*value = 0; i < format.size() && format[i] >= '0' && format[i] <= '9'; ++i) {
        *value = *value * 10 + (format[i] - '0');
        if (*value > 100000) render_fail("width or precision too big in a format string");
      }
    };
    if (i < format.size() && format[i] >= '0' && format[i] <= '9') number(&spec.width);
    if (i < format.size() && format[i] == '.') ++i, number(&spec.precision);
    if (i >= format.size()) render_fail("incomplete format");
    spec.conversion = format[i];
    if (spec.conversion == '%') {
      out += '%';
      continue;
    }
    if (!keyed) {
      if (next >= args.size()) render_fail("not enough arguments for format string");
      v = args[next++];
    }
    out += format_one(v, spec);
  }
  if (!mapping && next < args.size()) render_fail("not all arguments converted during string formatting");
  return out;
}

bool compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return equal(a, b);
  if (op == "!=") return !equal(a, b);
  if (op == "<") return less(a, b, "<");
  if (op == ">") return less(b, a, ">");
  if (op == "<=") return !less(b, a, "<=");
  if (op == ">=") return !less(a, b, ">=");
  if (op == "in") return contains(b, a);
  return !contains(b, a);  // notin
}

}  // namespace m3d::text::jinja
