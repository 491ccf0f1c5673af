// See jinja_value.h: Python's str / repr / json.dumps, truthiness, equality and
// ordering over the engine's values, and str's case mapping over UTF-8.
#include "text/jinja_value.h"

#include <utf8proc.h>

#include <charconv>
#include <cmath>
#include <cstdio>

#include "text/utf8.h"

namespace m3d::text::jinja {

Value Object::attribute(const std::string& name) const { return Value::undefined(fmt::format("'{} object' has no attribute '{}'", type_name(), name)); }

Value Object::call(Renderer&, CallArgs&) const { render_fail("'{}' object is not callable", type_name()); }

std::string Object::repr() const { return fmt::format("<{} object>", type_name()); }

void undefined_error(const Value& v) {
  if (v.hint().empty()) render_fail("the value is undefined");
  throw RenderError(v.hint());
}

// jinja2's object_type_repr inside "... has no attribute ..." messages.
std::string undefined_hint_attribute(const Value& owner, const std::string& attribute) {
  if (owner.is_none()) return fmt::format("'None' has no attribute '{}'", attribute);
  return fmt::format("'{} object' has no attribute '{}'", type_name(owner), attribute);
}

std::string type_name(const Value& v) {
  if (v.is_undefined()) return "Undefined";
  if (v.is_object()) return v.object()->type_name();
  switch (v.data().type()) {
    case Json::value_t::null:
      return "NoneType";
    case Json::value_t::boolean:
      return "bool";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "int";
    case Json::value_t::number_float:
      return "float";
    case Json::value_t::string:
      return "str";
    case Json::value_t::array:
      return "list";
    case Json::value_t::object:
      return "dict";
    default:
      return "object";
  }
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  const std::string text(buf, result.ptr);  // [-]d[.ddd]e[+-]xx, shortest round trip
  const bool negative = text[0] == '-';
  const size_t e_at = text.find('e');
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e_at; ++i)
    if (text[i] != '.') digits += text[i];
  const int exponent = std::stoi(text.substr(e_at + 1));
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {  // Python's repr switches to exponents outside this range
    if (exponent >= 0) {
      const size_t whole = static_cast<size_t>(exponent) + 1;
      if (digits.size() < whole) digits.append(whole - digits.size(), '0');
      out += digits.substr(0, whole) + "." + (digits.size() > whole ? digits.substr(whole) : "0");
    } else {
      out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  return out + fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
}

namespace {

bool printable(uint32_t cp) {
  if (cp == ' ') return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
      return false;
    default:
      return true;
  }
}

std::string repr_json(const Json& j);

std::string repr_items(const Json& j) {
  std::string out;
  if (j.is_array()) {
    out = "[";
    for (const auto& item : j) out += (out.size() > 1 ? ", " : "") + repr_json(item);
    return out + "]";
  }
  out = "{";
  for (const auto& [key, item] : j.items()) out += (out.size() > 1 ? ", " : "") + py_repr(key_value(key)) + ": " + repr_json(item);
  return out + "}";
}

std::string repr_json(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null:
      return "None";
    case Json::value_t::boolean:
      return j.get<bool>() ? "True" : "False";
    case Json::value_t::number_integer:
      return std::to_string(j.get<int64_t>());
    case Json::value_t::number_unsigned:
      return std::to_string(j.get<uint64_t>());
    case Json::value_t::number_float:
      return float_repr(j.get<double>());
    case Json::value_t::string:
      return py_repr_string(j.get_ref<const std::string&>());
    case Json::value_t::array:
    case Json::value_t::object:
      return repr_items(j);
    case Json::value_t::discarded:
      return "Undefined";
    default:
      return "<binary>";
  }
}

}  // namespace

