// M3D's boxes as text and from masks: the six normalized corner coordinates LaMed
// reads and writes inside <bx_start>...<bx_end>, the official parsing regex, and
// mask2box. Torch-free; used by training data, synthetic data and the bench.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace m3d::text {

using Box = std::array<double, 6>;  // [d1, h1, w1, d2, h2, w2], normalized, maxima inclusive

// Bench/utils.py: the first "[n, n, n, n, n, n]" (", " separators; n = [-+]?\d*\.\d+|[-+]?\d+).
std::optional<Box> parse_box(const std::string& text);
// Python's str(list) of the box values as mask2box writes them (round(v, 3), repr floats).
std::string box_text(const Box& box);

// LaMed's prompt tokens (train.py initialize_vision_tokenizer): the image placeholder, the
// box delimiters and the segmentation token.
inline constexpr const char* kImagePatch = "<im_patch>";
inline constexpr const char* kBoxStart = "<bx_start>";
inline constexpr const char* kBoxEnd = "<bx_end>";
inline constexpr const char* kSegToken = "[SEG]";

// `count` image placeholders: where the projected image tokens go in a LaMed/Med3DVLM prompt.
std::string image_placeholders(int64_t count);
// The box as LaMed reads and writes it: <bx_start>[d1, h1, w1, d2, h2, w2]<bx_end>.
std::string box_tagged(const Box& box);

// mask2box on a (D, H, W) mask: [min_d/D, min_h/H, min_w/W, max_d/D, max_h/H, max_w/W],
// each round(v, 3) (round half to even on the binary value, as Python); nullopt when empty.
std::optional<Box> mask_to_box(const std::vector<uint8_t>& mask, int64_t depth, int64_t height, int64_t width);

}  // namespace m3d::text
