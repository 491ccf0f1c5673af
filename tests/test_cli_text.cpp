// `m3d generate` and `m3d chat` on a text LLM, the real SmolLM2-135M-Instruct Q4_1
// GGUF, against llama.cpp (tools/reference/make_smollm2_llamacpp_fixtures.py ->
// tests/fixtures/gguf_smollm2/reference.json): --chat / --messages give llama.cpp's
// prompt ids for the reference conversations (--show-ids); --dump-logits holds the
// logits each generated id was chosen from, the first step's within the quantization
// noise of llama.cpp's; a multi-turn `m3d chat` that reuses its KV cache answers as a
// fresh `m3d generate --messages` of the same conversation; bad inputs exit 1.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "io/npy.h"
#include "io/tensor.h"
#include "test_support.h"

namespace m3d::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kM3d = std::string(M3D_BINARY_DIR) + "/m3d";
const std::string kSmolLm2 = std::string(M3D_SOURCE_DIR) + "/third_party/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

// The bounds tests/test_gguf_model.cpp measured for this file against llama.cpp, in
// units of the std of llama.cpp's logits at the step's fixed ids.
constexpr double kQuantNoise = 0.5;  // worst |m3d - llama.cpp| logit
constexpr double kTieGap = 0.2;  // top-2 gap above which m3d's greedy token is llama.cpp's

const json& reference() {
  static const json ref = read_json(fixture("gguf_smollm2/reference.json"));
  return ref;
}

// The JSON array that follows "LABEL (...): " on its line of --show-ids output.
json array_after(const std::string& text, const std::string& label, size_t occurrence = 0) {
  size_t at = text.find(label);
  for (size_t i = 0; i < occurrence && at != std::string::npos; ++i) at = text.find(label, at + 1);
  EXPECT_NE(at, std::string::npos) << label << " #" << occurrence << " not in:\n" << text;
  if (at == std::string::npos) return json::array();
  const size_t open = text.find('[', at), close = text.find(']', open);
  return json::parse(text.substr(open, close - open + 1));
}

// The "(N from the cache)" count of the `occurrence`-th prompt line.
int64_t cached_count(const std::string& text, size_t occurrence) {
  size_t at = text.find("prompt ids (");
  for (size_t i = 0; i < occurrence && at != std::string::npos; ++i) at = text.find("prompt ids (", at + 1);
  if (at == std::string::npos) return -1;
  const size_t comma = text.find(", ", at);
  return std::stoll(text.substr(comma + 2));
}

std::string write_messages(const std::string& dir, const std::string& name, const json& messages) {
  const std::string path = dir + "/" + name + ".json";
  std::ofstream(path) << messages.dump();
  return path;
}

class CliText : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(fs::exists(kSmolLm2)) << kSmolLm2 << " is missing: run scripts/fetch_vocab.sh"; }
};

// For every reference conversation (system turns, the template's default system turn,
// an earlier assistant turn): the prompt ids are llama.cpp's, the generated ids are the
// argmax of the dumped logits, and the first step's logits are llama.cpp's within the noise.
TEST_F(CliText, ShowIdsAndDumpLogitsMatchLlamaCpp) {
  const std::string dir = temp_dir();
  const at::Tensor fixed = at::tensor(reference()["meta"]["fixed_ids"].get<std::vector<int64_t>>(), at::kLong);
  int cases = 0;
  for (const json& c : reference()["cases"]) {
    if (c["kind"] != "chat") continue;
    ++cases;
    const std::string name = c["name"], logits_path = dir + "/" + name + ".npy";
    std::string out, err;
    ASSERT_EQ(run_command(kM3d + " generate --model " + kSmolLm2 + " --messages " + write_messages(dir, name, c["messages"]) +
                              " --max-new-tokens 6 --show-ids --dump-logits " + logits_path,
                          &out, &err),
              0)
        << err;
    EXPECT_EQ(array_after(err, "prompt ids").get<std::vector<int64_t>>(), c["prompt_ids"].get<std::vector<int64_t>>()) << name;
    const auto generated = array_after(err, "generated ids").get<std::vector<int64_t>>();
    const at::Tensor logits = io::tensor_from_record(io::npy_read(logits_path).array);  // (steps, V)
    ASSERT_EQ(logits.dim(), 2) << name;
    EXPECT_EQ(logits.size(1), 49152) << name;
    ASSERT_EQ(logits.size(0), static_cast<int64_t>(generated.size())) << name;
    for (int64_t s = 0; s < logits.size(0); ++s) EXPECT_EQ(logits[s].argmax().item<int64_t>(), generated[static_cast<size_t>(s)]) << name << " step " << s;
    const json& step = c["steps"][0];
    const at::Tensor theirs_fixed = at::tensor(step["fixed_logits"].get<std::vector<float>>());
    const at::Tensor theirs_top = at::tensor(step["top_logits"].get<std::vector<float>>());
    const at::Tensor top_ids = at::tensor(step["top_ids"].get<std::vector<int64_t>>(), at::kLong);
    const double spread = theirs_fixed.std().item<double>();
    const double diff = std::max((logits[0].index_select(0, fixed) - theirs_fixed).abs().max().item<double>(),
                                 (logits[0].index_select(0, top_ids) - theirs_top).abs().max().item<double>());
    EXPECT_LT(diff / spread, kQuantNoise) << name;
    if ((step["top_logits"][0].get<double>() - step["top_logits"][1].get<double>()) / spread > kTieGap) {
      EXPECT_EQ(generated.at(0), step["token"].get<int64_t>()) << name;
    }
  }
  EXPECT_GE(cases, 6);
  // --chat [--system] builds the same conversations as --messages.
  for (const json& c : reference()["cases"]) {
    if (c["name"] != "chat_ct" && c["name"] != "chat_plain") continue;
    std::string command = kM3d + " generate --model " + kSmolLm2 + " --chat --max-new-tokens 1 --show-ids";
    for (const json& m : c["messages"]) command += (m["role"] == "system" ? " --system '" : " --prompt '") + m["content"].get<std::string>() + "'";
    std::string out, err;
    ASSERT_EQ(run_command(command, &out, &err), 0) << err;
    EXPECT_EQ(array_after(err, "prompt ids").get<std::vector<int64_t>>(), c["prompt_ids"].get<std::vector<int64_t>>()) << c["name"];
  }
}

