#include "io/zip.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <vector>

#include "m3d/error.h"

namespace m3d::io {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfDirectory = 0x06054b50;
constexpr uint32_t kZip64EndOfDirectory = 0x06064b50;
constexpr uint32_t kZip64Locator = 0x07064b50;

// Bounds-checked little-endian reads over the mapped file.
class Reader {
 public:
  explicit Reader(const MappedFile& file) : file_(file) {}
  template <typename T>
  T get(uint64_t offset, const char* what) const {
    if (offset > file_.size() || file_.size() - offset < sizeof(T)) {
      fail("{}: zip {} at offset {} lies beyond the end of the file ({} bytes; truncated?)", file_.path(), what, offset, file_.size());
    }
    T value;
    std::memcpy(&value, file_.data() + offset, sizeof(T));
    return value;
  }
  void require(uint64_t offset, uint64_t size, const char* what) const {
    if (offset > file_.size() || file_.size() - offset < size) {
      fail("{}: zip {} [{}, {}+{}) lies beyond the end of the file ({} bytes; truncated?)", file_.path(), what, offset, offset, size, file_.size());
    }
  }

 private:
  const MappedFile& file_;
};

struct Directory {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
};

Directory find_directory(const MappedFile& file, const Reader& in) {
  const uint64_t size = file.size();
  if (size < 22) fail("{}: not a zip archive ({} bytes)", file.path(), size);
  // The end record is 22 bytes plus a comment of up to 65535 bytes.
  const uint64_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
  for (uint64_t pos = size - 22 + 1; pos-- > lowest;) {
    if (in.get<uint32_t>(pos, "end record") != kEndOfDirectory) continue;
    Directory dir;
    dir.entries = in.get<uint16_t>(pos + 10, "end record");
    dir.size = in.get<uint32_t>(pos + 12, "end record");
    dir.offset = in.get<uint32_t>(pos + 16, "end record");
    const bool zip64 = dir.entries == 0xFFFF || dir.size == 0xFFFFFFFF || dir.offset == 0xFFFFFFFF;
    if (zip64 && pos >= 20 && in.get<uint32_t>(pos - 20, "zip64 locator") == kZip64Locator) {
      const uint64_t record = in.get<uint64_t>(pos - 20 + 8, "zip64 locator");
      if (in.get<uint32_t>(record, "zip64 end record") != kZip64EndOfDirectory) { fail("{}: zip64 end record missing at offset {}", file.path(), record); }
      dir.entries = in.get<uint64_t>(record + 32, "zip64 end record");
      dir.size = in.get<uint64_t>(record + 40, "zip64 end record");
      dir.offset = in.get<uint64_t>(record + 48, "zip64 end record");
    }
    in.require(dir.offset, dir.size, "central directory");
    return dir;
  }
  fail("{}: not a zip archive (no end-of-directory record)", file.path());
}

}  // namespace

bool zip_has_magic(const MappedFile& file) {
  uint32_t magic = 0;
  if (file.size() < 4) return false;
  std::memcpy(&magic, file.data(), 4);
  return magic == kLocalHeader;
}

std::vector<ZipEntry> zip_list(const MappedFile& file) {
  Reader in(file);
  const Directory dir = find_directory(file, in);
  if (dir.entries > dir.size / 46) { fail("{}: zip directory claims {} entries in {} bytes (corrupt)", file.path(), dir.entries, dir.size); }
  std::vector<ZipEntry> entries;
  uint64_t pos = dir.offset;
  for (uint64_t i = 0; i < dir.entries; ++i) {
    if (in.get<uint32_t>(pos, "central header") != kCentralHeader) { fail("{}: zip central header {} missing at offset {} (corrupt)", file.path(), i, pos); }
    ZipEntry entry;
    entry.flags = in.get<uint16_t>(pos + 8, "central header");
    entry.method = in.get<uint16_t>(pos + 10, "central header");
    entry.crc32 = in.get<uint32_t>(pos + 16, "central header");
    uint64_t compressed = in.get<uint32_t>(pos + 20, "central header");
    uint64_t uncompressed = in.get<uint32_t>(pos + 24, "central header");
    const uint16_t name_len = in.get<uint16_t>(pos + 28, "central header");
    const uint16_t extra_len = in.get<uint16_t>(pos + 30, "central header");
    const uint16_t comment_len = in.get<uint16_t>(pos + 32, "central header");
    uint64_t local = in.get<uint32_t>(pos + 42, "central header");
    in.require(pos + 46, uint64_t{name_len} + extra_len + comment_len, "central header");
    entry.name.assign(reinterpret_cast<const char*>(file.data() + pos + 46), name_len);
    // zip64 extended information: the 8-byte values replace the saturated ones, in order.
    uint64_t extra = pos + 46 + name_len;
    const uint64_t extra_end = extra + extra_len;
    while (extra + 4 <= extra_end) {
      const uint16_t id = in.get<uint16_t>(extra, "extra field");
      const uint16_t len = in.get<uint16_t>(extra + 2, "extra field");
      if (extra + 4 + len > extra_end) fail("{}: zip entry '{}': extra field overruns its header", file.path(), entry.name);
      if (id == 0x0001) {
        uint64_t field = extra + 4;
        const uint64_t field_end = field + len;
        auto take = [&](uint64_t& value) {
          if (value != 0xFFFFFFFF) return;
          if (field + 8 > field_end) fail("{}: zip entry '{}': short zip64 field", file.path(), entry.name);
          value = in.get<uint64_t>(field, "zip64 field");
          field += 8;
        };
        take(uncompressed);
        take(compressed);
        take(local);
      }
      extra += 4 + len;
    }
    if (in.get<uint32_t>(local, "local header") != kLocalHeader) {
      fail("{}: zip entry '{}': local header missing at offset {} (corrupt)", file.path(), entry.name, local);
    }
    const uint16_t local_name = in.get<uint16_t>(local + 26, "local header");
    const uint16_t local_extra = in.get<uint16_t>(local + 28, "local header");
    entry.data_offset = local + 30 + local_name + local_extra;
    entry.size = entry.method == 0 ? compressed : uncompressed;
    entry.compressed_size = compressed;
    if (entry.method == 0 && compressed != uncompressed) {
      fail("{}: zip entry '{}': stored entry with sizes {} != {} (corrupt)", file.path(), entry.name, compressed, uncompressed);
    }
    in.require(entry.data_offset, compressed, "entry data");
    entries.push_back(std::move(entry));
    pos += 46 + name_len + extra_len + comment_len;
  }
  return entries;
}

