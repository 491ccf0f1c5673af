// See gguf.h: the GGUF container (header, metadata values, tensor infos and their
// bounds); the llama-family mappings are in gguf_llama.cpp.
#include "io/gguf.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <unordered_set>

#include "m3d/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the GGUF reader assumes a little-endian host");

namespace m3d::io {
namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint64_t kDefaultAlignment = 32;

struct ScalarInfo {
  const char* name;
  size_t size;  // bytes; 0 for STRING and ARRAY
};

constexpr ScalarInfo kScalars[] = {
    {"UINT8", 1}, {"INT8", 1},   {"UINT16", 2}, {"INT16", 2},  {"UINT32", 4}, {"INT32", 4},   {"FLOAT32", 4},
    {"BOOL", 1},  {"STRING", 0}, {"ARRAY", 0},  {"UINT64", 8}, {"INT64", 8},  {"FLOAT64", 8},
};

bool type_known(uint32_t type) { return type < std::size(kScalars); }
size_t scalar_size(GgufType type) { return kScalars[static_cast<uint32_t>(type)].size; }

template <typename T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// Reads the header sequentially; every read is bounds-checked and errors name the
// file, what was being read and where.
class Cursor {
 public:
  explicit Cursor(const MappedFile& file) : path_(file.path()), data_(file.data()), size_(file.size()) {}

  const std::string& path() const { return path_; }
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  const uint8_t* here() const { return data_ + pos_; }

