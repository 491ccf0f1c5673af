// See box.h. Source: M3D's Bench/utils.py (the box regex, mask2box) and the boxes
// LaMed's data code writes into answers (str(list) of rounded floats).
#include "text/box.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <regex>

namespace m3d::text {
namespace {

// Python round(v, 3): the exact binary value rounded to 3 decimals, ties to even (printf does the same).
double round3(double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.3f", v);
  return std::strtod(buffer, nullptr);
}

// Python repr of a float in [1e-4, 1e16): the shortest digits that read back, with ".0" when integral.
std::string python_repr(double v) {
  char buffer[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, v);
    if (std::strtod(buffer, nullptr) == v) break;
  }
  std::string s = buffer;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

std::optional<Box> parse_box(const std::string& text) {
  static const std::string number = R"(([-+]?\d*\.\d+|[-+]?\d+))";
  static const std::regex pattern(R"(\[)" + number + ", " + number + ", " + number + ", " + number + ", " + number + ", " + number + R"(\])");
  std::smatch match;
  if (!std::regex_search(text, match, pattern)) return std::nullopt;
  Box box{};
  for (int i = 0; i < 6; ++i) box[static_cast<size_t>(i)] = std::strtod(match[i + 1].str().c_str(), nullptr);
  return box;
}

std::string box_text(const Box& box) {
  std::string out = "[";
  for (size_t i = 0; i < 6; ++i) out += (i ? ", " : "") + python_repr(box[i]);
  return out + "]";
}

std::optional<Box> mask_to_box(const std::vector<uint8_t>& mask, int64_t depth, int64_t height, int64_t width) {
  int64_t lo[3] = {depth, height, width}, hi[3] = {-1, -1, -1};
  for (int64_t d = 0; d < depth; ++d) {
    for (int64_t h = 0; h < height; ++h) {
      for (int64_t w = 0; w < width; ++w) {
        if (!mask[static_cast<size_t>((d * height + h) * width + w)]) continue;
        const int64_t index[3] = {d, h, w};
        for (int a = 0; a < 3; ++a) lo[a] = std::min(lo[a], index[a]), hi[a] = std::max(hi[a], index[a]);
      }
    }
  }
  if (hi[0] < 0) return std::nullopt;
  const double size[3] = {static_cast<double>(depth), static_cast<double>(height), static_cast<double>(width)};
  Box box{};
  for (int a = 0; a < 3; ++a) box[a] = round3(static_cast<double>(lo[a]) / size[a]), box[a + 3] = round3(static_cast<double>(hi[a]) / size[a]);
  return box;
}

std::string image_placeholders(int64_t count) {
  std::string out;
  for (int64_t i = 0; i < count; ++i) out += kImagePatch;
  return out;
}

std::string box_tagged(const Box& box) { return kBoxStart + box_text(box) + kBoxEnd; }

}  // namespace m3d::text