void zip_read(const MappedFile& file, const ZipEntry& entry, const std::function<void(const uint8_t* data, size_t size)>& sink) {
  if (entry.flags & 1) fail("{}: zip entry '{}' is encrypted: m3d reads no encrypted archives", file.path(), entry.name);
  uLong crc = ::crc32(0, nullptr, 0);
  uint64_t produced = 0;
  auto take = [&](const uint8_t* data, size_t size) {  // zlib takes at most 4 GiB a call; pieces are at most 1 GiB
    crc = ::crc32(crc, data, static_cast<uInt>(size));
    produced += size;
    if (sink) sink(data, size);
  };
  const uint8_t* data = file.data() + entry.data_offset;
  constexpr uint64_t kPiece = uint64_t{1} << 30;
  if (entry.method == 0) {
    for (uint64_t done = 0; done < entry.size; done += kPiece) take(data + done, static_cast<size_t>(std::min(entry.size - done, kPiece)));
  } else if (entry.method == 8) {
    z_stream z{};
    if (::inflateInit2(&z, -MAX_WBITS) != Z_OK) fail("{}: zip entry '{}': cannot start inflating", file.path(), entry.name);  // raw deflate, no header
    struct End {
      z_stream& z;
      ~End() { ::inflateEnd(&z); }
    } end{z};
    std::vector<uint8_t> out(size_t{1} << 20);
    uint64_t fed = 0;
    for (int status = Z_OK; status != Z_STREAM_END;) {
      if (z.avail_in == 0 && fed < entry.compressed_size) {
        z.next_in = const_cast<Bytef*>(data + fed);
        z.avail_in = static_cast<uInt>(std::min(entry.compressed_size - fed, kPiece));
        fed += z.avail_in;
      }
      z.next_out = out.data();
      z.avail_out = static_cast<uInt>(out.size());
      status = ::inflate(&z, Z_NO_FLUSH);
      if (status != Z_OK && status != Z_STREAM_END) {
        fail("{}: zip entry '{}': damaged deflate data ({}): the file is damaged or truncated", file.path(), entry.name,
             status == Z_BUF_ERROR ? "it ends early"
             : z.msg != nullptr    ? z.msg
                                   : "zlib error");
      }
      const size_t n = out.size() - z.avail_out;
      if (n > entry.size - produced) {
        fail("{}: zip entry '{}' inflates past its recorded size of {} bytes: the archive is damaged or forged", file.path(), entry.name, entry.size);
      }
      take(out.data(), n);
    }
  } else {
    fail("{}: zip entry '{}': compression method {} is not supported (stored or deflate): zip it again with plain deflate", file.path(), entry.name,
         entry.method);
  }
  if (produced != entry.size) {
    fail("{}: zip entry '{}' holds {} bytes, its directory records {}: the file is damaged", file.path(), entry.name, produced, entry.size);
  }
  if (static_cast<uint32_t>(crc) != entry.crc32) {
    fail("{}: zip entry '{}': CRC-32 {:08x} differs from the recorded {:08x}: the file is damaged", file.path(), entry.name, static_cast<uint32_t>(crc),
         entry.crc32);
  }
}

void zip_verify(const MappedFile& file, const ZipEntry& entry) { zip_read(file, entry, {}); }

std::string zip_name_problem(const std::string& name) {
  if (name.empty()) return "an empty name";
  if (name.find('\\') != std::string::npos) return "a backslash (a Windows path?)";
  if (name.front() == '/') return "an absolute path";
  if (name.size() >= 2 && name[1] == ':' && std::isalpha(static_cast<unsigned char>(name[0]))) return "a drive letter";
  if (std::any_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) return "a control character";
  for (size_t start = 0; start <= name.size();) {
    const size_t slash = std::min(name.find('/', start), name.size());
    if (name.compare(start, slash - start, "..") == 0) return "a '..' component (it would unpack outside its folder)";
    start = slash + 1;
  }
  return "";
}

}  // namespace m3d::io
