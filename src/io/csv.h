// CSV as Python's csv module and pandas write it (RFC 4180: comma separated,
// fields quoted when they hold a comma, quote or line break, quotes doubled),
// read from untrusted bytes with line numbers in every error. Torch-free.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace m3d::io {

struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // each as long as the header

  // Index of a column, or -1.
  int column(const std::string& name) const;
};

// `name` names the source in errors. Every row must have as many fields as the header.
CsvTable csv_parse(std::string_view text, const std::string& name);
CsvTable csv_read(const std::string& path);
// One line of csv.writer (QUOTE_MINIMAL, "\r\n" as Python's default line terminator is not used: "\n").
std::string csv_line(const std::vector<std::string>& fields);

}  // namespace m3d::io
