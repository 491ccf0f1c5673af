// `m3d inspect` end to end on the official fixtures: parameter counts per
// top-level module must equal sums of tensor sizes read from the safetensors
// header independently (plain JSON parsing here, not m3d's reader).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "io/zip.h"
#include "test_support.h"

namespace m3d::test {
namespace {

const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";

// module name -> summed element count, from the raw header ("" sums every tensor).
std::map<std::string, int64_t> reference_counts(const std::string& file, const std::vector<std::string>& modules) {
  const auto bytes = read_bytes(file);
  uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(len));
  std::map<std::string, int64_t> counts;
  for (const auto& [key, entry] : header.items()) {
    if (key == "__metadata__") continue;
    int64_t numel = 1;
    for (const auto& d : entry["shape"]) numel *= d.get<int64_t>();
    for (const auto& m : modules) {
      if (m.empty() || key.rfind(m + ".", 0) == 0) counts[m] += numel;
    }
  }
  return counts;
}

TEST(CliInspect, Vit3dFixtureCountsMatchTheSafetensorsHeader) {
  const std::string dir = shared_fixture("vit3d_spp_tiny");
  const auto want = reference_counts(dir + "/model.safetensors", {"model.vision_tower", "model.mm_projector"});
  ASSERT_EQ(want.size(), 2u);

  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " inspect --json " + dir, &out, &err), 0) << err;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["architecture"], "LamedPhi3ForCausalLM");
  std::map<std::string, int64_t> got;
  int64_t total = 0;
  for (const auto& m : j["modules"]) {
    got[m["name"]] = m["parameters"];
    total += m["parameters"].get<int64_t>();
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(j["parameters"], total);

  ASSERT_EQ(run_command(kM3d + " inspect " + dir, &out, &err), 0) << err;
  for (const auto& [name, count] : want) {
    EXPECT_NE(out.find(name), std::string::npos) << out;
    EXPECT_NE(out.find(std::to_string(count)), std::string::npos) << out;
  }
}

TEST(CliInspect, AllOfficialFixturesOpen) {
  for (const char* name : {"dcformer_mixer_tiny", "segvol_small"}) {
    const std::string dir = shared_fixture(name);
    std::string out, err;
    ASSERT_EQ(run_command(kM3d + " inspect --json " + dir, &out, &err), 0) << err;
    const auto j = nlohmann::json::parse(out);
    int64_t total = 0;
    for (const auto& [module, count] : reference_counts(dir + "/model.safetensors", {""})) total += count;
    EXPECT_GT(j["parameters"].get<int64_t>(), 0);
    EXPECT_EQ(j["parameters"].get<int64_t>(), total) << name;
  }
}

// A GGUF file written by gguf-py (tools/reference/make_gguf_fixtures.py): counts
// and types as that script recorded them in expected.json.
TEST(CliInspect, GgufFileShowsArchitectureConfigAndBlockTypes) {
  const std::string path = fixture("gguf/tiny_llama.gguf");
  const auto expected = read_json(fixture("gguf/expected.json"))["tiny_llama"];
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " inspect --json " + path, &out, &err), 0) << err;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["architecture"], "llama");
  EXPECT_EQ(j["format"], "gguf v3");
  EXPECT_EQ(j["config"]["hidden_size"], expected["config"]["hidden_size"]);
  int64_t parameters = 0;
  std::map<std::string, int64_t> types;
  for (const auto& [name, t] : expected["tensors"].items()) {
    int64_t n = 1;
    for (const auto& d : t["shape"]) n *= d.get<int64_t>();
    parameters += n;
    types[t["type"].get<std::string>()] += 1;
  }
  EXPECT_EQ(j["parameters"], parameters);
  EXPECT_EQ(j["dtypes"].get<decltype(types)>(), types);
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.pre"], "smollm");
  ASSERT_EQ(run_command(kM3d + " inspect " + path, &out, &err), 0) << err;
  EXPECT_NE(out.find("Q4_0"), std::string::npos) << out;

  auto bytes = read_bytes(path);
  bytes.resize(bytes.size() - 100);
  const std::string cut = temp_dir() + "/cut.gguf";
  write_bytes(cut, bytes);
  EXPECT_EQ(run_command(kM3d + " inspect " + cut, &out, &err), 1);
  EXPECT_EQ(err.rfind("m3d: error: gguf: " + cut + ": tensor '", 0), 0u) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

