// Opening checkpoint directories: sharded safetensors with an index (files
// written by Python), single files, and broken indexes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "io/inspect.h"
#include "io/safetensors.h"
#include "m3d/error.h"
#include "test_support.h"
#include "test_values.h"

namespace m3d::io {
namespace {
namespace fs = std::filesystem;

TEST(Checkpoint, OpensShardedSafetensorsWrittenByPython) {
  const Checkpoint ckpt = checkpoint_open(test::fixture("io/st_sharded"));
  const auto expected = test::read_json(test::fixture("io/expected.json"))["st_sharded"];
  EXPECT_EQ(ckpt.files.size(), 2u);
  ASSERT_EQ(ckpt.tensors.size(), expected.size());
  for (const auto& [name, want] : expected.items()) {
    const TensorRecord& r = ckpt.tensor(name);
    EXPECT_EQ(r.shape, want["shape"].get<std::vector<int64_t>>()) << name;
    EXPECT_EQ(test::record_values(r), want["values"].get<std::vector<double>>()) << name;
  }
  EXPECT_THROW(ckpt.tensor("nope"), Error);
}

TEST(Checkpoint, OpensSingleFilesOfBothFormats) {
  EXPECT_EQ(checkpoint_open(test::fixture("io/st_dtypes.safetensors")).format, WeightFormat::Safetensors);
  const Checkpoint bin = checkpoint_open(test::fixture("io/torch_state.bin"));
  EXPECT_EQ(bin.format, WeightFormat::TorchBin);
  EXPECT_EQ(bin.tensors.size(), 8u);
}

std::string copy_sharded() {
  const std::string dir = test::temp_dir() + "/ckpt";
  fs::copy(test::fixture("io/st_sharded"), dir);
  return dir;
}

void expect_open_error(const std::string& path, const std::string& fragment) {
  test::expect_one_line_error([&] { checkpoint_open(path); }, "", fragment);
}

TEST(Checkpoint, BrokenIndexesAreErrors) {
  {
    const std::string dir = copy_sharded();
    fs::remove(dir + "/model-00002-of-00002.safetensors");
    expect_open_error(dir, "model-00002-of-00002.safetensors: cannot open");
  }
  {
    const std::string dir = copy_sharded();
    auto index = test::read_json(dir + "/model.safetensors.index.json");
    index["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors";
    std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
    expect_open_error(dir, "tensor 'ghost.weight' is listed for model-00001-of-00002.safetensors but that file lacks it");
  }
  {
    const std::string dir = copy_sharded();
    auto index = test::read_json(dir + "/model.safetensors.index.json");
    index["weight_map"]["lm_head.weight"] = "../../etc/passwd";
    std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
    expect_open_error(dir, "is not a file in this directory");
  }
  {
    const std::string dir = copy_sharded();
    std::ofstream(dir + "/model.safetensors.index.json") << "{\"weight_map\": 3}";
    expect_open_error(dir, "no 'weight_map' object");
  }
}

TEST(Checkpoint, DuplicateTensorAcrossShardsIsAnError) {
  const std::string dir = test::temp_dir();
  const float x[1] = {1};
  safetensors_write(dir + "/a.safetensors", {{"w", DType::F32, {1}, x, 4}});
  safetensors_write(dir + "/b.safetensors", {{"w", DType::F32, {1}, x, 4}});
  std::ofstream(dir + "/model.safetensors.index.json") << R"({"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}})";
  expect_open_error(dir, "tensor 'w' appears in more than one weight file");
}

TEST(Checkpoint, DirectoryWithoutWeightsIsAnError) {
  expect_open_error(test::temp_dir(), "no weights found");
  expect_open_error(test::temp_dir() + "/absent", "no such file or directory");
}

TEST(Inspect, ModuleOfGroupsUnderTheBaseModel) {
  EXPECT_EQ(module_of("model.vision_tower.vision_tower.blocks.0.attn.qkv.weight"), "model.vision_tower");
  EXPECT_EQ(module_of("model.mm_projector.projector.0.weight"), "model.mm_projector");
  EXPECT_EQ(module_of("lm_head.weight"), "lm_head");
  EXPECT_EQ(module_of("model.norm.weight"), "model.norm");
  EXPECT_EQ(module_of("logit_scale"), "logit_scale");
  EXPECT_EQ(module_of("model.x"), "model");
}

}  // namespace
}  // namespace m3d::io
