// Paths and file helpers shared by the tests.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace m3d::test {

// tests/fixtures/<relative>
std::string fixture(const std::string& relative);
// ../shared/fixtures/<relative>; fails the test (never skips) when shared/ is absent.
std::string shared_fixture(const std::string& relative);
// A fresh empty directory under the build tree, unique per test.
std::string temp_dir();

std::vector<uint8_t> read_bytes(const std::string& path);
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
nlohmann::json read_json(const std::string& path);

// `action` must throw m3d::Error with a one-line message that names `path` (when
// not empty) and contains `fragment`.
void expect_one_line_error(const std::function<void()>& action, const std::string& path, const std::string& fragment);

// Runs a shell command; returns exit status, fills stdout and stderr.
int run_command(const std::string& command, std::string* out, std::string* err);

}  // namespace m3d::test
