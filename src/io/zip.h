// Read-only ZIP directory reader for PyTorch's zip checkpoints (torch.save since
// 1.6). PyTorch writes "stored" (uncompressed) entries, zip64 when large; we
// read the central directory and hand out byte ranges inside the mapped file.
// Archives from elsewhere (a zipped DICOM series) also use "deflate" (method 8):
// zip_read inflates those, never past the recorded size.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace m3d::io {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 = stored, 8 = deflate
  uint16_t flags = 0;  // general purpose bits (bit 0: encrypted)
  uint64_t data_offset = 0;  // of the entry's (stored or compressed) bytes in the file
  uint64_t size = 0;  // uncompressed size (== the stored bytes for method 0)
  uint64_t compressed_size = 0;  // bytes at data_offset
  uint32_t crc32 = 0;  // of the uncompressed bytes, from the central directory
};

// Lists the entries; every entry's byte range is checked against the file.
std::vector<ZipEntry> zip_list(const MappedFile& file);

// The entry's uncompressed bytes, handed to `sink` in pieces (stored: views of the mapped
// file; deflate: inflated up to 1 MiB at a time), then its length and CRC-32 checked against
// the central directory. Inflating stops with an error as soon as the output would pass the
// recorded size, so a caller that bounded the recorded sizes bounds what is written. Errors
// name the entry: another method, encryption, a damaged stream, a length or CRC mismatch.
void zip_read(const MappedFile& file, const ZipEntry& entry, const std::function<void(const uint8_t* data, size_t size)>& sink);

// zip_read without a sink: recomputes the entry's CRC-32 (a damaged file is an error naming
// the entry). torch .bin readers check data.pkl always, tensor storages on request.
void zip_verify(const MappedFile& file, const ZipEntry& entry);

// Why an entry name from an untrusted archive may not be unpacked as a relative path: an
// absolute path or drive letter, a '..' component, a backslash, a control character or an
// empty name; "" when it may.
std::string zip_name_problem(const std::string& name);

// True when the bytes start like a ZIP local file header.
bool zip_has_magic(const MappedFile& file);

}  // namespace m3d::io
