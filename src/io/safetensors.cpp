#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>

#include "io/atomic_file.h"
#include "m3d/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors readers assume a little-endian host");

namespace m3d::io {
namespace {

using json = nlohmann::json;

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t value = 0;
  std::memcpy(&value, p, sizeof(value));
  return value;
}

std::vector<int64_t> parse_shape(const json& entry, const std::string& where) {
  auto it = entry.find("shape");
  if (it == entry.end() || !it->is_array()) fail("{}: 'shape' missing or not an array", where);
  std::vector<int64_t> shape;
  for (const auto& dim : *it) {
    if (!dim.is_number_unsigned()) fail("{}: shape entry {} is not a non-negative integer", where, dim.dump());
    uint64_t value = dim.get<uint64_t>();
    if (value > static_cast<uint64_t>(INT64_MAX)) fail("{}: shape entry {} is too large", where, value);
    shape.push_back(static_cast<int64_t>(value));
  }
  return shape;
}

std::pair<uint64_t, uint64_t> parse_offsets(const json& entry, const std::string& where) {
  auto it = entry.find("data_offsets");
  if (it == entry.end() || !it->is_array() || it->size() != 2 || !(*it)[0].is_number_unsigned() || !(*it)[1].is_number_unsigned()) {
    fail("{}: 'data_offsets' must be two non-negative integers", where);
  }
  return {(*it)[0].get<uint64_t>(), (*it)[1].get<uint64_t>()};
}

}  // namespace

SafetensorsFile safetensors_read(const std::string& path) { return safetensors_parse(MappedFile::open(path)); }

SafetensorsFile safetensors_parse(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  if (file->size() < 8) fail("{}: not a safetensors file: {} bytes, shorter than the 8-byte header length", path, file->size());
  const uint64_t header_len = read_u64_le(file->data());
  if (header_len > kSafetensorsMaxHeader) {
    fail("{}: safetensors header length {} exceeds the {}-byte limit (corrupt or not a safetensors file)", path, header_len, kSafetensorsMaxHeader);
  }
  if (header_len > file->size() - 8) { fail("{}: safetensors header length {} exceeds the file size {} (truncated file?)", path, header_len, file->size()); }
  const auto* header_begin = reinterpret_cast<const char*>(file->data() + 8);
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len);
  } catch (const json::exception& e) { fail("{}: safetensors header is not valid JSON: {}", path, e.what()); }
  if (!header.is_object()) fail("{}: safetensors header is not a JSON object", path);

  SafetensorsFile out;
  out.file = file;
  const uint8_t* buffer = file->data() + 8 + header_len;
  const uint64_t buffer_size = file->size() - 8 - header_len;
  struct Span {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("{}: '__metadata__' is not an object", path);
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail("{}: '__metadata__' value of '{}' is not a string", path, key);
        out.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = fmt::format("{}: tensor '{}'", path, name);
    if (!entry.is_object()) fail("{}: entry is not an object", where);
    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) fail("{}: 'dtype' missing or not a string", where);
    auto dtype = dtype_parse(dtype_it->get<std::string>());
    if (!dtype) fail("{}: unsupported dtype '{}' (supported: {})", where, dtype_it->get<std::string>(), dtype_supported_list());
    TensorRecord record;
    record.name = name;
    record.dtype = *dtype;
    record.shape = parse_shape(entry, where);
    const auto [begin, end] = parse_offsets(entry, where);
    if (begin > end) fail("{}: data_offsets [{}, {}) are reversed", where, begin, end);
    if (end > buffer_size) { fail("{}: byte range [{}, {}) exceeds the data buffer of {} bytes (truncated file?)", where, begin, end, buffer_size); }
    const int64_t numel = shape_numel_checked(record.shape);
    if (numel < 0 || static_cast<uint64_t>(numel) > buffer_size) {
      fail("{}: shape {} is too large for a {}-byte data buffer", where, shape_string(record.shape), buffer_size);
    }
    const uint64_t expected = static_cast<uint64_t>(numel) * dtype_size(*dtype);
    if (end - begin != expected) {
      fail("{}: byte range [{}, {}) holds {} bytes but shape {} of {} needs {}", where, begin, end, end - begin, shape_string(record.shape), dtype_name(*dtype),
           expected);
    }
    record.strides = strides_contiguous(record.shape);
    record.data = buffer + begin;
    record.file = file;
    spans.push_back({begin, end, out.tensors.size()});
    out.tensors.push_back(std::move(record));
  }
  // Tensors may not share bytes (the official reader rejects it too); empty ones take none.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  const Span* previous = nullptr;
  for (const auto& span : spans) {
    if (span.begin == span.end) continue;
    if (previous != nullptr && span.begin < previous->end) {
      fail("{}: tensors '{}' and '{}' overlap in the data buffer", path, out.tensors[previous->index].name, out.tensors[span.index].name);
    }
    previous = &span;
  }
  return out;
}

void safetensors_write(const std::string& path, const std::vector<TensorBytes>& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& tensor : tensors) {
    const int64_t numel = shape_numel_checked(tensor.shape);
    if (numel < 0 || static_cast<uint64_t>(numel) * dtype_size(tensor.dtype) != tensor.nbytes) {
      fail("{}: tensor '{}': {} bytes do not match shape {} of {}", path, tensor.name, tensor.nbytes, shape_string(tensor.shape), dtype_name(tensor.dtype));
    }
    if (header.contains(tensor.name)) fail("{}: tensor name '{}' appears twice", path, tensor.name);
    header[tensor.name] = {{"dtype", dtype_name(tensor.dtype)}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + tensor.nbytes}}};
    offset += tensor.nbytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // 8-byte aligned data, as HF pads
  AtomicFile out(path);
  const uint64_t header_len = header_text.size();
  out.write(&header_len, sizeof(header_len));
  out.write(header_text.data(), header_text.size());
  for (const auto& tensor : tensors) out.write(tensor.data, tensor.nbytes);
  out.commit();
}

}  // namespace m3d::io