TEST(CliInspect, CorruptFileGivesOneLineErrorAndNonZeroExit) {
  const std::string dir = temp_dir();
  auto bytes = read_bytes(shared_fixture("vit3d_spp_tiny/model.safetensors"));
  bytes.resize(bytes.size() / 2);
  const std::string path = dir + "/model.safetensors";
  write_bytes(path, bytes);
  std::string out, err;
  EXPECT_EQ(run_command(kM3d + " inspect " + path, &out, &err), 1);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(err.rfind("m3d: error: " + path + ": tensor '", 0), 0u) << err;
  EXPECT_NE(err.find("exceeds the data buffer"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

// Every inspect reads the tensor storages too: a flipped bit there (which opening does
// not read) fails its zip entry's CRC-32; --verify reports what was checked.
TEST(CliInspect, VerifyFindsAFlippedBitInATensor) {
  const std::string good = fixture("io/torch_state.bin");
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " inspect --verify " + good, &out, &err), 0) << err;
  EXPECT_NE(err.find("every CRC-32 matches"), std::string::npos) << err;
  auto bytes = read_bytes(good);
  const auto entries = io::zip_list(*io::MappedFile::open(good));
  const auto storage = std::find_if(entries.begin(), entries.end(), [](const auto& e) { return e.name.find("/data/") != std::string::npos && e.size >= 8; });
  ASSERT_NE(storage, entries.end());
  bytes[storage->data_offset + 3] ^= 0x01;
  const std::string path = temp_dir() + "/flipped.bin";
  write_bytes(path, bytes);
  for (const std::string flag : {"", "--verify "}) {
    EXPECT_EQ(run_command(kM3d + " inspect " + flag + path, &out, &err), 1) << flag;
    EXPECT_NE(err.find("CRC-32"), std::string::npos) << flag << err;
  }
}

TEST(CliInspect, MissingPathAndNoArgumentsFail) {
  std::string out, err;
  EXPECT_EQ(run_command(kM3d + " inspect /nonexistent/ckpt", &out, &err), 1);
  EXPECT_NE(err.find("/nonexistent/ckpt: no such file or directory"), std::string::npos) << err;
  EXPECT_NE(run_command(kM3d + " inspect", &out, &err), 0);
}

}  // namespace
}  // namespace m3d::test

namespace m3d::test {
namespace {

// `m3d encode` reproduces the official projector output (vit3d_spp_tiny README).
TEST(CliEncode, MatchesOfficialProjectorOutput) {
  const std::string dir = shared_fixture("vit3d_spp_tiny");
  const std::string out_path = temp_dir() + "/feats.safetensors";
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " encode --model " + dir + " --image " + dir + "/expected.safetensors --image-key images -o " + out_path, &out, &err), 0) << err;
  // Compare raw f32 values with the fixture's, read with plain JSON + memcpy.
  auto tensor_values = [](const std::string& file, const std::string& name) {
    const auto bytes = read_bytes(file);
    uint64_t len = 0;
    std::memcpy(&len, bytes.data(), 8);
    const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(len));
    const auto& entry = header.at(name);
    EXPECT_EQ(entry["dtype"], "F32");
    const size_t begin = entry["data_offsets"][0], end = entry["data_offsets"][1];
    std::vector<float> values((end - begin) / 4);
    std::memcpy(values.data(), bytes.data() + 8 + len + begin, end - begin);
    return values;
  };
  const auto got = tensor_values(out_path, "image_embeddings");
  const auto want = tensor_values(dir + "/expected.safetensors", "projector_output");
  ASSERT_EQ(got.size(), want.size());
  double max_diff = 0;
  for (size_t i = 0; i < got.size(); ++i) max_diff = std::max(max_diff, static_cast<double>(std::abs(got[i] - want[i])));
  EXPECT_LE(max_diff, 1e-4);
}

TEST(CliEncode, BadInputsFailClearly) {
  const std::string dir = shared_fixture("vit3d_spp_tiny");
  std::string out, err;
  EXPECT_EQ(run_command(kM3d + " encode --model " + dir + " --image " + dir + "/expected.safetensors -o /tmp/x.safetensors", &out, &err), 1);
  EXPECT_NE(err.find("say which one is the image"), std::string::npos) << err;
  EXPECT_EQ(run_command(kM3d + " encode --model " + dir + " --image " + fixture("io/npy_image_f32.npy") + " -o /tmp/x.safetensors", &out, &err), 1);
  EXPECT_NE(err.find("expected an image of shape [B, 1, 32, 256, 256]"), std::string::npos) << err;
}

}  // namespace
}  // namespace m3d::test

