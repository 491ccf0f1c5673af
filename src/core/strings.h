// Small string helpers shared across the library (header-only, no dependencies).
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace m3d {

// Every occurrence of `pattern` replaced, left to right, without rescanning replacements.
inline std::string replace_all(std::string text, std::string_view pattern, std::string_view content) {
  if (pattern.empty()) return text;
  for (size_t pos = 0; (pos = text.find(pattern, pos)) != std::string::npos; pos += content.size()) text.replace(pos, pattern.size(), content);
  return text;
}

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline std::string ascii_lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace m3d
