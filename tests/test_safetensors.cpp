// safetensors reader and writer: files written by Python's `safetensors`
// (tools/reference/make_io_fixtures.py), round trips, and every corrupt-header case.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/safetensors.h"
#include "m3d/error.h"
#include "test_support.h"
#include "test_values.h"

namespace m3d::io {
namespace {

using test::fixture;

TEST(Safetensors, ReadsEveryDtypeWrittenByPython) {
  const auto expected = test::read_json(fixture("io/expected.json"))["st_dtypes"];
  const SafetensorsFile st = safetensors_read(fixture("io/st_dtypes.safetensors"));
  EXPECT_EQ(st.metadata, (expected["__metadata__"].get<std::map<std::string, std::string>>()));
  size_t checked = 0;
  for (const auto& [name, want] : expected.items()) {
    if (name == "__metadata__") continue;
    auto it = std::find_if(st.tensors.begin(), st.tensors.end(), [&](const TensorRecord& r) { return r.name == name; });
    ASSERT_NE(it, st.tensors.end()) << name;
    EXPECT_EQ(dtype_name(it->dtype), want["dtype"].get<std::string>()) << name;
    EXPECT_EQ(it->shape, want["shape"].get<std::vector<int64_t>>()) << name;
    EXPECT_EQ(test::record_values(*it), want["values"].get<std::vector<double>>()) << name;
    ++checked;
  }
  EXPECT_EQ(checked, st.tensors.size());
  EXPECT_GE(checked, 10u);
}

TEST(Safetensors, WriteThenReadRoundTrips) {
  const std::string path = test::temp_dir() + "/round.safetensors";
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.125f};
  const std::vector<int64_t> b = {-5, 9};
  const uint8_t c[3] = {1, 0, 1};
  safetensors_write(path,
                    {{"a", DType::F32, {2, 3}, a.data(), a.size() * 4},
                     {"b", DType::I64, {2}, b.data(), 16},
                     {"c", DType::BOOL, {3}, c, 3},
                     {"empty", DType::F16, {0, 4}, nullptr, 0}},
                    {{"format", "pt"}});
  const auto bytes = test::read_bytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u) << "data must start 8-byte aligned";
  const SafetensorsFile st = safetensors_read(path);
  ASSERT_EQ(st.tensors.size(), 4u);
  EXPECT_EQ(st.metadata.at("format"), "pt");
  EXPECT_EQ(st.tensors[0].name, "a");
  EXPECT_EQ(std::memcmp(st.tensors[0].data, a.data(), 24), 0);
  EXPECT_EQ(st.tensors[1].shape, std::vector<int64_t>{2});
  EXPECT_EQ(std::memcmp(st.tensors[1].data, b.data(), 16), 0);
  EXPECT_EQ(std::memcmp(st.tensors[2].data, c, 3), 0);
  EXPECT_EQ(st.tensors[3].numel(), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(st.tensors[1].data) % 8, 0u);
}

TEST(Safetensors, WriterRejectsMismatchedBytesAndLeavesNoFile) {
  const std::string dir = test::temp_dir();
  const float x[2] = {1, 2};
  EXPECT_THROW(safetensors_write(dir + "/bad.safetensors", {{"x", DType::F32, {3}, x, 8}}), Error);
  EXPECT_TRUE(std::filesystem::is_empty(dir)) << "neither the final file nor a temporary may remain";
  EXPECT_THROW(safetensors_write(dir + "/no/such/dir/x.safetensors", {{"x", DType::F32, {2}, x, 8}}), Error);
}

TEST(Safetensors, WriterReplacesAtomically) {
  const std::string path = test::temp_dir() + "/w.safetensors";
  const float one[1] = {1}, two[2] = {2, 3};
  safetensors_write(path, {{"x", DType::F32, {1}, one, 4}});
  safetensors_write(path, {{"x", DType::F32, {2}, two, 8}});
  EXPECT_EQ(safetensors_read(path).tensors[0].shape, std::vector<int64_t>{2});
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()), std::filesystem::directory_iterator()), 1);
}

// A file with the given header text and `data_size` zero bytes of data.
std::vector<uint8_t> make_file(const std::string& header, size_t data_size, uint64_t declared_len = UINT64_MAX) {
  std::vector<uint8_t> out(8);
  const uint64_t len = declared_len == UINT64_MAX ? header.size() : declared_len;
  std::memcpy(out.data(), &len, 8);
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_size, 0);
  return out;
}

struct CorruptCase {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* message;  // a fragment the error must contain
};

std::vector<CorruptCase> corrupt_cases() {
  const std::string ok = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::vector<uint8_t> truncated_data = make_file(ok, 8);
  truncated_data.resize(truncated_data.size() - 3);
  return {
      {"too_short", {1, 2, 3, 4, 5}, "shorter than the 8-byte header length"},
      {"empty", {}, "shorter than the 8-byte header length"},
      {"header_beyond_file", make_file(ok, 8, 4096), "exceeds the file size"},
      {"header_absurd", make_file(ok, 8, uint64_t{1} << 62), "exceeds the 100000000-byte limit"},
      {"bad_json", make_file(R"({"x":{"dtype":)", 0), "not valid JSON"},
      {"not_object", make_file("[1,2,3]", 0), "not a JSON object"},
      {"entry_not_object", make_file(R"({"x":5})", 0), "entry is not an object"},
      {"truncated_data", truncated_data, "exceeds the data buffer"},
      {"unknown_dtype", make_file(R"({"x":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2), "unsupported dtype 'F8_E4M3'"},
      {"missing_dtype", make_file(R"({"x":{"shape":[2],"data_offsets":[0,8]}})", 8), "'dtype' missing"},
      {"range_not_shape", make_file(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "needs 12"},
      {"reversed", make_file(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8), "reversed"},
      {"overlap", make_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "overlap"},
      {"negative_dim", make_file(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "not a non-negative integer"},
      {"float_dim", make_file(R"({"x":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8), "not a non-negative integer"},
      {"huge_shape", make_file(R"({"x":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}})", 8), "too large"},
      {"huge_offset", make_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551615]}})", 8),
       "exceeds the data buffer"},
      {"bad_offsets", make_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8), "'data_offsets' must be two"},
      {"bad_metadata", make_file(R"({"__metadata__":{"a":1}})", 0), "'__metadata__' value of 'a' is not a string"},
  };
}

TEST(Safetensors, CorruptFilesGiveOneLineErrorsNamingFileAndProblem) {
  const std::string dir = test::temp_dir();
  for (const auto& c : corrupt_cases()) {
    const std::string path = dir + "/" + c.name + ".safetensors";
    test::write_bytes(path, c.bytes);
    SCOPED_TRACE(c.name);
    test::expect_one_line_error([&] { safetensors_read(path); }, path, c.message);
  }
}

TEST(Safetensors, MissingFileIsAnError) {
  EXPECT_THROW(safetensors_read(test::temp_dir() + "/absent.safetensors"), Error);
  EXPECT_THROW(safetensors_read(test::temp_dir()), Error);  // a directory
}

}  // namespace
}  // namespace m3d::io