std::vector<std::string_view> code_points(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::max<size_t>(utf8::valid_char_length(s.substr(i)), 1);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string py_repr_string(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos, has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (const std::string_view ch : code_points(s)) {
    const uint32_t cp = utf8::valid_char_length(ch) ? utf8::code_point(ch) : static_cast<unsigned char>(ch[0]);
    if (ch[0] == quote || ch[0] == '\\') {
      out += '\\';
      out += ch[0];
    } else if (ch[0] == '\n') {
      out += "\\n";
    } else if (ch[0] == '\r') {
      out += "\\r";
    } else if (ch[0] == '\t') {
      out += "\\t";
    } else if (!printable(cp)) {
      out += fmt::format(cp < 0x100 ? "\\x{:02x}" : cp < 0x10000 ? "\\u{:04x}" : "\\U{:08x}", cp);
    } else {
      out += ch;
    }
  }
  return out + quote;
}

std::string py_repr(const Value& v) {
  if (v.is_undefined()) return "Undefined";
  if (v.is_object()) return v.object()->repr();
  return repr_json(v.data());
}

std::string py_str(const Value& v) {
  if (v.is_undefined()) return "";
  if (v.is_string()) return v.data().get_ref<const std::string&>();
  return py_repr(v);
}

bool truthy(const Value& v) {
  if (v.is_undefined()) return false;
  if (v.is_object()) return true;
  const Json& j = v.data();
  switch (j.type()) {
    case Json::value_t::null:
      return false;
    case Json::value_t::boolean:
      return j.get<bool>();
    case Json::value_t::number_integer:
      return j.get<int64_t>() != 0;
    case Json::value_t::number_unsigned:
      return j.get<uint64_t>() != 0;
    case Json::value_t::number_float:
      return j.get<double>() != 0;
    case Json::value_t::string:
      return !j.get_ref<const std::string&>().empty();
    case Json::value_t::array:
    case Json::value_t::object:
      return !j.empty();
    default:
      return true;
  }
}

namespace {

bool is_number(const Json& j) { return j.is_number() || j.is_boolean(); }

// Python compares ints exactly and mixed int / float numerically.
int compare_numbers(const Json& a, const Json& b) {
  if (!a.is_number_float() && !b.is_number_float()) {
    auto wide = [](const Json& j) -> __int128 {
      if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
      if (j.is_number_unsigned()) return static_cast<__int128>(j.get<uint64_t>());
      return j.get<int64_t>();
    };
    const __int128 x = wide(a), y = wide(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  const double x = a.is_boolean() ? a.get<bool>() : a.get<double>(), y = b.is_boolean() ? b.get<bool>() : b.get<double>();
  return x < y ? -1 : x > y ? 1 : 0;  // NaN compares as equal to nothing below
}

bool json_equal(const Json& a, const Json& b) {
  if (a.is_discarded() || b.is_discarded()) return a.is_discarded() && b.is_discarded();  // Undefined == Undefined
  if (is_number(a) && is_number(b)) {
    if (a.is_number_float() && std::isnan(a.get<double>())) return false;
    if (b.is_number_float() && std::isnan(b.get<double>())) return false;
    return compare_numbers(a, b) == 0;
  }
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!json_equal(a[i], b[i])) return false;
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (const auto& [key, item] : a.items()) {
      const auto it = b.find(key);
      if (it == b.end() || !json_equal(item, *it)) return false;
    }
    return true;
  }
  return a == b;
}

// -1 / 0 / 1, or 2 when Python cannot order the two.
int json_order(const Json& a, const Json& b) {
  if (is_number(a) && is_number(b)) return compare_numbers(a, b);
  if (a.is_string() && b.is_string()) {
    const int c = a.get_ref<const std::string&>().compare(b.get_ref<const std::string&>());  // UTF-8 bytes sort as code points
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_array() && b.is_array()) {
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (json_equal(a[i], b[i])) continue;
      return json_order(a[i], b[i]);
    }
    return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
  }
  return 2;
}

}  // namespace

bool equal(const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_object() || b.is_object()) return a.object() == b.object();
  return json_equal(a.data(), b.data());
}

bool less(const Value& a, const Value& b, const char* op) {
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  const int order = a.is_data() && b.is_data() ? json_order(a.data(), b.data()) : 2;
  if (order == 2) render_fail("'{}' not supported between instances of '{}' and '{}'", op, type_name(a), type_name(b));
  return order < 0;
}

int64_t length(const Value& v) {
  if (v.is_undefined()) return 0;
  if (v.is_string()) return static_cast<int64_t>(code_points(v.data().get_ref<const std::string&>()).size());
  if (v.is_list() || v.is_dict()) return static_cast<int64_t>(v.data().size());
  render_fail("object of type '{}' has no len()", type_name(v));
}

