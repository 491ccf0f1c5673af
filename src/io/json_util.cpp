#include "io/json_util.h"

#include <cmath>
#include <fstream>

#include "m3d/error.h"

namespace m3d::io {
namespace {

using json = nlohmann::json;

const json* find(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

[[noreturn]] void wrong_type(const std::string& where, const char* key, const char* expected, const json& value) {
  fail("{}: key '{}': expected {}, found {}", where, key, expected, value.type_name());
}

std::string token_text(const json& value, const std::string& where, const char* key) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) { return value["content"].get<std::string>(); }
  wrong_type(where, key, "a token (string or {\"content\": ...})", value);
}

}  // namespace

json json_read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) { fail("{}: not valid JSON: {}", path, e.what()); }
}

std::optional<int64_t> json_int(const json& j, const char* key, const std::string& where) {
  const json* value = find(j, key);
  if (value == nullptr) return std::nullopt;
  if (value->is_number_integer()) {
    if (value->is_number_unsigned() && value->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return INT64_MAX;
    return value->get<int64_t>();
  }
  // Some tokenizer configs store huge sentinels such as 1e30 for model_max_length.
  if (value->is_number_float() && std::floor(value->get<double>()) == value->get<double>()) {
    const double v = value->get<double>();
    return v >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(v);
  }
  wrong_type(where, key, "an integer", *value);
}

std::optional<double> json_number(const json& j, const char* key, const std::string& where) {
  const json* value = find(j, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_number()) wrong_type(where, key, "a number", *value);
  return value->get<double>();
}

std::optional<bool> json_bool(const json& j, const char* key, const std::string& where) {
  const json* value = find(j, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_boolean()) wrong_type(where, key, "true or false", *value);
  return value->get<bool>();
}

std::optional<std::string> json_string(const json& j, const char* key, const std::string& where) {
  const json* value = find(j, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_string()) wrong_type(where, key, "a string", *value);
  return value->get<std::string>();
}

std::vector<int64_t> json_int_list(const json& j, const char* key, const std::string& where) {
  const json* value = find(j, key);
  if (value == nullptr) return {};
  if (value->is_number_integer()) return {value->get<int64_t>()};
  if (!value->is_array()) wrong_type(where, key, "an integer or a list of integers", *value);
  std::vector<int64_t> out;
  for (const auto& item : *value) {
    if (!item.is_number_integer()) wrong_type(where, key, "a list of integers", item);
    out.push_back(item.get<int64_t>());
  }
  return out;
}

std::vector<std::string> json_string_list(const json& j, const char* key, const std::string& where) {
  const json* value = find(j, key);
  if (value == nullptr) return {};
  if (!value->is_array()) wrong_type(where, key, "a list", *value);
  std::vector<std::string> out;
  for (const auto& item : *value) out.push_back(token_text(item, where, key));
  return out;
}

std::optional<std::string> json_token(const json& j, const char* key, const std::string& where) {
  const json* value = find(j, key);
  if (value == nullptr) return std::nullopt;
  return token_text(*value, where, key);
}

}  // namespace m3d::io
