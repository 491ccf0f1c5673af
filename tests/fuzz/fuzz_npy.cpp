// libFuzzer target: the .npy header parser.
#include <cstdint>

#include "io/npy.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = m3d::io::MappedFile::from_bytes("fuzz.npy", data, size);
  try {
    const auto npy = m3d::io::npy_parse(file);
    const size_t n = npy.array.nbytes();
    uint8_t sink = 0;
    if (n > 0) sink = npy.array.data[0] ^ npy.array.data[n - 1];  // both ends must be in bounds
    return sink & 0;
  } catch (const m3d::Error&) {}
  return 0;
}
