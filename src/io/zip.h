// Read-only ZIP directory reader for PyTorch's zip checkpoints (torch.save since
// 1.6). PyTorch writes "stored" (uncompressed) entries, zip64 when large; we
// read the central directory and hand out byte ranges inside the mapped file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace m3d::io {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 = stored
  uint64_t data_offset = 0;  // of the entry's bytes in the file
  uint64_t size = 0;  // uncompressed == stored size
  uint32_t crc32 = 0;  // of the entry's bytes, from the central directory
};

// Lists the entries; every entry's byte range is checked against the file.
std::vector<ZipEntry> zip_list(const MappedFile& file);

// Recomputes the entry's CRC-32 (reads all its bytes); a mismatch is an error naming the
// entry (a damaged file). torch .bin readers check data.pkl always, tensor storages on request.
void zip_verify(const MappedFile& file, const ZipEntry& entry);

// True when the bytes start like a ZIP local file header.
bool zip_has_magic(const MappedFile& file);

}  // namespace m3d::io