  const uint8_t* take(uint64_t n, const std::string& what) {
    if (n > remaining()) { fail("gguf: {}: {}: {} bytes at offset {} run past the end of the file ({} bytes; truncated file?)", path_, what, n, pos_, size_); }
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint32_t u32(const std::string& what) { return load<uint32_t>(take(4, what)); }
  uint64_t u64(const std::string& what) { return load<uint64_t>(take(8, what)); }
  std::string string(const std::string& what) {
    const uint64_t length = u64(what + " length");
    if (length > remaining()) {
      fail("gguf: {}: {}: length {} at offset {} exceeds the {} bytes left in the file (truncated or corrupt)", path_, what, length, pos_ - 8, remaining());
    }
    const uint8_t* p = take(length, what);
    return std::string(reinterpret_cast<const char*>(p), length);
  }
  // A count of items, each at least `min_item_bytes` long, must fit in the rest of
  // the file; checked before anything is reserved for them.
  uint64_t count(const std::string& what, uint64_t min_item_bytes) {
    const uint64_t n = u64(what);
    if (n > remaining() / min_item_bytes) {
      fail("gguf: {}: {} {} at offset {} cannot fit in the {} bytes left in the file (corrupt header)", path_, what, n, pos_ - 8, remaining());
    }
    return n;
  }

 private:
  std::string path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// `what` names the value relative to the file ("metadata 'llama.block_count'").
GgufValue read_value(Cursor& in, uint32_t raw_type, const std::string& what) {
  const std::string& path = in.path();
  if (!type_known(raw_type)) fail("gguf: {}: {}: unknown value type {}", path, what, raw_type);
  GgufValue value;
  value.type = value.element = static_cast<GgufType>(raw_type);
  if (value.type == GgufType::ARRAY) {
    const uint32_t element = in.u32(what + ": array element type");
    if (!type_known(element)) fail("gguf: {}: {}: unknown array element type {}", path, what, element);
    value.element = static_cast<GgufType>(element);
    if (value.element == GgufType::ARRAY) fail("gguf: {}: {}: arrays of arrays are not supported (nor by llama.cpp)", path, what);
    // A string takes at least its 8-byte length.
    const uint64_t min_bytes = value.element == GgufType::STRING ? 8 : scalar_size(value.element);
    value.count = in.count(what + ": array length", min_bytes);
  }
  if (value.element == GgufType::STRING) {
    value.strings.reserve(value.count);
    for (uint64_t i = 0; i < value.count; ++i) { value.strings.push_back(in.string(value.is_array() ? fmt::format("{}[{}]", what, i) : what)); }
    return value;
  }
  value.data = in.take(value.count * scalar_size(value.element), what);
  if (value.element == GgufType::BOOL) {
    // docs/gguf.md: 0 is false, 1 is true, anything else is invalid.
    for (uint64_t i = 0; i < value.count; ++i) {
      if (value.data[i] > 1) fail("gguf: {}: {}: bool value {} is neither 0 nor 1", path, what, value.data[i]);
    }
  }
  return value;
}

uint64_t align_up(uint64_t offset, uint64_t alignment) { return offset + (alignment - offset % alignment) % alignment; }

const GgufValue& require_type(const GgufFile& gguf, const std::string& key, const GgufValue& value, bool array, const char* wanted) {
  if (value.is_array() != array) { fail("gguf: {}: metadata '{}' is {}, expected {}", gguf.file->path(), key, value.type_string(), wanted); }
  return value;
}

std::string where_key(const GgufFile& gguf, const std::string& key) { return fmt::format("gguf: {}: metadata '{}'", gguf.file->path(), key); }

}  // namespace

std::string_view gguf_type_name(GgufType type) {
  const auto index = static_cast<uint32_t>(type);
  return type_known(index) ? kScalars[index].name : "?";
}

int64_t GgufValue::int_at(uint64_t i, const std::string& where) const {
  if (i >= count) fail("{}: index {} outside {} elements", where, i, count);
  switch (element) {
    case GgufType::U8:
      return data[i];
    case GgufType::I8:
      return load<int8_t>(data + i);
    case GgufType::U16:
      return load<uint16_t>(data + 2 * i);
    case GgufType::I16:
      return load<int16_t>(data + 2 * i);
    case GgufType::U32:
      return load<uint32_t>(data + 4 * i);
    case GgufType::I32:
      return load<int32_t>(data + 4 * i);
    case GgufType::I64:
      return load<int64_t>(data + 8 * i);
    case GgufType::U64: {
      const uint64_t v = load<uint64_t>(data + 8 * i);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail("{}: value {} is too large", where, v);
      return static_cast<int64_t>(v);
    }
    default:
      fail("{}: is {}, expected an integer", where, type_string());
  }
}

double GgufValue::float_at(uint64_t i, const std::string& where) const {
  if (i >= count) fail("{}: index {} outside {} elements", where, i, count);
  if (element == GgufType::F32) return load<float>(data + 4 * i);
  if (element == GgufType::F64) return load<double>(data + 8 * i);
  fail("{}: is {}, expected FLOAT32 or FLOAT64", where, type_string());
}

bool GgufValue::bool_at(uint64_t i, const std::string& where) const {
  if (i >= count) fail("{}: index {} outside {} elements", where, i, count);
  if (element != GgufType::BOOL) fail("{}: is {}, expected BOOL", where, type_string());
  return data[i] != 0;
}

std::string GgufValue::type_string() const {
  if (!is_array()) return std::string(gguf_type_name(type));
  return fmt::format("[{}; {}]", gguf_type_name(element), count);
}

std::string GgufValue::summary(size_t max_items) const {
  const uint64_t shown = is_array() ? std::min<uint64_t>(count, max_items) : 1;
  std::vector<std::string> items;
  for (uint64_t i = 0; i < shown; ++i) {
    switch (element) {
      case GgufType::STRING: {
        // At most 60 bytes, cut at a UTF-8 character boundary; newlines shown as \n.
        size_t cut = std::min<size_t>(strings[i].size(), 60);
        while (cut > 0 && cut < strings[i].size() && (static_cast<uint8_t>(strings[i][cut]) & 0xC0) == 0x80) --cut;
        std::string s;
        for (size_t k = 0; k < cut; ++k) s += strings[i][k] == '\n' ? std::string("\\n") : std::string(1, strings[i][k]);
        if (cut < strings[i].size()) s += "...";
        items.push_back(is_array() ? fmt::format("'{}'", s) : s);
        break;
      }
      case GgufType::F32:
        items.push_back(fmt::format("{}", static_cast<float>(float_at(i, ""))));
        break;  // 1e-05, not 9.99e-06
      case GgufType::F64:
        items.push_back(fmt::format("{}", float_at(i, "")));
        break;
      case GgufType::BOOL:
        items.push_back(bool_at(i, "") ? "true" : "false");
        break;
      case GgufType::U64:
        items.push_back(fmt::format("{}", load<uint64_t>(data + 8 * i)));
        break;
      default:
        items.push_back(fmt::format("{}", int_at(i, "")));
        break;
    }
  }
  if (!is_array()) return items.front();
  std::string out = "[";
  for (size_t k = 0; k < items.size(); ++k) out += (k ? ", " : "") + items[k];
  if (count > shown) out += fmt::format(", ... ({} {})", count, gguf_type_name(element));
  return out + "]";
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated at parse time not to overflow
  return n;
}

int64_t GgufTensor::rows() const {
  int64_t n = 1;
  for (size_t d = 0; d + 1 < shape.size(); ++d) n *= shape[d];
  return n;
}

size_t GgufTensor::row_bytes() const {
  const GgmlTypeInfo& info = ggml_type_info(type);
  const int64_t length = shape.empty() ? 1 : shape.back();
  return static_cast<size_t>(length / info.block_size) * info.type_size;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [name, value] : metadata) {
    if (name == key) return &value;
  }
  return nullptr;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  for (const auto& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != GgufType::STRING) fail("{}: is {}, expected STRING", where_key(*this, key), v->type_string());
  return v->strings.front();
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return require_type(*this, key, *v, false, "an integer").int_at(0, where_key(*this, key));
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return require_type(*this, key, *v, false, "a float").float_at(0, where_key(*this, key));
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return require_type(*this, key, *v, false, "BOOL").bool_at(0, where_key(*this, key));
}

std::vector<std::string> GgufFile::get_strings(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return {};
  if (v->type != GgufType::ARRAY || v->element != GgufType::STRING) { fail("{}: is {}, expected an array of STRING", where_key(*this, key), v->type_string()); }
  return v->strings;
}

std::vector<int64_t> GgufFile::get_ints(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return {};
  require_type(*this, key, *v, true, "an array of integers");
  std::vector<int64_t> out(v->count);
  for (uint64_t i = 0; i < v->count; ++i) out[i] = v->int_at(i, where_key(*this, key));
  return out;
}

std::vector<double> GgufFile::get_floats(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return {};
  require_type(*this, key, *v, true, "an array of floats");
  std::vector<double> out(v->count);
  for (uint64_t i = 0; i < v->count; ++i) out[i] = v->float_at(i, where_key(*this, key));
  return out;
}

std::string GgufFile::architecture() const {
  auto arch = get_string("general.architecture");
  if (!arch) fail("gguf: {}: metadata 'general.architecture' is missing", file->path());
  return *arch;
}

bool gguf_has_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, kMagic, 4) == 0;
}

