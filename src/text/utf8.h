// Small UTF-8 helpers shared by the tokenizers: sequence lengths, validation,
// Python's notion of whitespace (str.isspace, str.strip), and lossy decoding.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace m3d::text::utf8 {

// Length in bytes of the sequence starting with `lead` (1 for bytes that cannot start one).
inline size_t sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

// Length of the well-formed character at the start of `s` (shortest form, no
// surrogates, at most U+10FFFF), or 0 when `s` does not start with one.
inline size_t valid_char_length(std::string_view s) {
  if (s.empty()) return 0;
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return 1;
  const size_t n = sequence_length(b0);
  if (n == 1 || s.size() < n) return 0;
  uint32_t cp = b0 & (0xFF >> (n + 1));
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr uint32_t min_for_length[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_for_length[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

inline bool valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = valid_char_length(s.substr(i));
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Code point of the (valid) character at the start of `s`.
inline uint32_t code_point(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  const size_t n = sequence_length(b0);
  if (n == 1) return b0;
  uint32_t cp = b0 & (0xFF >> (n + 1));
  for (size_t k = 1; k < n && k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[k]) & 0x3F);
  return cp;
}

inline std::string encode(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Python's str.isspace for one code point.
inline bool python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Python's str.lstrip() / str.rstrip() with no argument, on valid UTF-8.
inline std::string python_lstrip(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = sequence_length(static_cast<unsigned char>(s[i]));
    if (!python_space(code_point(s.substr(i)))) break;
    i += n;
  }
  return std::string(s.substr(std::min(i, s.size())));
}

inline std::string python_rstrip(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    if (!python_space(code_point(s.substr(start, end - start)))) break;
    end = start;
  }
  return std::string(s.substr(0, end));
}

// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
inline std::string lossy(std::string_view bytes) {
  std::string out;
  size_t i = 0;
  while (i < bytes.size()) {
    const size_t n = valid_char_length(bytes.substr(i));
    if (n > 0) {
      out.append(bytes.substr(i, n));
      i += n;
      continue;
    }
    // Length of the longest prefix of a valid sequence (the "maximal subpart").
    const auto b0 = static_cast<unsigned char>(bytes[i]);
    size_t skip = 1;
    const size_t want = sequence_length(b0);
    if (want > 1 && b0 >= 0xC2 && b0 <= 0xF4) {
      for (size_t k = 1; k < want && i + k < bytes.size(); ++k) {
        const auto b = static_cast<unsigned char>(bytes[i + k]);
        unsigned char lo = 0x80, hi = 0xBF;
        if (k == 1) {
          if (b0 == 0xE0) lo = 0xA0;
          if (b0 == 0xED) hi = 0x9F;
          if (b0 == 0xF0) lo = 0x90;
          if (b0 == 0xF4) hi = 0x8F;
        }
        if (b < lo || b > hi) break;
        skip = k + 1;
      }
    }
    out.append(kReplacement);
    i += skip;
  }
  return out;
}

}  // namespace m3d::text::utf8
