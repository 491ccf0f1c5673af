// torch.save zip checkpoints: files written by PyTorch (tools/reference/
// make_io_fixtures.py), bf16 views into one shared storage as in M3D-CLIP's
// pretrained_ViT.bin, the legacy format, and corrupt archives and pickles.
#include <gtest/gtest.h>

#include "io/pickle.h"
#include "io/torch_bin.h"
#include "io/zip.h"
#include "m3d/error.h"
#include "test_support.h"
#include "test_values.h"

namespace m3d::io {
namespace {

using test::fixture;

void expect_matches_reference(const TorchBinFile& bin, const nlohmann::json& expected) {
  ASSERT_EQ(bin.tensors.size(), expected.size());
  for (const auto& record : bin.tensors) {
    SCOPED_TRACE(record.name);
    ASSERT_TRUE(expected.contains(record.name));
    const auto& want = expected[record.name];
    EXPECT_EQ(dtype_name(record.dtype), want["dtype"].get<std::string>());
    EXPECT_EQ(record.shape, want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(test::record_values(record), want["values"].get<std::vector<double>>());
  }
}

TEST(TorchBin, ReadsModuleStateDictWrittenByTorchSave) {
  const auto bin = torch_bin_read(fixture("io/torch_state.bin"));
  expect_matches_reference(bin, test::read_json(fixture("io/expected.json"))["torch_state"]);
  EXPECT_TRUE(bin.skipped.empty());
}

TEST(TorchBin, ReadsBf16ViewsIntoOneSharedStorage) {
  const auto bin = torch_bin_read(fixture("io/torch_bf16_views.bin"));
  expect_matches_reference(bin, test::read_json(fixture("io/expected.json"))["torch_bf16_views"]);
  // All views point into the same 64-element storage: 128 bytes from the lowest.
  const uint8_t* lowest = bin.tensors[0].data;
  for (const auto& r : bin.tensors) lowest = std::min(lowest, r.data);
  for (const auto& r : bin.tensors) EXPECT_LT(r.data - lowest, 128) << r.name;
  auto transposed = std::find_if(bin.tensors.begin(), bin.tensors.end(), [](auto& r) { return r.name == "b.weight"; });
  EXPECT_FALSE(transposed->is_contiguous());
}

TEST(TorchBin, LegacyFormatIsRejectedWithAdvice) {
  try {
    torch_bin_read(fixture("io/torch_legacy.bin"));
    FAIL() << "no error";
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find("legacy (pre-1.6, non-zip) torch.save format"), std::string::npos) << e.what(); }
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& fragment) {
  const std::string path = test::temp_dir() + "/bad.bin";
  test::write_bytes(path, bytes);
  test::expect_one_line_error([&] { torch_bin_read(path); }, path, fragment);
}

TEST(TorchBin, TruncatedArchiveIsAnError) {
  auto bytes = test::read_bytes(fixture("io/torch_state.bin"));
  bytes.resize(bytes.size() / 2);
  expect_error(bytes, "not a zip archive (no end-of-directory record)");
}

TEST(TorchBin, NotAZipIsAnError) { expect_error({'h', 'e', 'l', 'l', 'o'}, "not a PyTorch zip checkpoint"); }

TEST(TorchBin, CorruptCentralDirectoryIsAnError) {
  auto bytes = test::read_bytes(fixture("io/torch_state.bin"));
  // Point the end record's directory offset past the end of the file.
  for (size_t pos = bytes.size() - 22 + 1; pos-- > 0;) {
    if (bytes[pos] == 0x50 && bytes[pos + 1] == 0x4b && bytes[pos + 2] == 0x05 && bytes[pos + 3] == 0x06) {
      bytes[pos + 16] = bytes[pos + 17] = bytes[pos + 18] = 0xff;
      bytes[pos + 19] = 0x7f;
      break;
    }
  }
  expect_error(bytes, "central directory");
}

TEST(TorchBin, StorageSizeMismatchIsAnError) {
  auto bytes = test::read_bytes(fixture("io/torch_state.bin"));
  // Corrupt the pickle so a storage declares a different element count: the
  // BININT1 after the 'cpu' location string is the numel (4 for lin.bias etc).
  const std::string needle = "cpu";
  bool changed = false;
  for (size_t i = 0; i + 5 < bytes.size() && !changed; ++i) {
    if (std::equal(needle.begin(), needle.end(), bytes.begin() + i) && bytes[i + 3] == 'q') {
      // "cpu" q <memo> K <numel>
      if (bytes[i + 5] == 'K') {
        bytes[i + 6] = 200;
        changed = true;
      }
    }
  }
  ASSERT_TRUE(changed);
  expect_error(bytes, "data.pkl': CRC-32");  // the recorded checksum catches the change first
  // Past the checksum (as the fuzz target runs), the parser's own check still holds.
  const std::string path = test::temp_dir() + "/numel.bin";
  test::write_bytes(path, bytes);
  test::expect_one_line_error([&] { torch_bin_parse(MappedFile::open(path), /*verify_pickle=*/false); }, path, "declares 200 elements");
}

// Tensor storages are not read on open (they are mapped); torch_bin_verify reads them
// and checks each entry's recorded CRC-32.
TEST(TorchBin, FlippedStorageBitIsFoundByVerify) {
  const std::string good = fixture("io/torch_state.bin");
  EXPECT_EQ(torch_bin_verify(*MappedFile::open(good)), zip_list(*MappedFile::open(good)).size());
  auto bytes = test::read_bytes(good);
  const auto entries = zip_list(*MappedFile::from_bytes("x", bytes.data(), bytes.size()));
  const ZipEntry* storage = nullptr;
  for (const auto& e : entries) {
    if (e.name.find("/data/") != std::string::npos && e.size > 0) storage = &e;
  }
  ASSERT_NE(storage, nullptr);
  bytes[storage->data_offset + storage->size / 2] ^= 0x04;
  const std::string path = test::temp_dir() + "/flipped.bin";
  test::write_bytes(path, bytes);
  EXPECT_NO_THROW(torch_bin_read(path));
  test::expect_one_line_error([&] { torch_bin_verify(*MappedFile::open(path)); }, path, "': CRC-32");
}

// Bytes from numbers, so embedded NULs and hex escapes cannot go wrong.
std::string B(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out.push_back(static_cast<char>(v));
  return out;
}

std::string pickle_error(const std::string& bytes) {
  try {
    pickle_load(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.pkl");
  } catch (const Error& e) { return e.what(); }
  return "no error";
}

TEST(Pickle, MalformedInputsAreErrors) {
  const std::string proto = B({0x80, 2});
  EXPECT_NE(pickle_error("").find("x.pkl: pickle offset 0: truncated"), std::string::npos);
  EXPECT_NE(pickle_error(proto).find("truncated"), std::string::npos);
  EXPECT_NE(pickle_error(B({0x80, 9}) + ".").find("unsupported pickle protocol 9"), std::string::npos);
  EXPECT_NE(pickle_error(proto + "t.").find("no MARK"), std::string::npos);
  EXPECT_NE(pickle_error(proto + "R.").find("stack underflow"), std::string::npos);
  EXPECT_NE(pickle_error(proto + "(R.").find("stack underflow"), std::string::npos);
  EXPECT_NE(pickle_error(proto + B({'h', 5}) + ".").find("memo key 5"), std::string::npos);
  EXPECT_NE(pickle_error(proto + "I1\n.").find("unsupported opcode 0x49"), std::string::npos);
  EXPECT_NE(pickle_error(proto + B({'X', 0xff, 0xff, 0, 0}) + "ab.").find("truncated string"), std::string::npos);
  EXPECT_NE(pickle_error(proto + "}}.").find("2 values on the stack"), std::string::npos);
  EXPECT_NE(pickle_error(proto + "cos\nsys").find("unterminated GLOBAL"), std::string::npos);
  EXPECT_NE(pickle_error(proto + B({0x8a, 9}) + "123456789.").find("does not fit 64 bits"), std::string::npos);
  EXPECT_NE(pickle_error(proto + "N}R.").find("call of a non-global"), std::string::npos);
}

TEST(Pickle, GlobalsAreRecordedNeverCalled) {
  const std::string bytes = B({0x80, 2}) + "cos\nsystem\n" + B({'X', 2, 0, 0, 0}) + "ls" + B({0x85}) + "R.";
  auto pickle = pickle_load(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.pkl");
  ASSERT_TRUE(pickle->root->is_global_call("os.system"));
  EXPECT_EQ(pickle->root->args->items[0]->text, "ls");
}

TEST(Pickle, DecodesScalarsAndContainers) {
  // {"a": (1, -2, 300, 2**40, -2**40, 1.5, True, None), "b": [b"xy"]}, as pickle.dumps(protocol=2) writes it
  const std::string bytes = B({0x80, 2,    '}', 'q', 0,    '(', 'X', 1,   0, 0,    0, 'a', '(', 'K', 1,   'J', 0xfe, 0xff, 0xff, 0xff, 'M', 0x2c,
                               0x01, 0x8a, 6,   0,   0,    0,   0,   0,   1, 0x8a, 6, 0,   0,   0,   0,   0,   0xff, 'G',  0x3f, 0xf8, 0,   0,
                               0,    0,    0,   0,   0x88, 'N', 't', 'X', 1, 0,    0, 0,   'b', ']', 'C', 2,   'x',  'y',  'a',  'u',  '.'});
  auto pickle = pickle_load(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.pkl");
  const PyValue* root = pickle->root;
  ASSERT_EQ(root->kind, PyValue::Kind::Dict);
  ASSERT_EQ(root->entries.size(), 2u);
  const auto& t = root->entries[0].second->items;
  ASSERT_EQ(t.size(), 8u);
  EXPECT_EQ(t[0]->int_value, 1);
  EXPECT_EQ(t[1]->int_value, -2);
  EXPECT_EQ(t[2]->int_value, 300);
  EXPECT_EQ(t[3]->int_value, int64_t{1} << 40);
  EXPECT_EQ(t[4]->int_value, -(int64_t{1} << 40));
  EXPECT_EQ(t[5]->float_value, 1.5);
  EXPECT_EQ(t[6]->kind, PyValue::Kind::Bool);
  EXPECT_EQ(t[7]->kind, PyValue::Kind::None);
  EXPECT_EQ(root->entries[1].second->items[0]->text, "xy");
}

}  // namespace
}  // namespace m3d::io