GgufFile gguf_read(const std::string& path) { return gguf_parse(MappedFile::open(path)); }

namespace {

// The key/value pairs of the header; keys must be unique and non-empty.
void read_metadata(Cursor& in, uint64_t kv_count, GgufFile& out) {
  const std::string& path = in.path();
  out.metadata.reserve(kv_count);
  std::unordered_set<std::string> seen;
  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = in.string(fmt::format("metadata key {}", i));
    const std::string what = fmt::format("metadata '{}'", key);
    if (key.empty()) fail("gguf: {}: metadata key {} is empty", path, i);
    if (!seen.insert(key).second) fail("gguf: {}: {}: appears twice", path, what);
    const uint32_t type = in.u32(what + ": type");
    out.metadata.emplace_back(std::move(key), read_value(in, type, what));
  }
}

// general.alignment (a power of two), or GGUF's default.
uint64_t read_alignment(const GgufFile& gguf, const std::string& path) {
  const GgufValue* alignment = gguf.find("general.alignment");
  if (alignment == nullptr) return kDefaultAlignment;
  if (alignment->type != GgufType::U32) { fail("gguf: {}: metadata 'general.alignment' is {}, expected UINT32", path, alignment->type_string()); }
  const uint64_t value = load<uint32_t>(alignment->data);
  if (value == 0 || (value & (value - 1)) != 0) fail("gguf: {}: general.alignment {} is not a power of two", path, value);
  return value;
}