std::vector<Value> iterate(const Value& v) {
  std::vector<Value> out;
  if (v.is_undefined()) return out;
  if (v.is_list()) {
    for (const auto& item : v.data()) out.push_back(Value::borrowed(v.data_ptr(), item));
  } else if (v.is_dict()) {
    for (const auto& [key, item] : v.data().items()) out.push_back(key_value(key));
  } else if (v.is_string()) {
    for (const auto ch : code_points(v.data().get_ref<const std::string&>())) out.push_back(Value::of(std::string(ch)));
  } else {
    render_fail("'{}' object is not iterable", type_name(v));
  }
  return out;
}

Json to_json(const Value& v) {
  if (v.is_undefined()) return Json(Json::value_t::discarded);  // jinja2 keeps the Undefined object in the list
  if (v.is_object()) render_fail("a '{}' cannot be stored in a list or dict here", type_name(v));
  return v.data();
}

std::string dict_key(const Value& key) {
  if (key.is_string()) return key.data().get<std::string>();
  if (key.is_undefined() || key.is_object()) render_fail("unhashable or unsupported dict key of type '{}'", type_name(key));
  if (key.is_list() || key.is_dict()) render_fail("unhashable type: '{}'", type_name(key));
  return "\x01" + key.data().dump();
}

Value key_value(const std::string& key) {
  if (key.empty() || key[0] != '\x01') return Value::of(key);
  return Value::of(Json::parse(key.substr(1)));
}

std::string html_escape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

int64_t as_int(const Value& v, const char* what) {
  if (v.is_bool()) return v.data().get<bool>() ? 1 : 0;
  if (!v.is_integer()) render_fail("{} must be an integer, not '{}'", what, type_name(v));
  if (v.data().is_number_unsigned() && v.data().get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) render_fail("{} is out of the 64-bit range", what);
  return v.data().get<int64_t>();
}

size_t size_arg(int64_t n, const char* what) {
  if (n > (int64_t{1} << 26)) render_fail("{} of {} is too large", what, n);
  return n < 0 ? 0 : static_cast<size_t>(n);
}

double as_number(const Value& v, const char* what) {
  if (v.is_undefined()) undefined_error(v);
  if (!v.is_number()) render_fail("{} must be a number, not '{}'", what, type_name(v));
  const Json& j = v.data();
  if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
  return j.get<double>();
}

namespace {

void dump_string(const std::string& s, bool ensure_ascii, std::string* out) {
  *out += '"';
  for (const std::string_view ch : code_points(s)) {
    const auto c = static_cast<unsigned char>(ch[0]);
    switch (c) {
      case '"':
        *out += "\\\"";
        continue;
      case '\\':
        *out += "\\\\";
        continue;
      case '\n':
        *out += "\\n";
        continue;
      case '\r':
        *out += "\\r";
        continue;
      case '\t':
        *out += "\\t";
        continue;
      case '\b':
        *out += "\\b";
        continue;
      case '\f':
        *out += "\\f";
        continue;
      default:
        break;
    }
    if (c < 0x20 || (ensure_ascii && c == 0x7f)) {
      *out += fmt::format("\\u{:04x}", c);
    } else if (ensure_ascii && c >= 0x80) {
      uint32_t cp = utf8::valid_char_length(ch) ? utf8::code_point(ch) : 0xFFFD;
      if (cp >= 0x10000) {
        cp -= 0x10000;
        *out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
      } else {
        *out += fmt::format("\\u{:04x}", cp);
      }
    } else {
      *out += ch;
    }
  }
  *out += '"';
}

void dump(const Json& j, const JsonDumpOptions& o, int level, std::string* out);

void dump_container(const Json& j, const JsonDumpOptions& o, int level, std::string* out) {
  const bool array = j.is_array();
  if (j.empty()) {
    *out += array ? "[]" : "{}";
    return;
  }
  const std::string item_sep = o.separators ? o.separators->first : o.indent ? "," : ", ";
  const std::string key_sep = o.separators ? o.separators->second : ": ";
  std::string newline, closing;
  if (o.indent) {
    newline = "\n";
    closing = "\n";
    for (int i = 0; i <= level; ++i) newline += *o.indent;
    for (int i = 0; i < level; ++i) closing += *o.indent;
  }
  *out += array ? "[" : "{";
  std::vector<std::pair<std::string, const Json*>> entries;
  if (!array) {
    for (const auto& [key, item] : j.items()) {
      const Value k = key_value(key);  // json.dumps writes int / float / bool / None keys as strings
      const Json& kj = k.data();
      std::string text = kj.is_string() ? kj.get<std::string>() : kj.is_number_float() ? float_repr(kj.get<double>()) : kj.dump();
      entries.emplace_back(std::move(text), &item);
    }
    if (o.sort_keys) std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  }
  const size_t n = j.size();
  for (size_t i = 0; i < n; ++i) {
    *out += (i > 0 ? item_sep : "") + newline;
    if (array) {
      dump(j[i], o, level + 1, out);
    } else {
      dump_string(entries[i].first, o.ensure_ascii, out);
      *out += key_sep;
      dump(*entries[i].second, o, level + 1, out);
    }
  }
  *out += closing + (array ? "]" : "}");
}

void dump(const Json& j, const JsonDumpOptions& o, int level, std::string* out) {
  switch (j.type()) {
    case Json::value_t::null:
      *out += "null";
      return;
    case Json::value_t::boolean:
      *out += j.get<bool>() ? "true" : "false";
      return;
    case Json::value_t::number_float: {
      const double d = j.get<double>();
      *out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d < 0 ? "-Infinity" : "Infinity") : float_repr(d);
      return;
    }
    case Json::value_t::string:
      dump_string(j.get_ref<const std::string&>(), o.ensure_ascii, out);
      return;
    case Json::value_t::array:
    case Json::value_t::object:
      dump_container(j, o, level, out);
      return;
    case Json::value_t::discarded:
      render_fail("Object of type Undefined is not JSON serializable");
    default:
      *out += repr_json(j);
      return;
  }
}

}  // namespace

