// libFuzzer target: the CSV reader (predictions files of m3d score).
#include <cstdint>
#include <string_view>

#include "io/csv.h"
#include "m3d/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto table = m3d::io::csv_parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.csv");
    for (const auto& row : table.rows) m3d::io::csv_line(row);
  } catch (const m3d::Error&) {}
  return 0;
}
