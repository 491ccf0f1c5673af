// libFuzzer target: the GGUF header, metadata and tensor-info validation, and the
// reference block decoders. Any input must give either tensors inside the buffer
// (every one dequantizes without reading past its bytes) or an m3d::Error; the
// sanitizers catch the rest.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "io/gguf.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = m3d::io::MappedFile::from_bytes("fuzz.gguf", data, size);
  try {
    const auto gguf = m3d::io::gguf_parse(file);
    for (const auto& [key, value] : gguf.metadata) (void)value.summary();
    for (const auto& tensor : gguf.tensors) {
      const auto& info = m3d::io::ggml_type_info(tensor.type);
      // Decode at most the first 64 blocks: enough to reach every byte of a block.
      const int64_t n = std::min<int64_t>(tensor.numel(), 64 * info.block_size);
      if (!info.dequantize || n == 0) continue;
      std::vector<float> out(static_cast<size_t>(n));
      m3d::io::ggml_dequantize(tensor.type, tensor.data, out.data(), n);
    }
    (void)m3d::io::gguf_tokenizer(gguf);
  } catch (const m3d::Error&) {}
  return 0;
}
