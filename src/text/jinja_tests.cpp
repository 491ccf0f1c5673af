// See jinja_value.h: jinja2 3.1's tests (`x is defined`, tests.py), with Python's types:
// a bool is a number but not an integer, undefined is iterable and a sequence.
#include <map>

#include "text/jinja_value.h"
#include "text/utf8.h"

namespace m3d::text::jinja {

namespace {

using TestFn = bool (*)(Renderer& renderer, const Value& v, const Params& p);

const Value& argument(const Params& p, const char* test) {
  if (!p.has(0)) render_fail("the '{}' test needs an argument", test);
  return p.get(0);
}

bool odd_even(const Value& v, bool odd) { return equal(binary_op("%", v, Value::of(2)), Value::of(odd ? 1 : 0)); }  // value % 2 == 1

// str.islower / str.isupper: some cased character, and none of the other case.
bool text_case(const Value& v, bool lower) {
  bool cased = false;
  const std::string s = py_str(v);
  for (const auto ch : code_points(s)) {
    const uint32_t cp = utf8::valid_char_length(ch) ? utf8::code_point(ch) : 0;
    const bool is_lower = py_is_cased_lower(cp), is_upper = py_is_cased_upper(cp);
    if (lower ? is_upper : is_lower) return false;
    cased = cased || (lower ? is_lower : is_upper);
  }
  return cased;
}

bool same_as(const Value& a, const Value& b) {
  if (a.is_object() || b.is_object()) return a.object() == b.object();
  if (a.is_undefined() || b.is_undefined()) return false;
  if (a.is_none() && b.is_none()) return true;
  if (a.is_bool() && b.is_bool()) return a.data() == b.data();
  return a.data_ptr().get() == b.data_ptr().get();
}

bool ordered(const std::string& op, const Value& a, const Value& b) { return compare(op, a, b); }

const std::map<std::string, std::pair<TestFn, int>>& tests() {
  // name -> (test, number of arguments)
  static const std::map<std::string, std::pair<TestFn, int>> table = {
      {"odd", {[](Renderer&, const Value& v, const Params&) { return odd_even(v, true); }, 0}},
      {"even", {[](Renderer&, const Value& v, const Params&) { return odd_even(v, false); }, 0}},
      {"divisibleby", {[](Renderer&, const Value& v, const Params& p) { return !truthy(binary_op("%", v, argument(p, "divisibleby"))); }, 1}},
      {"defined", {[](Renderer&, const Value& v, const Params&) { return !v.is_undefined(); }, 0}},
      {"undefined", {[](Renderer&, const Value& v, const Params&) { return v.is_undefined(); }, 0}},
      {"filter", {[](Renderer&, const Value& v, const Params&) { return v.is_string() && filter_exists(v.data().get<std::string>()); }, 0}},
      {"test", {[](Renderer&, const Value& v, const Params&) { return v.is_string() && test_exists(v.data().get<std::string>()); }, 0}},
      {"none", {[](Renderer&, const Value& v, const Params&) { return v.is_none(); }, 0}},
      {"boolean", {[](Renderer&, const Value& v, const Params&) { return v.is_bool(); }, 0}},
      {"false", {[](Renderer&, const Value& v, const Params&) { return v.is_bool() && !v.data().get<bool>(); }, 0}},
      {"true", {[](Renderer&, const Value& v, const Params&) { return v.is_bool() && v.data().get<bool>(); }, 0}},
      {"integer", {[](Renderer&, const Value& v, const Params&) { return v.is_integer(); }, 0}},
      {"float", {[](Renderer&, const Value& v, const Params&) { return v.is_float(); }, 0}},
      {"lower", {[](Renderer&, const Value& v, const Params&) { return text_case(v, true); }, 0}},
      {"upper", {[](Renderer&, const Value& v, const Params&) { return text_case(v, false); }, 0}},
      {"string", {[](Renderer&, const Value& v, const Params&) { return v.is_string(); }, 0}},
      {"mapping", {[](Renderer&, const Value& v, const Params&) { return v.is_dict(); }, 0}},
      {"number", {[](Renderer&, const Value& v, const Params&) { return v.is_number(); }, 0}},
      {"sequence", {[](Renderer&, const Value& v, const Params&) { return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict(); }, 0}},
      {"iterable", {[](Renderer&, const Value& v, const Params&) { return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict(); }, 0}},
      {"callable", {[](Renderer&, const Value& v, const Params&) { return v.is_object() && v.object()->callable(); }, 0}},
      {"sameas", {[](Renderer&, const Value& v, const Params& p) { return same_as(v, argument(p, "sameas")); }, 1}},
      {"escaped", {[](Renderer&, const Value& v, const Params&) { return v.is_safe(); }, 0}},
      {"in", {[](Renderer&, const Value& v, const Params& p) { return contains(argument(p, "in"), v); }, 1}},
      {"eq", {[](Renderer&, const Value& v, const Params& p) { return equal(v, argument(p, "eq")); }, 1}},
      {"ne", {[](Renderer&, const Value& v, const Params& p) { return !equal(v, argument(p, "ne")); }, 1}},
      {"lt", {[](Renderer&, const Value& v, const Params& p) { return ordered("<", v, argument(p, "lt")); }, 1}},
      {"le", {[](Renderer&, const Value& v, const Params& p) { return ordered("<=", v, argument(p, "le")); }, 1}},
      {"gt", {[](Renderer&, const Value& v, const Params& p) { return ordered(">", v, argument(p, "gt")); }, 1}},
      {"ge", {[](Renderer&, const Value& v, const Params& p) { return ordered(">=", v, argument(p, "ge")); }, 1}},
  };
  return table;
}

// Aliases, as jinja2's TESTS maps them.
std::string canonical(const std::string& name) {
  static const std::map<std::string, std::string> aliases = {
      {"==", "eq"}, {"equalto", "eq"}, {"!=", "ne"}, {"<", "lt"}, {"lessthan", "lt"}, {"<=", "le"}, {">", "gt"}, {"greaterthan", "gt"}, {">=", "ge"},
  };
  const auto it = aliases.find(name);
  return it == aliases.end() ? name : it->second;
}

}  // namespace

bool test_exists(const std::string& name) { return tests().count(canonical(name)) > 0; }

bool call_test(Renderer& renderer, const std::string& name, const Value& subject, CallArgs& args) {
  const auto it = tests().find(canonical(name));
  if (it == tests().end()) render_fail("No test named '{}' found.", name);
  const Params p(name.c_str(), args, it->second.second == 1 ? std::initializer_list<const char*>{"value"} : std::initializer_list<const char*>{});
  return it->second.first(renderer, subject, p);
}

}  // namespace m3d::text::jinja
