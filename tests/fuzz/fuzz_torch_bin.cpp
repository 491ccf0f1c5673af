// libFuzzer target: the zip directory reader, the unpickler and the state-dict
// interpretation of torch.save files.
#include <cstdint>

#include "io/torch_bin.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = m3d::io::MappedFile::from_bytes("fuzz.bin", data, size);
  try {
    // data.pkl's CRC is not checked here, so mutated pickles reach the parser.
    const auto bin = m3d::io::torch_bin_parse(file, /*verify_pickle=*/false);
    uint8_t sink = 0;
    for (const auto& record : bin.tensors) {
      // Touch the first and last element the view reaches.
      if (record.numel() == 0) continue;
      int64_t last = 0;
      for (size_t i = 0; i < record.shape.size(); ++i) last += (record.shape[i] - 1) * record.strides[i];
      sink ^= record.data[0] ^ record.data[last * static_cast<int64_t>(m3d::dtype_size(record.dtype))];
    }
    return sink & 0;
  } catch (const m3d::Error&) {}
  return 0;
}