struct TensorInfo {
  std::vector<uint64_t> dims;  // innermost first
  uint32_t type;
  uint64_t offset;
};

// The tensor infos of the header: out.tensors gets their (unique) names.
std::vector<TensorInfo> read_tensor_infos(Cursor& in, uint64_t tensor_count, GgufFile& out) {
  const std::string& path = in.path();
  std::vector<TensorInfo> infos;
  infos.reserve(tensor_count);
  out.tensors.reserve(tensor_count);
  std::unordered_set<std::string> seen;
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensor tensor;
    tensor.name = in.string(fmt::format("tensor {} name", i));
    const std::string what = fmt::format("tensor '{}'", tensor.name);
    const std::string where = "gguf: " + path + ": " + what;
    if (tensor.name.size() > kGgufMaxName) { fail("{}: name is {} bytes long, more than GGUF's {}", where, tensor.name.size(), kGgufMaxName); }
    if (!seen.insert(tensor.name).second) fail("{}: appears twice", where);
    TensorInfo info;
    const uint32_t n_dims = in.u32(what + ": n_dims");
    if (n_dims > kGgufMaxDims) fail("{}: {} dimensions, more than ggml's {}", where, n_dims, kGgufMaxDims);
    for (uint32_t d = 0; d < n_dims; ++d) info.dims.push_back(in.u64(fmt::format("{}: dimension {}", what, d)));
    info.type = in.u32(what + ": type");
    info.offset = in.u64(what + ": offset");
    out.tensors.push_back(std::move(tensor));
    infos.push_back(std::move(info));
  }
  return infos;
}

// Each tensor's type, shape and bytes in the data section of `data_size` bytes: every
// size is checked against the section before it is used, and no two tensors overlap.
void place_tensors(const MappedFile& file, const std::vector<TensorInfo>& infos, uint64_t data_size, GgufFile& out) {
  const std::string& path = file.path();
  struct Span {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Span> spans;
  for (size_t i = 0; i < out.tensors.size(); ++i) {
    GgufTensor& tensor = out.tensors[i];
    const TensorInfo& info = infos[i];
    const std::string where = fmt::format("gguf: {}: tensor '{}'", path, tensor.name);
    const auto type = ggml_type_info(info.type);
    if (!type) fail("{}: unknown ggml type {}", where, info.type);
    tensor.type = type->type;
    // Element count: every dimension and their product must fit in int64 and in the
    // data section (every type takes at least one byte per block).
    uint64_t numel = 1;
    for (uint64_t d : info.dims) {
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (d != 0 && numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / d)) {
        fail("{}: dimensions overflow 64 bits", where);
      }
      numel *= d;
    }
    const uint64_t row = info.dims.empty() ? 1 : info.dims.front();
    if (row % static_cast<uint64_t>(type->block_size) != 0) {
      fail("{}: rows of {} elements are not a whole number of {} blocks of {}", where, row, type->name, type->block_size);
    }
    const uint64_t blocks = numel / static_cast<uint64_t>(type->block_size);
    if (blocks > data_size / type->type_size) {
      fail("{}: {} blocks of {} ({} bytes each) exceed the data section of {} bytes", where, blocks, type->name, type->type_size, data_size);
    }
    tensor.nbytes = blocks * type->type_size;
    tensor.shape.assign(info.dims.rbegin(), info.dims.rend());
    tensor.offset = info.offset;
    if (info.offset % out.alignment != 0) { fail("{}: offset {} is not a multiple of the alignment {}", where, info.offset, out.alignment); }
    if (info.offset > data_size || tensor.nbytes > data_size - info.offset) {
      fail("{}: byte range [{}, {}) exceeds the data section of {} bytes (truncated file?)", where, info.offset, info.offset + tensor.nbytes, data_size);
    }
    tensor.data = file.data() + out.data_offset + info.offset;
    spans.push_back({info.offset, info.offset + tensor.nbytes, i});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  const Span* previous = nullptr;
  for (const auto& span : spans) {
    if (span.begin == span.end) continue;
    if (previous != nullptr && span.begin < previous->end) {
      fail("gguf: {}: tensors '{}' and '{}' overlap in the data section", path, out.tensors[previous->index].name, out.tensors[span.index].name);
    }
    previous = &span;
  }
}

}  // namespace

