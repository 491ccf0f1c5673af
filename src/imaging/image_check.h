// Structural checks of files before a third-party decoder sees them: 2D slice images (PNG,
// JPEG) before libpng or ITK, MetaImage and NRRD voxel payloads before ITK.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace m3d::imaging {

enum class ImageKind { kPng, kJpeg, kSniff };  // kSniff: PNG if the bytes say so, else JPEG

// PNG chunk by chunk (lengths and CRC-32, IHDR first, IDAT present, IEND last); JPEG
// by its marker segments (SOI, segment lengths up to the first scan, a frame header,
// EOI at the end). Throws m3d::Error naming `path` on the first problem.
void slice_image_check(const uint8_t* bytes, size_t size, const std::string& path, ImageKind kind);

enum class PayloadKind { kMetaImage, kNrrd };

// The voxel bytes a MetaImage (.mha, ElementDataFile = LOCAL) or NRRD (.nrrd, attached
// data) header promises must be there: raw data at least that long, a zlib or gzip
// stream complete, with an intact checksum, that inflates to exactly that many bytes.
// ITK's readers check none of it (a truncated or bit-flipped file reads as garbage with
// exit 0). A detached data file (.mhd, .nhdr) is checked the same way when `detached`
// is given: it returns the bytes of the file the header names (relative to the header).
// Lists of files, numbered patterns, skipped bytes and text encodings are left to ITK.
using DetachedData = std::function<std::string_view(const std::string& name)>;
void volume_payload_check(const uint8_t* bytes, size_t size, const std::string& path, PayloadKind kind, const DetachedData& detached = {});

}  // namespace m3d::imaging
