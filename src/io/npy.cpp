#include "io/npy.h"

#include <cstring>

#include "io/atomic_file.h"
#include "m3d/error.h"

namespace m3d::io {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr size_t kMaxHeader = 1 << 20;

// The dtype descriptor ('<f4', '|u1', ...) -> DType; big-endian is refused.
DType parse_descr(const std::string& descr, const std::string& where) {
  static const std::pair<const char*, DType> kDescr[] = {
      {"<f8", DType::F64}, {"<f4", DType::F32}, {"<f2", DType::F16}, {"<i8", DType::I64},  {"<i4", DType::I32},
      {"<i2", DType::I16}, {"|i1", DType::I8},  {"|u1", DType::U8},  {"|b1", DType::BOOL},
  };
  for (const auto& [name, dtype] : kDescr) {
    if (descr == name) return dtype;
  }
  fail("{}: unsupported npy dtype '{}' (supported: <f8 <f4 <f2 <i8 <i4 <i2 |i1 |u1 |b1)", where, descr);
}

// Value text after "'key':" in the header dict, up to the matching end.
std::string dict_value(const std::string& header, const std::string& key, const std::string& where) {
  const std::string quoted = "'" + key + "'";
  size_t pos = header.find(quoted);
  if (pos == std::string::npos) fail("{}: npy header has no '{}'", where, key);
  pos = header.find(':', pos + quoted.size());
  if (pos == std::string::npos) fail("{}: npy header: no value for '{}'", where, key);
  ++pos;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  if (pos >= header.size()) fail("{}: npy header: no value for '{}'", where, key);
  size_t end;
  if (header[pos] == '\'') {
    end = header.find('\'', pos + 1);
    if (end == std::string::npos) fail("{}: npy header: unterminated string for '{}'", where, key);
    return header.substr(pos + 1, end - pos - 1);
  }
  if (header[pos] == '(') {
    end = header.find(')', pos);
    if (end == std::string::npos) fail("{}: npy header: unterminated tuple for '{}'", where, key);
    return header.substr(pos, end - pos + 1);
  }
  end = header.find_first_of(",}", pos);
  if (end == std::string::npos) fail("{}: npy header: malformed value for '{}'", where, key);
  return header.substr(pos, end - pos);
}

std::vector<int64_t> parse_shape(const std::string& tuple, const std::string& where) {
  std::vector<int64_t> shape;
  size_t pos = 1;  // after '('
  while (pos < tuple.size()) {
    while (pos < tuple.size() && (tuple[pos] == ' ' || tuple[pos] == ',')) ++pos;
    if (pos >= tuple.size() || tuple[pos] == ')') break;
    if (tuple[pos] < '0' || tuple[pos] > '9') fail("{}: npy shape {} is not a tuple of non-negative integers", where, tuple);
    int64_t value = 0;
    while (pos < tuple.size() && tuple[pos] >= '0' && tuple[pos] <= '9') {
      if (value > (INT64_MAX - 9) / 10) fail("{}: npy shape {} has a dimension too large", where, tuple);
      value = value * 10 + (tuple[pos] - '0');
      ++pos;
    }
    if (shape.size() >= 32) fail("{}: npy shape {} has more than 32 dimensions", where, tuple);
    shape.push_back(value);
  }
  return shape;
}

}  // namespace

NpyFile npy_read(const std::string& path) { return npy_parse(MappedFile::open(path)); }

NpyFile npy_parse(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  const uint8_t* data = file->data();
  const size_t size = file->size();
  if (size < kMagicLen + 4 || std::memcmp(data, kMagic, kMagicLen) != 0) { fail("{}: not a .npy file (no \\x93NUMPY magic)", path); }
  const uint8_t major = data[6];
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = data[8] | (size_t{data[9]} << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) fail("{}: truncated .npy header", path);
    header_len = data[8] | (size_t{data[9]} << 8) | (size_t{data[10]} << 16) | (size_t{data[11]} << 24);
    header_start = 12;
  } else {
    fail("{}: unsupported .npy format version {}", path, major);
  }
  if (header_len > kMaxHeader || header_len > size - header_start) {
    fail("{}: .npy header length {} exceeds the file size {} (truncated file?)", path, header_len, size);
  }
  const std::string header(reinterpret_cast<const char*>(data + header_start), header_len);
  const DType dtype = parse_descr(dict_value(header, "descr", path), path);
  const std::string fortran = dict_value(header, "fortran_order", path);
  if (fortran != "False") { fail("{}: Fortran-order .npy arrays are not supported (save with np.ascontiguousarray)", path); }
  NpyFile out;
  out.array.name = path;
  out.array.dtype = dtype;
  out.array.shape = parse_shape(dict_value(header, "shape", path), path);
  out.array.strides = strides_contiguous(out.array.shape);
  const size_t data_start = header_start + header_len;
  const int64_t numel = shape_numel_checked(out.array.shape);
  const uint64_t available = size - data_start;
  if (numel < 0 || static_cast<uint64_t>(numel) > available || static_cast<uint64_t>(numel) * dtype_size(dtype) > available) {
    fail("{}: .npy array of shape {} ({}) needs more than the {} data bytes in the file (truncated file?)", path, shape_string(out.array.shape),
         dtype_name(dtype), available);
  }
  out.array.data = data + data_start;
  out.array.file = file;
  return out;
}

void npy_write(const std::string& path, DType dtype, const std::vector<int64_t>& shape, const void* data) {
  static const std::pair<DType, const char*> kDescr[] = {
      {DType::F64, "<f8"}, {DType::F32, "<f4"}, {DType::F16, "<f2"}, {DType::I64, "<i8"},  {DType::I32, "<i4"},
      {DType::I16, "<i2"}, {DType::I8, "|i1"},  {DType::U8, "|u1"},  {DType::BOOL, "|b1"},
  };
  const char* descr = nullptr;
  for (const auto& [d, name] : kDescr) {
    if (d == dtype) descr = name;
  }
  if (descr == nullptr) fail("{}: dtype {} cannot be written to .npy", path, dtype_name(dtype));
  std::string shape_text = "(";
  for (int64_t dim : shape) shape_text += std::to_string(dim) + ", ";
  if (shape.size() > 1) shape_text.resize(shape_text.size() - 2);
  if (shape.size() == 1) shape_text.resize(shape_text.size() - 1);
  shape_text += ")";
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr, shape_text);
  // Pad with spaces so magic + 4 + header + '\n' is a multiple of 64, as numpy does.
  header.append(63 - (kMagicLen + 4 + header.size()) % 64, ' ');
  header += '\n';
  AtomicFile out(path);
  out.write(kMagic, kMagicLen);
  const uint8_t version[2] = {1, 0};
  out.write(version, 2);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write(&len, 2);
  out.write(header.data(), header.size());
  const int64_t numel = shape_numel_checked(shape);
  if (numel < 0) fail("{}: invalid shape {}", path, shape_string(shape));
  out.write(data, static_cast<size_t>(numel) * dtype_size(dtype));
  out.commit();
}

}  // namespace m3d::io