namespace m3d::test {
namespace {

// `m3d generate` end to end: tokenizer.json + image + greedy decoding give the text
// transformers gives for the same prompt (tools/reference/make_lamed_fixtures.py).
TEST(CliGenerate, AnswerMatchesTransformers) {
  for (const char* name : {"lamed_phi3_tiny", "lamed_llama_tiny"}) {
    SCOPED_TRACE(name);
    const auto want = read_json(fixture(std::string(name) + "/generate_expected.json"));
    const std::string image = shared_fixture("vit3d_spp_tiny/expected.safetensors");
    std::string out, err;
    const std::string command = kM3d + " generate --model " + fixture(name) + " --image " + image + " --image-key images --max-new-tokens " +
                                std::to_string(want["max_new_tokens"].get<int>()) + " --prompt '" + want["prompt"].get<std::string>() + "'";
    ASSERT_EQ(run_command(command, &out, &err), 0) << err;
    EXPECT_EQ(out, want["text"].get<std::string>() + "\n");
    ASSERT_EQ(run_command(command + " --stream", &out, &err), 0) << err;
    EXPECT_EQ(out, want["text"].get<std::string>() + "\n");
  }
}

TEST(CliGenerate, MissingTokenizerIsAClearError) {
  std::string out, err;
  EXPECT_EQ(run_command(kM3d + " generate --model " + fixture("qwen2_tiny") + " --prompt hi", &out, &err), 1);
  EXPECT_NE(err.find("no tokenizer.json"), std::string::npos) << err;
}

// The tiny LaMed checkpoint with the slow-tokenizer files instead of tokenizer.json
// (tools/reference/make_tokenizer_fixtures.py: transformers' slow LlamaTokenizer
// gives the same prompt ids there, and its own decoding of the generated ids).
TEST(CliGenerate, SlowTokenizerCheckpointMatchesTransformers) {
  namespace fs = std::filesystem;
  const std::string dir = temp_dir();
  for (const char* file : {"config.json", "model.safetensors"}) fs::copy_file(fixture(std::string("lamed_llama_tiny/") + file), dir + "/" + file);
  for (const char* file : {"tokenizer.model", "tokenizer_config.json"}) {
    fs::copy_file(fixture(std::string("tokenizers/tiny_lamed_slow/") + file), dir + "/" + file);
  }
  const auto want = read_json(fixture("tokenizers/tiny_lamed_slow/expected.json"));
  const std::string command = kM3d + " generate --model " + dir + " --image " + shared_fixture("vit3d_spp_tiny/expected.safetensors") +
                              " --image-key images --max-new-tokens " + std::to_string(want["max_new_tokens"].get<int>()) + " --prompt '" +
                              want["prompt"].get<std::string>() + "'";
  std::string out, err;
  ASSERT_EQ(run_command(command, &out, &err), 0) << err;
  EXPECT_EQ(out, want["text"].get<std::string>() + "\n");
  ASSERT_EQ(run_command(command + " --stream", &out, &err), 0) << err;  // byte pieces complete a character late
  EXPECT_EQ(out, want["text"].get<std::string>() + "\n");
  ASSERT_EQ(run_command(command + " --tokenizer fast", &out, &err), 1);
  EXPECT_NE(err.find("no tokenizer.json for the fast tokenizer"), std::string::npos) << err;
}

}  // namespace
}  // namespace m3d::test

namespace m3d::test {
namespace {

// `m3d chat`: each question, answered after the cached image prefix, gets exactly
// what `m3d generate` (parity-tested above) gives for it alone, in any order.
TEST(CliChat, AnswersEqualSeparateGenerateRuns) {
  const std::string model = fixture("lamed_llama_tiny");
  const std::string image = shared_fixture("vit3d_spp_tiny/expected.safetensors");
  const std::string common = " --model " + model + " --image " + image + " --image-key images --max-new-tokens 6";
  const std::vector<std::string> questions = {"Where is the lesion?", "Describe the heart.", "Where is the lesion?"};
  std::string expected_out;
  for (const auto& q : questions) {
    std::string out, err;
    ASSERT_EQ(run_command(kM3d + " generate" + common + " --prompt '" + q + "'", &out, &err), 0) << err;
    expected_out += out;
  }
  const std::string input = temp_dir() + "/questions.txt";
  {
    std::ofstream in(input);
    for (const auto& q : questions) in << q << "\n";
  }
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " chat" + common + " < " + input, &out, &err), 0) << err;
  EXPECT_EQ(out, expected_out);
}

}  // namespace
}  // namespace m3d::test