std::string json_dumps(const Value& v, const JsonDumpOptions& options) {
  if (!v.is_data()) render_fail("Object of type {} is not JSON serializable", type_name(v));
  std::string out;
  dump(v.data(), options, 0, &out);
  return out;
}

namespace {

// The few full (one-to-many) case mappings of Python's str that are likely in text:
// German sharp s, the Latin ligatures and dotted capital I.
struct SpecialCase {
  uint32_t cp;
  const char *upper, *title, *lower;
};
constexpr SpecialCase kSpecialCases[] = {
    {0xDF, "SS", "Ss", nullptr},   {0xFB00, "FF", "Ff", nullptr},   {0xFB01, "FI", "Fi", nullptr},
    {0xFB02, "FL", "Fl", nullptr}, {0xFB03, "FFI", "Ffi", nullptr}, {0xFB04, "FFL", "Ffl", nullptr},
    {0xFB05, "ST", "St", nullptr}, {0xFB06, "ST", "St", nullptr},   {0x130, nullptr, nullptr, "i\xCC\x87"},
};

enum class Case { Upper, Lower, Title };

std::string map_case(std::string_view s, Case to) {
  std::string out;
  for (const std::string_view ch : code_points(s)) {
    if (utf8::valid_char_length(ch) == 0) {
      out += ch;
      continue;
    }
    const uint32_t cp = utf8::code_point(ch);
    const char* special = nullptr;
    for (const auto& sc : kSpecialCases)
      if (sc.cp == cp) special = to == Case::Upper ? sc.upper : to == Case::Title ? sc.title : sc.lower;
    if (special) {
      out += special;
      continue;
    }
    const auto c = static_cast<utf8proc_int32_t>(cp);
    out += utf8::encode(static_cast<uint32_t>(to == Case::Upper ? utf8proc_toupper(c) : to == Case::Lower ? utf8proc_tolower(c) : utf8proc_totitle(c)));
  }
  return out;
}

}  // namespace

// Simple (one-to-one) case mappings plus kSpecialCases; Python's other full mappings
// and its final-sigma rule are left out.
std::string py_upper(std::string_view s) { return map_case(s, Case::Upper); }
std::string py_lower(std::string_view s) { return map_case(s, Case::Lower); }
std::string py_title_case_char(std::string_view ch) { return map_case(ch, Case::Title); }

bool py_is_cased_upper(uint32_t cp) {
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LT;
}

bool py_is_cased_lower(uint32_t cp) { return utf8proc_category(static_cast<utf8proc_int32_t>(cp)) == UTF8PROC_CATEGORY_LL; }

}  // namespace m3d::text::jinja
