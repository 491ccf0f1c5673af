// libFuzzer target: BERT's WordPiece tokenizer on untrusted files and text. The input
// is split at its first NUL: before it a vocab.txt (one token per line), after it the
// text to encode; then decoding of the ids (skipping special tokens and not).
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "m3d/error.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = (std::filesystem::temp_directory_path() / ("fuzz_wordpiece_" + std::to_string(::getpid()))).string();
  static const bool made = std::filesystem::create_directories(dir) || true;
  (void)made;
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string vocab = "[UNK]\n[CLS]\n[SEP]\n" + input.substr(0, split);
  const std::string text = split == std::string::npos ? input : input.substr(split + 1);
  std::ofstream(dir + "/vocab.txt", std::ios::binary | std::ios::trunc) << vocab;
  try {
    const auto tokenizer = m3d::text::Tokenizer::load(dir);
    const auto ids = tokenizer.encode(text);
    tokenizer.decode(ids, false);
    tokenizer.decode(ids, true);
  } catch (const m3d::Error&) {}
  return 0;
}
