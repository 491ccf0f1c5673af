// Structural checks of files before a third-party decoder sees them (libpng aborts the
// process on some damaged PNGs, ITK's JPEG probe crashes on short JPEGs, ITK's MetaImage
// and NRRD readers take truncated or corrupt voxel data). Torch- and ITK-free, so the
// fuzz target links it alone. Header keys: MetaIO's metaImage.cxx, teem's NRRD format
// (teem.sourceforge.net/nrrd/format.html).
#include "imaging/image_check.h"

#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <vector>

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

namespace {

// Bytes per voxel component of a MetaImage ElementType or a NRRD type; 0 when unknown.
size_t payload_type_size(const std::string& type) {
  static const std::map<std::string, size_t> sizes = {{"MET_CHAR", 1},
                                                      {"MET_UCHAR", 1},
                                                      {"MET_SHORT", 2},
                                                      {"MET_USHORT", 2},
                                                      {"MET_INT", 4},
                                                      {"MET_UINT", 4},
                                                      {"MET_LONG", 4},
                                                      {"MET_ULONG", 4},
                                                      {"MET_LONG_LONG", 8},
                                                      {"MET_ULONG_LONG", 8},
                                                      {"MET_FLOAT", 4},
                                                      {"MET_DOUBLE", 8},
                                                      {"signed char", 1},
                                                      {"int8", 1},
                                                      {"int8_t", 1},
                                                      {"uchar", 1},
                                                      {"unsigned char", 1},
                                                      {"uint8", 1},
                                                      {"uint8_t", 1},
                                                      {"short", 2},
                                                      {"short int", 2},
                                                      {"signed short", 2},
                                                      {"signed short int", 2},
                                                      {"int16", 2},
                                                      {"int16_t", 2},
                                                      {"ushort", 2},
                                                      {"unsigned short", 2},
                                                      {"unsigned short int", 2},
                                                      {"uint16", 2},
                                                      {"uint16_t", 2},
                                                      {"int", 4},
                                                      {"signed int", 4},
                                                      {"int32", 4},
                                                      {"int32_t", 4},
                                                      {"uint", 4},
                                                      {"unsigned int", 4},
                                                      {"uint32", 4},
                                                      {"uint32_t", 4},
                                                      {"float", 4},
                                                      {"longlong", 8},
                                                      {"long long", 8},
                                                      {"long long int", 8},
                                                      {"signed long long", 8},
                                                      {"signed long long int", 8},
                                                      {"int64", 8},
                                                      {"int64_t", 8},
                                                      {"ulonglong", 8},
                                                      {"unsigned long long", 8},
                                                      {"unsigned long long int", 8},
                                                      {"uint64", 8},
                                                      {"uint64_t", 8},
                                                      {"double", 8}};
  const auto it = sizes.find(type);
  return it == sizes.end() ? 0 : it->second;
}

std::string trimmed(std::string s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
  while (!s.empty() && space(s.back())) s.pop_back();
  size_t first = 0;
  while (first < s.size() && space(s[first])) ++first;
  return s.substr(first);
}

// The header's fields (`separator` between key and value) up to the line `last_key`
// (MetaImage) or an empty line (NRRD, `last_key` empty); `at` becomes the offset of the
// data. False when the header does not end.
bool header_fields(const uint8_t* b, size_t size, const std::string& separator, const std::string& last_key, std::map<std::string, std::string>& fields,
                   size_t& at) {
  while (at < size) {
    const auto* end = static_cast<const uint8_t*>(std::memchr(b + at, '\n', size - at));
    if (end == nullptr) return false;
    const std::string line = trimmed(std::string(reinterpret_cast<const char*>(b + at), static_cast<size_t>(end - (b + at))));
    at = static_cast<size_t>(end - b) + 1;
    if (line.empty() && last_key.empty()) return true;
    const size_t split = line.find(separator);
    if (split == std::string::npos || line[0] == '#') continue;
    const std::string key = trimmed(line.substr(0, split));
    fields[key] = trimmed(line.substr(split + separator.size()));
    if (key == last_key) return true;
  }
  return false;
}

// Product of the sizes times `bytes` per voxel; 0 when unparsable or absurd (ITK then decides).
uint64_t payload_bytes(const std::string& sizes, size_t bytes) {
  std::istringstream in(sizes);
  double total = static_cast<double>(bytes);
  uint64_t n = 0, product = bytes;
  int count = 0;
  while (in >> n) total *= static_cast<double>(n), product *= n, ++count;
  return count == 0 || !in.eof() || total > 1e15 ? 0 : product;
}

// A zlib or gzip stream (its first bytes say which), gzip members back to back: every
// member must end with its checksum and the whole must inflate to `expected` bytes.
void payload_inflate_check(const uint8_t* data, size_t size, uint64_t expected, const std::string& path) {
  struct Inflater {
    z_stream z{};
    ~Inflater() { inflateEnd(&z); }
  } inflater;
  z_stream& z = inflater.z;
  if (inflateInit2(&z, 15 + 32) != Z_OK) fail("{}: cannot start decompression", path);
  std::vector<uint8_t> scratch(size_t{1} << 16);
  size_t in_done = 0;
  uint64_t produced = 0;
  while (true) {
    const size_t in_chunk = std::min<size_t>(size - in_done, 1u << 30);
    z.next_in = const_cast<Bytef*>(data + in_done);
    z.avail_in = static_cast<uInt>(in_chunk);
    z.next_out = scratch.data();
    z.avail_out = static_cast<uInt>(scratch.size());
    const int rc = inflate(&z, Z_NO_FLUSH);
    in_done += in_chunk - z.avail_in;
    produced += scratch.size() - z.avail_out;
    if (produced > expected) fail("{}: damaged: the compressed voxel data inflates to more than the {} bytes the header's sizes give", path, expected);
    if (rc == Z_STREAM_END) {
      if (in_done + 1 < size && data[in_done] == 0x1f && data[in_done + 1] == 0x8b) {
        inflateReset(&z);
        continue;
      }
      break;
    }
    if (rc == Z_BUF_ERROR) fail("{}: truncated: the compressed voxel data ends before its end marker and checksum", path);
    if (rc != Z_OK) fail("{}: corrupt compressed voxel data ({}): the file is damaged", path, z.msg ? z.msg : "inflate failed");
  }
  if (produced < expected) fail("{}: truncated: the voxel data inflates to {} bytes, the header's sizes need {}", path, produced, expected);
}

}  // namespace