// Two user turns on stdin: the second answer, after the first turn's keys and values
// were reused from the cache, equals a fresh `m3d generate --messages` of the same
// conversation (with the first answer as the assistant turn); /reset and /quit.
TEST_F(CliText, ChatSecondAnswerEqualsGenerateOfTheConversation) {
  const std::string dir = temp_dir();
  const std::string q1 = "What is the normal range of hemoglobin in adults?", q2 = "And in children?";
  const std::string common = " --model " + kSmolLm2 + " --max-new-tokens 12 --show-ids";
  std::string first, first_err, second, second_err;
  ASSERT_EQ(run_command(kM3d + " generate --chat --prompt '" + q1 + "'" + common, &first, &first_err), 0) << first_err;
  ASSERT_FALSE(first.empty());
  const json conversation = {
      {{"role", "user"}, {"content", q1}}, {{"role", "assistant"}, {"content", first.substr(0, first.size() - 1)}}, {{"role", "user"}, {"content", q2}}};
  ASSERT_EQ(run_command(kM3d + " generate --messages " + write_messages(dir, "two_turns", conversation) + common, &second, &second_err), 0) << second_err;
  const std::string input = dir + "/turns.txt";
  std::ofstream(input) << q1 << "\n" << q2 << "\n";
  std::string out, err;
  ASSERT_EQ(run_command(kM3d + " chat" + common + " < " + input, &out, &err), 0) << err;
  EXPECT_EQ(out, first + second);
  EXPECT_EQ(array_after(err, "prompt ids", 1), array_after(second_err, "prompt ids"));
  EXPECT_EQ(array_after(err, "generated ids", 1), array_after(second_err, "generated ids"));
  // The second turn re-read only what follows the first prompt (at least).
  EXPECT_EQ(cached_count(err, 0), 0);
  EXPECT_GE(cached_count(err, 1), static_cast<int64_t>(array_after(first_err, "prompt ids").size())) << err;
  EXPECT_EQ(cached_count(second_err, 0), 0);

  std::ofstream(input) << q1 << "\n/reset\n" << q1 << "\n/quit\n" << q2 << "\n";
  ASSERT_EQ(run_command(kM3d + " chat" + common + " < " + input, &out, &err), 0) << err;
  EXPECT_EQ(out, first + first);
}

// Bad input: one `m3d: error:` line, exit 1, nothing written.
void expect_error(const std::string& args, const std::string& fragment, const std::string& input = "/dev/null") {
  std::string out, err;
  EXPECT_EQ(run_command(kM3d + " " + args + " < " + input, &out, &err), 1) << args << "\n" << err;
  EXPECT_EQ(err.rfind("m3d: error:", 0), 0u) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find(fragment), std::string::npos) << err;
}

TEST_F(CliText, BadInputsFailWithOneLine) {
  const std::string dir = temp_dir();
  const std::string missing = dir + "/no/such/dir/logits.npy";
  expect_error("generate --model " + kSmolLm2 + " --chat --prompt hi --max-new-tokens 2 --dump-logits " + missing, "logits.npy");
  EXPECT_FALSE(fs::exists(dir + "/no"));
  expect_error("generate --model " + kSmolLm2 + " --messages " + write_messages(dir, "object", json{{"role", "user"}}), "object.json");
  expect_error("generate --model " + kSmolLm2 + " --messages " + write_messages(dir, "no_content", json::array({json{{"role", "user"}}})), "message 0");
  expect_error("generate --model " + kSmolLm2 + " --max-new-tokens 2", "--prompt");
  // The tiny LaMed has no chat template (tokenizer.json only): chat turns cannot be
  // rendered, and --chat with --image is refused (LaMed prompts use none).
  const std::string lamed = fixture("lamed_phi3_tiny");
  ASSERT_FALSE(fs::exists(lamed + "/tokenizer_config.json"));
  expect_error("chat --model " + lamed, "no chat template", write_messages(dir, "question", json("hi")));
  expect_error("chat --model " + lamed, "m3d generate --model " + lamed + " --prompt");
  expect_error("generate --model " + lamed + " --chat --prompt hi --max-new-tokens 2", "no chat template");
  expect_error("generate --model " + lamed + " --image " + lamed + "/expected.safetensors --chat --prompt hi", "--chat and --messages are for text prompts");
}

}  // namespace
}  // namespace m3d::test