GgufFile gguf_parse(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  Cursor in(*file);
  if (file->size() < 4 || std::memcmp(file->data(), kMagic, 4) != 0) { fail("gguf: {}: not a GGUF file (the first 4 bytes are not 'GGUF')", path); }
  in.take(4, "magic");
  GgufFile out;
  out.file = file;
  out.version = in.u32("version");
  if ((out.version & 0xFFFF) == 0 && out.version != 0) {
    fail("gguf: {}: version field {:#x} looks byte-swapped: big-endian GGUF files are not supported", path, out.version);
  }
  if (out.version != 2 && out.version != 3) {
    fail("gguf: {}: version {} is not supported (supported: 2, 3; version 1 files must be re-converted)", path, out.version);
  }
  // The smallest tensor info: 8-byte name length, n_dims, type, offset; the smallest
  // key/value: 8-byte key length, type, one byte.
  const uint64_t tensor_count = in.count("tensor count", 8 + 4 + 4 + 8);
  const uint64_t kv_count = in.count("metadata count", 8 + 4 + 1);
  read_metadata(in, kv_count, out);
  out.alignment = read_alignment(out, path);
  const std::vector<TensorInfo> infos = read_tensor_infos(in, tensor_count, out);
  out.data_offset = align_up(in.pos(), out.alignment);
  if (tensor_count > 0 && out.data_offset > file->size()) {
    fail("gguf: {}: the data section would start at offset {}, past the end of the file ({} bytes; truncated file?)", path, out.data_offset, file->size());
  }
  const uint64_t data_size = tensor_count > 0 ? file->size() - out.data_offset : 0;
  place_tensors(*file, infos, data_size, out);
  return out;
}

std::vector<float> gguf_dequantize(const GgufTensor& tensor) {
  std::vector<float> out(static_cast<size_t>(tensor.numel()));
  ggml_dequantize(tensor.type, tensor.data, out.data(), tensor.numel());
  return out;
}

std::optional<TensorRecord> gguf_tensor_record(const GgufFile& gguf, const GgufTensor& tensor) {
  std::optional<DType> dtype;
  switch (tensor.type) {
    case GgmlType::F32:
      dtype = DType::F32;
      break;
    case GgmlType::F16:
      dtype = DType::F16;
      break;
    case GgmlType::BF16:
      dtype = DType::BF16;
      break;
    case GgmlType::F64:
      dtype = DType::F64;
      break;
    case GgmlType::I8:
      dtype = DType::I8;
      break;
    case GgmlType::I16:
      dtype = DType::I16;
      break;
    case GgmlType::I32:
      dtype = DType::I32;
      break;
    case GgmlType::I64:
      dtype = DType::I64;
      break;
    default:
      return std::nullopt;
  }
  TensorRecord record;
  record.name = tensor.name;
  record.dtype = *dtype;
  record.shape = tensor.shape;
  record.strides = strides_contiguous(tensor.shape);
  record.data = tensor.data;
  record.file = gguf.file;
  return record;
}

}  // namespace m3d::io