void volume_payload_check(const uint8_t* b, size_t size, const std::string& path, PayloadKind kind, const DetachedData& detached) {
  std::map<std::string, std::string> f;
  size_t at = 0;
  uint64_t needed = 0, stored = 0;  // stored: MetaImage's CompressedDataSize, when given
  bool compressed = false;
  std::string data_file;  // the header's name for a detached data file
  if (kind == PayloadKind::kMetaImage) {
    if (!header_fields(b, size, "=", "ElementDataFile", f, at) || f.count("HeaderSize") || !f.count("DimSize")) return;
    if (f["ElementDataFile"] != "LOCAL") data_file = f["ElementDataFile"];
    const std::string channels = f.count("ElementNumberOfChannels") ? f["ElementNumberOfChannels"] : "1";
    needed = payload_bytes(f["DimSize"] + " " + channels, payload_type_size(f["ElementType"]));
    compressed = f["CompressedData"] == "True" || f["CompressedData"] == "true";
    if (compressed && f.count("CompressedDataSize")) stored = std::strtoull(f["CompressedDataSize"].c_str(), nullptr, 10);
  } else {
    if (size < 4 || std::memcmp(b, "NRRD", 4) != 0) fail("{}: not a NRRD file (no NRRD magic)", path);
    const bool ended = header_fields(b, size, ": ", "", f, at);  // a detached header (.nhdr) may end without its blank line
    data_file = f.count("data file") ? f["data file"] : f.count("datafile") ? f["datafile"] : "";
    if (!ended && data_file.empty()) return;
    for (const char* skip : {"line skip", "lineskip", "byte skip", "byteskip"}) {
      if (f.count(skip) && f[skip] != "0") return;
    }
    needed = payload_bytes(f["sizes"], payload_type_size(f["type"]));
    const std::string encoding = f["encoding"];
    if (encoding != "raw" && encoding != "gzip" && encoding != "gz") return;
    compressed = encoding != "raw";
  }
  if (needed == 0) return;
  const uint8_t* data = b + at;
  size_t data_size = size - at;
  std::string where = path;
  if (!data_file.empty()) {
    // A list of slice files or a numbered pattern is left to ITK.
    if (!detached || data_file.rfind("LIST", 0) == 0 || data_file.find_first_of("% ") != std::string::npos) return;
    const std::string_view bytes = detached(data_file);
    data = reinterpret_cast<const uint8_t*>(bytes.data());
    data_size = bytes.size();
    where = fmt::format("{} (data file {})", path, data_file);
  }
  if (stored > 0) {
    if (stored > data_size) fail("{}: truncated: the header gives {} bytes of compressed voxel data, the file holds {}", where, stored, data_size);
    data_size = static_cast<size_t>(stored);
  }
  if (compressed) {
    payload_inflate_check(data, data_size, needed, where);
  } else if (data_size < needed) {
    fail("{}: truncated: the header's sizes need {} bytes of voxels, the file holds {}", where, needed, data_size);
  }
}

}  // namespace m3d::imaging
