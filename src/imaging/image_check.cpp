// Structural checks of PNG and JPEG files before a third-party decoder sees them
// (libpng aborts the process on some damaged files, ITK's JPEG probe crashes on short
// ones). Torch- and ITK-free, so the fuzz target links it alone.
#include "imaging/image_check.h"

#include <zlib.h>

#include <cstring>

#include "m3d/error.h"

namespace m3d::imaging {

void slice_image_check(const uint8_t* b, size_t size, const std::string& path, ImageKind kind) {
  const auto be32 = [&](size_t at) {
    return static_cast<uint32_t>(b[at]) << 24 | static_cast<uint32_t>(b[at + 1]) << 16 | static_cast<uint32_t>(b[at + 2]) << 8 | b[at + 3];
  };
  const bool png_bytes = size >= 4 && b[0] == 0x89 && b[1] == 'P' && b[2] == 'N' && b[3] == 'G';
  if (kind == ImageKind::kPng || (kind == ImageKind::kSniff && png_bytes)) {
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size < 8 || std::memcmp(b, signature, 8) != 0) fail("{}: not a PNG file (no PNG signature)", path);
    size_t at = 8;
    bool header = false, data = false;
    while (true) {
      if (size - at < 12) fail("{}: truncated PNG (no IEND chunk)", path);
      const uint32_t length = be32(at);
      if (length > size - at - 12) fail("{}: truncated PNG: chunk at byte {} runs past the end of the file", path, at);
      const std::string type(reinterpret_cast<const char*>(b + at + 4), 4);
      const uint32_t crc = static_cast<uint32_t>(crc32(0, b + at + 4, length + 4));
      if (crc != be32(at + 8 + length)) fail("{}: damaged PNG: chunk '{}' at byte {} fails its CRC", path, type, at);
      if (!header && type != "IHDR") fail("{}: damaged PNG: the first chunk is not IHDR", path);
      header = true;
      data = data || type == "IDAT";
      at += 12 + length;
      if (type == "IEND") break;
    }
    if (!data) fail("{}: damaged PNG: no image data (IDAT)", path);
    return;
  }
  // JPEG: SOI, then marker segments (FF xx + 16-bit length) until SOS; entropy-coded data follows.
  if (size < 4 || b[0] != 0xff || b[1] != 0xd8) fail("{}: not a JPEG file (no start-of-image marker)", path);
  size_t at = 2;
  bool frame = false;
  while (true) {
    while (at < size && b[at] == 0xff && at + 1 < size && b[at + 1] == 0xff) ++at;  // fill bytes
    if (size - at < 4 || b[at] != 0xff) fail("{}: truncated or damaged JPEG: bad marker at byte {}", path, at);
    const uint8_t marker = b[at + 1];
    const size_t length = static_cast<size_t>(b[at + 2]) << 8 | b[at + 3];
    if (length < 2 || length > size - at - 2) fail("{}: truncated JPEG: segment at byte {} runs past the end of the file", path, at);
    frame = frame || (marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc);
    at += 2 + length;
    if (marker == 0xda) break;  // start of scan
  }
  if (!frame) fail("{}: damaged JPEG: no frame header before the scan", path);
  if (size < at + 2 || b[size - 2] != 0xff || b[size - 1] != 0xd9) fail("{}: truncated JPEG (no end-of-image marker)", path);
}

}  // namespace m3d::imaging
