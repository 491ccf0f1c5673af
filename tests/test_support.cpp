#include "test_support.h"

#include "m3d/error.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sys/wait.h>

namespace m3d::test {
namespace fs = std::filesystem;

std::string fixture(const std::string& relative) { return std::string(M3D_SOURCE_DIR) + "/tests/fixtures/" + relative; }

std::string shared_fixture(const std::string& relative) {
  const std::string path = std::string(M3D_SHARED_DIR) + "/fixtures/" + relative;
  if (!fs::exists(path)) {
    ADD_FAILURE() << "official fixture missing: " << path << " (CI keeps shared/ beside the checkout; "
                  << "configure with -DM3D_SHARED_DIR=... elsewhere)";
  }
  return path;
}

std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir = fs::path(M3D_BINARY_DIR) / "test_tmp" / (std::string(info->test_suite_name()) + "." + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return nlohmann::json::parse(in);
}

void expect_one_line_error(const std::function<void()>& action, const std::string& path, const std::string& fragment) {
  try {
    action();
    ADD_FAILURE() << "no error; expected one containing: " << fragment;
  } catch (const Error& e) {
    const std::string message = e.what();
    if (!path.empty()) { EXPECT_NE(message.find(path), std::string::npos) << message; }
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

int run_command(const std::string& command, std::string* out, std::string* err) {
  const std::string err_path = fs::temp_directory_path() / ("m3d_test_stderr_" + std::to_string(::getpid()));
  FILE* pipe = ::popen((command + " 2>" + err_path).c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string captured;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) captured.append(buffer, n);
  const int status = ::pclose(pipe);
  if (out) *out = captured;
  if (err) {
    std::ifstream in(err_path);
    *err = std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  fs::remove(err_path);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace m3d::test
