// libFuzzer target: the safetensors header and offset validation. Any input must
// give either records inside the buffer or an m3d::Error; sanitizers catch the rest.
#include <cstdint>

#include "io/safetensors.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = m3d::io::MappedFile::from_bytes("fuzz.safetensors", data, size);
  try {
    const auto st = m3d::io::safetensors_parse(file);
    uint8_t sink = 0;
    for (const auto& record : st.tensors) {
      // Touch the first and last byte of every tensor: both must be in bounds.
      if (record.nbytes() > 0) sink ^= record.data[0] ^ record.data[record.nbytes() - 1];
    }
    return sink & 0;
  } catch (const m3d::Error&) {}
  return 0;
}
