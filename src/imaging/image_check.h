// Structural checks of 2D slice images (PNG, JPEG) before libpng or ITK decode them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace m3d::imaging {

enum class ImageKind { kPng, kJpeg, kSniff };  // kSniff: PNG if the bytes say so, else JPEG

// PNG chunk by chunk (lengths and CRC-32, IHDR first, IDAT present, IEND last); JPEG
// by its marker segments (SOI, segment lengths up to the first scan, a frame header,
// EOI at the end). Throws m3d::Error naming `path` on the first problem.
void slice_image_check(const uint8_t* bytes, size_t size, const std::string& path, ImageKind kind);

}  // namespace m3d::imaging
