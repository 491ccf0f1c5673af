// libFuzzer target: the HF config readers (config.json, generation_config.json,
// tokenizer_config.json, added_tokens.json, special_tokens_map.json) on arbitrary bytes.
// The readers take a path, so each input is written to a file first.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "io/hf_config.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/m3d_fuzz_hf_config_" + std::to_string(::getpid()) + ".json";
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
  const auto attempt = [](auto&& read) {
    try {
      read();
    } catch (const m3d::Error&) {}
  };
  attempt([] { m3d::io::hf_config_read(path); });
  attempt([] { m3d::io::generation_config_read(path); });
  attempt([] { m3d::io::tokenizer_config_read(path); });
  attempt([] { m3d::io::added_tokens_read(path); });
  attempt([] { m3d::io::special_tokens_map_read(path); });
  return 0;
}
