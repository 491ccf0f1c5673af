// See jinja_value.h: jinja2 3.1's filters over sequences and mappings (filters.py).
// Where jinja2 returns a generator (map, select, unique, ...) these return a list.
#include <algorithm>
#include <map>

#include "text/jinja_value.h"

namespace m3d::text::jinja {

namespace {

Value list_of(const std::vector<Value>& items) {
  Json out = Json::array();
  for (const auto& v : items) out.push_back(to_json(v));
  return Value::of(std::move(out));
}

// make_attrgetter: "a.b.0" looks up a, then b, then item 0.
std::vector<Value> attribute_path(const Value& attribute) {
  std::vector<Value> parts;
  if (attribute.is_undefined() || attribute.is_none()) return parts;
  if (!attribute.is_string()) return {attribute};
  const std::string& s = attribute.data().get_ref<const std::string&>();
  size_t start = 0;
  while (true) {
    const size_t dot = s.find('.', start);
    const std::string part = s.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    parts.push_back(digits && part.size() < 19 ? Value::of(std::stoll(part)) : Value::of(part));  // a longer number is no index anyway
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

Value follow(Value item, const std::vector<Value>& path) {
  for (const auto& part : path) item = get_item(item, part);
  return item;
}

Value ignore_case(const Value& v, bool case_sensitive) {
  return !case_sensitive && v.is_string() ? Value::of(py_lower(v.data().get_ref<const std::string&>())) : v;
}

Value f_first(Renderer&, const Value& v, CallArgs& args) {
  Params("first", args, {});
  const auto items = iterate(v);
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}

Value f_last(Renderer&, const Value& v, CallArgs& args) {
  Params("last", args, {});
  if (!v.is_undefined() && !v.is_list() && !v.is_string() && !v.is_dict()) render_fail("'{}' object is not reversible", type_name(v));
  const auto items = iterate(v);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

Value f_list(Renderer&, const Value& v, CallArgs& args) { return Params("list", args, {}), list_of(iterate(v)); }

Value f_items(Renderer&, const Value& v, CallArgs& args) {
  Params("items", args, {});
  if (v.is_undefined()) return Value::of(Json::array());
  if (!v.is_dict()) render_fail("Can only get item pairs from a mapping.");
  Json out = Json::array();
  for (const auto& [key, item] : v.data().items()) out.push_back(Json::array({key_value(key).data(), item}));
  return Value::of(std::move(out));
}

Value f_reverse(Renderer&, const Value& v, CallArgs& args) {
  Params("reverse", args, {});
  auto items = iterate(v);
  std::reverse(items.begin(), items.end());
  if (!v.is_string()) return list_of(items);
  std::string out;
  for (const auto& ch : items) out += ch.data().get_ref<const std::string&>();
  return Value::of(std::move(out));
}

Value f_join(Renderer&, const Value& v, CallArgs& args) {
  const Params p("join", args, {"d", "attribute"});
  const std::string separator = p.has(0) ? py_str(p.get(0)) : "";
  const auto path = attribute_path(p.get_or(1, Value()));
  std::string out;
  size_t i = 0;
  for (const auto& item : iterate(v)) out += (i++ ? separator : "") + py_str(follow(item, path));
  return Value::of(std::move(out));
}

Value f_map(Renderer& r, const Value& v, CallArgs& args) {
  std::vector<Value> out;
  const auto items = truthy(v) ? iterate(v) : std::vector<Value>{};
  if (args.positional.empty()) {
    const Params p("map", args, {"attribute", "default"});
    if (!p.has(0)) render_fail("map requires a filter argument");
    const auto path = attribute_path(p.get(0));
    for (const auto& item : items) {
      Value mapped = follow(item, path);
      out.push_back(mapped.is_undefined() && p.has(1) ? p.get(1) : mapped);
    }
    return list_of(out);
  }
  const std::string name = py_str(args.positional[0]);
  CallArgs rest{{args.positional.begin() + 1, args.positional.end()}, args.keywords};
  for (const auto& item : items) out.push_back(call_filter(r, name, item, rest));
  return list_of(out);
}

// select / reject / selectattr / rejectattr: items whose test (or truth) is `keep`.
Value select(Renderer& r, const Value& v, CallArgs& args, bool keep, bool by_attribute) {
  size_t next = 0;
  std::vector<Value> path;
  if (by_attribute) {
    if (args.positional.empty()) render_fail("Missing parameter for attribute name");
    path = attribute_path(args.positional[next++]);
  }
  const bool has_test = next < args.positional.size();
  const std::string test = has_test ? py_str(args.positional[next++]) : "";
  CallArgs rest{{args.positional.begin() + static_cast<std::ptrdiff_t>(next), args.positional.end()}, args.keywords};
  std::vector<Value> out;
  if (!truthy(v)) return list_of(out);
  for (const auto& item : iterate(v)) {
    const Value subject = follow(item, path);
    const bool pass = has_test ? call_test(r, test, subject, rest) : truthy(subject);
    if (pass == keep) out.push_back(item);
  }
  return list_of(out);
}

Value f_select(Renderer& r, const Value& v, CallArgs& a) { return select(r, v, a, true, false); }
Value f_reject(Renderer& r, const Value& v, CallArgs& a) { return select(r, v, a, false, false); }
Value f_selectattr(Renderer& r, const Value& v, CallArgs& a) { return select(r, v, a, true, true); }
Value f_rejectattr(Renderer& r, const Value& v, CallArgs& a) { return select(r, v, a, false, true); }

void check_hashable(const Value& key) {
  if (key.is_list() || key.is_dict()) render_fail("unhashable type: '{}'", type_name(key));
}

Value f_unique(Renderer&, const Value& v, CallArgs& args) {
  const Params p("unique", args, {"case_sensitive", "attribute"});
  const bool case_sensitive = p.has(0) && truthy(p.get(0));
  const auto path = attribute_path(p.get_or(1, Value()));
  std::vector<Value> seen, out;
  for (const auto& item : iterate(v)) {
    const Value key = ignore_case(follow(item, path), case_sensitive);
    check_hashable(key);
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, key); })) continue;
    seen.push_back(key);
    out.push_back(item);
  }
  return list_of(out);
}

// A stable sort by key, as Python's sorted(items, key=..., reverse=...).
std::vector<Value> sorted(std::vector<Value> items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return reverse ? less(keys[b], keys[a], "<") : less(keys[a], keys[b], "<"); });
  std::vector<Value> out;
  for (const size_t i : order) out.push_back(std::move(items[i]));
  return out;
}

