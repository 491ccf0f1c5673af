// libFuzzer target: the SentencePiece tokenizer.model reader (protobuf wire format),
// then encoding and decoding with whatever model parsed.
#include <cstdint>
#include <string_view>

#include "m3d/error.h"
#include "text/sentencepiece.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto model = m3d::text::SentencePieceModel::from_bytes(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.model");
    const auto ids = model.encode("a b\xE2\x96\x81 c\xC3\xA9 12  ");
    std::vector<std::string> pieces;
    for (int64_t id : ids) pieces.push_back(model.id_to_piece(id));
    model.decode_pieces(pieces);
  } catch (const m3d::Error&) {}
  return 0;
}
