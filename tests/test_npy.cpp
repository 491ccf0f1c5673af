// .npy reader and writer against files written by numpy (tools/reference/make_io_fixtures.py).
#include <gtest/gtest.h>

#include <cstring>

#include "io/npy.h"
#include "m3d/error.h"
#include "test_support.h"
#include "test_values.h"

namespace m3d::io {
namespace {

TEST(Npy, ReadsArraysWrittenByNumpy) {
  const auto expected = test::read_json(test::fixture("io/expected.json"))["npy"];
  ASSERT_GE(expected.size(), 6u);
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    const NpyFile npy = npy_read(test::fixture("io/" + name + ".npy"));
    EXPECT_EQ(dtype_name(npy.array.dtype), want["dtype"].get<std::string>());
    EXPECT_EQ(npy.array.shape, want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(test::record_values(npy.array), want["values"].get<std::vector<double>>());
  }
}

TEST(Npy, WriteThenReadRoundTrips) {
  const std::string dir = test::temp_dir();
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  for (const auto& shape : std::vector<std::vector<int64_t>>{{6}, {1, 2, 3}, {}}) {
    const std::string path = dir + "/a.npy";
    const size_t n = shape.empty() ? 1 : 6;
    npy_write(path, DType::F32, shape, values.data());
    const NpyFile npy = npy_read(path);
    EXPECT_EQ(npy.array.shape, shape);
    EXPECT_EQ(std::memcmp(npy.array.data, values.data(), n * 4), 0);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(npy.array.data) % 64, 0u) << "numpy pads the header to 64 bytes";
  }
}

void expect_error(const std::string& path, const std::string& fragment) {
  test::expect_one_line_error([&] { npy_read(path); }, path, fragment);
}

TEST(Npy, RefusesWhatItCannotReadCorrectly) {
  expect_error(test::fixture("io/npy_bad_fortran.npy"), "Fortran-order");
  expect_error(test::fixture("io/npy_bad_bigendian.npy"), "unsupported npy dtype '>f4'");
}

TEST(Npy, CorruptFilesAreClearErrors) {
  const std::string dir = test::temp_dir();
  const auto good = test::read_bytes(test::fixture("io/npy_image_f32.npy"));
  auto write = [&](const std::string& name, std::vector<uint8_t> bytes) {
    test::write_bytes(dir + "/" + name, bytes);
    return dir + "/" + name;
  };
  expect_error(write("magic.npy", {'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0}), "not a .npy file");
  auto truncated = good;
  truncated.resize(good.size() - 10);
  expect_error(write("truncated.npy", truncated), "truncated file?");
  auto header_cut = good;
  header_cut.resize(40);
  expect_error(write("header_cut.npy", header_cut), "header length");
  auto version = good;
  version[6] = 9;
  expect_error(write("version.npy", version), "unsupported .npy format version 9");
  auto make = [&](const std::string& header) {
    std::vector<uint8_t> bytes = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    bytes.push_back(static_cast<uint8_t>(header.size()));
    bytes.push_back(static_cast<uint8_t>(header.size() >> 8));
    bytes.insert(bytes.end(), header.begin(), header.end());
    return bytes;
  };
  expect_error(write("no_shape.npy", make("{'descr': '<f4', 'fortran_order': False, }")), "no 'shape'");
  expect_error(write("neg.npy", make("{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }")), "non-negative");
  expect_error(write("huge.npy", make("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999, 99999999999999), }")), "needs more than");
  expect_error(write("overflow.npy", make("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }")), "too large");
  expect_error(write("obj.npy", make("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }")), "unsupported npy dtype '|O'");
}

}  // namespace
}  // namespace m3d::io