Value f_sort(Renderer&, const Value& v, CallArgs& args) {
  const Params p("sort", args, {"reverse", "case_sensitive", "attribute"});
  const bool case_sensitive = p.has(1) && truthy(p.get(1));
  std::vector<std::vector<Value>> paths;  // "age,name" sorts by several attributes
  if (p.has(2) && p.get(2).is_string()) {
    const std::string& list = p.get(2).data().get_ref<const std::string&>();
    for (size_t start = 0;;) {
      const size_t comma = list.find(',', start);
      paths.push_back(attribute_path(Value::of(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start))));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else {
    paths.push_back(attribute_path(p.get_or(2, Value())));
  }
  auto items = iterate(v);
  std::vector<Value> keys;
  for (const auto& item : items) {
    Json key = Json::array();
    for (const auto& path : paths) key.push_back(to_json(ignore_case(follow(item, path), case_sensitive)));
    keys.push_back(Value::of(std::move(key)));
  }
  return list_of(sorted(std::move(items), keys, p.has(0) && truthy(p.get(0))));
}

Value f_dictsort(Renderer&, const Value& v, CallArgs& args) {
  const Params p("dictsort", args, {"case_sensitive", "by", "reverse"});
  const bool case_sensitive = p.has(0) && truthy(p.get(0));
  const std::string by = p.has(1) ? py_str(p.get(1)) : "key";
  if (by != "key" && by != "value") render_fail("You can only sort by either \"key\" or \"value\"");
  if (v.is_undefined()) undefined_error(v);
  if (!v.is_dict()) render_fail("'{}' object has no attribute 'items'", type_name(v));
  std::vector<Value> items, keys;
  for (const auto& [key, item] : v.data().items()) {
    const Value k = key_value(key);
    items.push_back(Value::of(Json::array({k.data(), item})));
    keys.push_back(ignore_case(by == "key" ? k : Value::of(item), case_sensitive));
  }
  return list_of(sorted(std::move(items), keys, p.has(2) && truthy(p.get(2))));
}

Value min_max(const Value& v, CallArgs& args, bool max, const char* function) {
  const Params p(function, args, {"case_sensitive", "attribute"});
  const bool case_sensitive = p.has(0) && truthy(p.get(0));
  const auto path = attribute_path(p.get_or(1, Value()));
  const auto items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  Value best_key = ignore_case(follow(items[0], path), case_sensitive);
  for (size_t i = 1; i < items.size(); ++i) {
    Value key = ignore_case(follow(items[i], path), case_sensitive);
    if (max ? less(best_key, key, "<") : less(key, best_key, "<")) best = i, best_key = std::move(key);
  }
  return items[best];
}

Value f_min(Renderer&, const Value& v, CallArgs& args) { return min_max(v, args, false, "min"); }
Value f_max(Renderer&, const Value& v, CallArgs& args) { return min_max(v, args, true, "max"); }

Value f_batch(Renderer&, const Value& v, CallArgs& args) {
  const Params p("batch", args, {"linecount", "fill_with"});
  const int64_t per_line = as_int(p.get(0), "linecount");
  if (per_line <= 0) render_fail("batch: linecount must be positive");
  Json out = Json::array(), line = Json::array();
  for (const auto& item : iterate(v)) {
    if (static_cast<int64_t>(line.size()) == per_line) out.push_back(std::move(line)), line = Json::array();
    line.push_back(to_json(item));
  }
  if (!line.empty()) {
    if (p.has(1) && !p.get(1).is_none())
      while (static_cast<int64_t>(line.size()) < per_line) line.push_back(to_json(p.get(1)));
    out.push_back(std::move(line));
  }
  return Value::of(std::move(out));
}

// do_slice: `slices` columns, the first length % slices of them one item longer.
Value f_slice(Renderer&, const Value& v, CallArgs& args) {
  const Params p("slice", args, {"slices", "fill_with"});
  const int64_t slices = as_int(p.get(0), "slices");
  if (slices <= 0) render_fail("slice: the number of slices must be positive");
  const auto items = iterate(v);
  const auto n = static_cast<int64_t>(items.size());
  const int64_t per_slice = n / slices, with_extra = n % slices;
  Json out = Json::array();
  for (int64_t k = 0, start = 0; k < slices; ++k) {
    const int64_t end = start + per_slice + (k < with_extra ? 1 : 0);
    Json column = Json::array();
    for (int64_t i = start; i < end; ++i) column.push_back(to_json(items[static_cast<size_t>(i)]));
    if (p.has(1) && !p.get(1).is_none() && k >= with_extra) column.push_back(to_json(p.get(1)));
    out.push_back(std::move(column));
    start = end;
  }
  return Value::of(std::move(out));
}

Value f_sum(Renderer&, const Value& v, CallArgs& args) {
  const Params p("sum", args, {"attribute", "start"});
  const auto path = attribute_path(p.get_or(0, Value()));
  Value total = p.get_or(1, Value::of(0));
  for (const auto& item : iterate(v)) total = binary_op("+", total, follow(item, path));
  return total;
}

}  // namespace

const std::map<std::string, FilterFn>& sequence_filters() {
  static const std::map<std::string, FilterFn> filters = {
      {"batch", f_batch},     {"dictsort", f_dictsort}, {"first", f_first},
      {"items", f_items},     {"join", f_join},         {"last", f_last},
      {"list", f_list},       {"map", f_map},           {"max", f_max},
      {"min", f_min},         {"reject", f_reject},     {"rejectattr", f_rejectattr},
      {"reverse", f_reverse}, {"select", f_select},     {"selectattr", f_selectattr},
      {"slice", f_slice},     {"sort", f_sort},         {"sum", f_sum},
      {"unique", f_unique},
  };
  return filters;
}

}  // namespace m3d::text::jinja
