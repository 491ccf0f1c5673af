// GGUF v3 writer (io/gguf_write.h).
#include "io/gguf_write.h"

#include <cstring>

#include "io/atomic_file.h"
#include "m3d/error.h"

namespace m3d::io {
namespace {

class Bytes {
 public:
  template <typename T>
  void put(T value) {
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &value, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void pad(uint64_t alignment) { out_.resize((out_.size() + alignment - 1) / alignment * alignment, 0); }
  std::string& str() { return out_; }

 private:
  std::string out_;
};

void put_element(Bytes& b, GgufType type, const GgufWriteValue& v, size_t i) {
  switch (type) {
    case GgufType::U8:
      return b.put<uint8_t>(static_cast<uint8_t>(v.ints.at(i)));
    case GgufType::I8:
      return b.put<int8_t>(static_cast<int8_t>(v.ints.at(i)));
    case GgufType::U16:
      return b.put<uint16_t>(static_cast<uint16_t>(v.ints.at(i)));
    case GgufType::I16:
      return b.put<int16_t>(static_cast<int16_t>(v.ints.at(i)));
    case GgufType::U32:
      return b.put<uint32_t>(static_cast<uint32_t>(v.ints.at(i)));
    case GgufType::I32:
      return b.put<int32_t>(static_cast<int32_t>(v.ints.at(i)));
    case GgufType::U64:
      return b.put<uint64_t>(static_cast<uint64_t>(v.ints.at(i)));
    case GgufType::I64:
      return b.put<int64_t>(v.ints.at(i));
    case GgufType::BOOL:
      return b.put<uint8_t>(v.ints.at(i) != 0 ? 1 : 0);
    case GgufType::F32:
      return b.put<float>(static_cast<float>(v.floats.at(i)));
    case GgufType::F64:
      return b.put<double>(v.floats.at(i));
    case GgufType::STRING:
      return b.put_string(v.strings.at(i));
    case GgufType::ARRAY:
      break;
  }
  fail("gguf_write: element type {} cannot be written", static_cast<uint32_t>(type));
}

size_t element_count(const GgufWriteValue& v) {
  if (v.element == GgufType::STRING) return v.strings.size();
  if (v.element == GgufType::F32 || v.element == GgufType::F64) return v.floats.size();
  return v.ints.size();
}

void put_value(Bytes& b, const GgufWriteValue& v) {
  b.put<uint32_t>(static_cast<uint32_t>(v.type));
  if (v.type != GgufType::ARRAY) return put_element(b, v.type, v, 0);
  b.put<uint32_t>(static_cast<uint32_t>(v.element));
  const size_t n = element_count(v);
  b.put<uint64_t>(n);
  for (size_t i = 0; i < n; ++i) put_element(b, v.element, v, i);
}

uint64_t expected_bytes(const GgufWriteTensor& t, const std::string& path) {
  const GgmlTypeInfo& info = ggml_type_info(t.type);
  if (t.shape.empty() || t.shape.size() > kGgufMaxDims) fail("gguf_write: {}: tensor '{}' has {} dimensions (1 to 4 allowed)", path, t.name, t.shape.size());
  if (t.name.size() > kGgufMaxName) fail("gguf_write: {}: tensor name '{}' is longer than {} bytes", path, t.name, kGgufMaxName);
  if (t.shape.back() % info.block_size != 0) {
    fail("gguf_write: {}: tensor '{}' rows of {} are not whole {} blocks of {}", path, t.name, t.shape.back(), info.name, info.block_size);
  }
  uint64_t rows = 1;
  for (size_t i = 0; i + 1 < t.shape.size(); ++i) rows *= static_cast<uint64_t>(t.shape[i]);
  return rows * static_cast<uint64_t>(t.shape.back() / info.block_size) * info.type_size;
}

}  // namespace

GgufWriteValue GgufWriteValue::string(std::string value) { return {GgufType::STRING, GgufType::STRING, {std::move(value)}, {}, {}}; }
GgufWriteValue GgufWriteValue::u32(uint32_t value) { return {GgufType::U32, GgufType::U32, {}, {value}, {}}; }
GgufWriteValue GgufWriteValue::i32(int32_t value) { return {GgufType::I32, GgufType::I32, {}, {value}, {}}; }
GgufWriteValue GgufWriteValue::u64(uint64_t value) { return {GgufType::U64, GgufType::U64, {}, {static_cast<int64_t>(value)}, {}}; }
GgufWriteValue GgufWriteValue::f32(float value) { return {GgufType::F32, GgufType::F32, {}, {}, {value}}; }
GgufWriteValue GgufWriteValue::boolean(bool value) { return {GgufType::BOOL, GgufType::BOOL, {}, {value ? 1 : 0}, {}}; }
GgufWriteValue GgufWriteValue::string_array(std::vector<std::string> values) { return {GgufType::ARRAY, GgufType::STRING, std::move(values), {}, {}}; }
GgufWriteValue GgufWriteValue::i32_array(std::vector<int32_t> values) {
  return {GgufType::ARRAY, GgufType::I32, {}, std::vector<int64_t>(values.begin(), values.end()), {}};
}

void gguf_write(const std::string& path, const std::vector<std::pair<std::string, GgufWriteValue>>& metadata, const std::vector<GgufWriteTensor>& tensors,
                uint64_t alignment) {
  if (alignment == 0 || alignment % 8 != 0) fail("gguf_write: {}: alignment {} is not a positive multiple of 8", path, alignment);
  Bytes head;
  head.put<uint32_t>(0x46554747);  // "GGUF"
  head.put<uint32_t>(3);
  head.put<uint64_t>(tensors.size());
  head.put<uint64_t>(metadata.size());
  for (const auto& [key, value] : metadata) {
    head.put_string(key);
    put_value(head, value);
  }
  uint64_t offset = 0;
  for (const GgufWriteTensor& t : tensors) {
    const uint64_t nbytes = expected_bytes(t, path);
    if (nbytes != t.bytes.size()) fail("gguf_write: {}: tensor '{}' has {} bytes, its shape and type need {}", path, t.name, t.bytes.size(), nbytes);
    head.put_string(t.name);
    head.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) head.put<uint64_t>(static_cast<uint64_t>(*it));
    head.put<uint32_t>(static_cast<uint32_t>(t.type));
    head.put<uint64_t>(offset);
    offset += (nbytes + alignment - 1) / alignment * alignment;
  }
  head.pad(alignment);
  AtomicFile file(path);
  file.write(head.str().data(), head.str().size());
  static const std::vector<uint8_t> zeros(4096, 0);
  for (const GgufWriteTensor& t : tensors) {
    file.write(t.bytes.data(), t.bytes.size());
    for (size_t pad = (alignment - t.bytes.size() % alignment) % alignment; pad > 0;) {
      const size_t n = std::min(pad, zeros.size());
      file.write(zeros.data(), n);
      pad -= n;
    }
  }
  file.commit();
}

}  // namespace m3d::io
