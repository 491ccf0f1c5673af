// png_write (volume_io.h): an 8-bit greyscale PNG encoded with zlib.
#include <zlib.h>

#include <string>
#include <vector>

#include "imaging/volume_io.h"
#include "io/atomic_file.h"
#include "m3d/error.h"

namespace m3d::imaging {

namespace {

// PNG (ISO/IEC 15948) chunk: length, type, data, CRC-32 of type + data.
void png_chunk(std::string& out, const char* type, const uint8_t* data, size_t size) {
  const auto be32 = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
  };
  be32(static_cast<uint32_t>(size));
  const size_t start = out.size();
  out.append(type, 4);
  out.append(reinterpret_cast<const char*>(data), size);
  be32(static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(out.data() + start), static_cast<uInt>(size + 4))));
}

}  // namespace

// An 8-bit greyscale PNG encoded here with zlib (filter 0 on every row), so a failed
// write is an error from our own checked, atomic write rather than a crash in a
// third-party writer.
void png_write(const std::string& path, int64_t width, int64_t height, const std::vector<uint8_t>& grey) {
  if (width <= 0 || height <= 0 || width > (1 << 24) || height > (1 << 24) || grey.size() != static_cast<size_t>(width * height)) {
    fail("{}: bad PNG size {} x {}", path, width, height);
  }
  std::vector<uint8_t> rows;
  rows.reserve(static_cast<size_t>((width + 1) * height));
  for (int64_t y = 0; y < height; ++y) {
    rows.push_back(0);  // filter type None
    rows.insert(rows.end(), grey.begin() + y * width, grey.begin() + (y + 1) * width);
  }
  uLongf packed_size = compressBound(static_cast<uLong>(rows.size()));
  std::vector<uint8_t> packed(packed_size);
  if (compress2(packed.data(), &packed_size, rows.data(), static_cast<uLong>(rows.size()), 6) != Z_OK) { fail("{}: cannot compress the PNG", path); }
  std::string png("\x89PNG\r\n\x1a\n", 8);
  uint8_t header[13] = {};
  for (int i = 0; i < 4; ++i) {
    header[i] = static_cast<uint8_t>(width >> (24 - 8 * i));
    header[4 + i] = static_cast<uint8_t>(height >> (24 - 8 * i));
  }
  header[8] = 8;  // bit depth; colour type 0 (grey), compression 0, filter 0, no interlace
  png_chunk(png, "IHDR", header, sizeof header);
  png_chunk(png, "IDAT", packed.data(), packed_size);
  png_chunk(png, "IEND", nullptr, 0);
  io::write_file_atomic(path, png);
}

}  // namespace m3d::imaging
