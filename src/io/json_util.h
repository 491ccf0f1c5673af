// Typed reads from JSON files (HF configs, indexes) with errors that name the
// file and key: "config.json: key 'hidden_size': expected an integer, found string".
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace m3d::io {

// Parses a whole file; throws naming it on I/O or syntax errors.
nlohmann::json json_read_file(const std::string& path);

std::optional<int64_t> json_int(const nlohmann::json& j, const char* key, const std::string& where);
std::optional<double> json_number(const nlohmann::json& j, const char* key, const std::string& where);
std::optional<bool> json_bool(const nlohmann::json& j, const char* key, const std::string& where);
std::optional<std::string> json_string(const nlohmann::json& j, const char* key, const std::string& where);
// An integer or a list of integers (eos_token_id may be either).
std::vector<int64_t> json_int_list(const nlohmann::json& j, const char* key, const std::string& where);
std::vector<std::string> json_string_list(const nlohmann::json& j, const char* key, const std::string& where);
// A token given as "text" or as {"content": "text", ...} (AddedToken).
std::optional<std::string> json_token(const nlohmann::json& j, const char* key, const std::string& where);

}  // namespace m3d::io
