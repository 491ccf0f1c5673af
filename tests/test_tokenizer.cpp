// tokenizer.json parity with Hugging Face `tokenizers` on a real SentencePiece-BPE
// vocabulary (scripts/fetch_vocab.sh) with M3D-LaMed's added tokens, over the
// corpus of tools/reference/make_tokenizer_fixtures.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "m3d/error.h"
#include "test_support.h"
#include "text/tokenizer.h"

namespace m3d::text {
namespace {

std::string vocab_path() {
  const std::string path = std::string(M3D_SOURCE_DIR) + "/third_party/tokenizers/llama2/tokenizer.json";
  EXPECT_TRUE(std::filesystem::exists(path)) << path << " missing: run scripts/fetch_vocab.sh (setup.sh does)";
  return path;
}

Tokenizer m3d_tokenizer() {
  Tokenizer tokenizer = Tokenizer::from_file(vocab_path());
  tokenizer.add_special_tokens({"<im_patch>", "<bx_start>", "<bx_end>"});  // train.py order (spec §4.4)
  tokenizer.add_tokens({"[SEG]"});
  return tokenizer;
}

TEST(Tokenizer, IdsAndDecodingMatchHuggingFaceOnTheCorpus) {
  const auto reference = test::read_json(test::fixture("tokenizers/llama2_m3d.json"));
  const Tokenizer tokenizer = m3d_tokenizer();
  EXPECT_EQ(tokenizer.token_to_id("<im_patch>"), reference["added"]["<im_patch>"].get<int64_t>());
  EXPECT_EQ(tokenizer.token_to_id("[SEG]"), reference["added"]["[SEG]"].get<int64_t>());
  const auto& corpus = reference["corpus"];
  const auto& cases = reference["cases"];
  ASSERT_GE(corpus.size(), 300u);
  size_t identical = 0, round_trips = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::string text = corpus[i];
    const auto& want = cases[i];
    const auto ids = tokenizer.encode(text);
    EXPECT_EQ(ids, want["ids"].get<std::vector<int64_t>>()) << "text: " << text;
    EXPECT_EQ(tokenizer.encode(text, false), want["ids_plain"].get<std::vector<int64_t>>()) << "text: " << text;
    const auto reference_ids = want["ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(tokenizer.decode(reference_ids, false), want["decoded"].get<std::string>()) << "text: " << text;
    EXPECT_EQ(tokenizer.decode(reference_ids, true), want["decoded_skip"].get<std::string>()) << "text: " << text;
    identical += ids == reference_ids;
    round_trips += want["decoded_skip"].get<std::string>() == text && tokenizer.decode(ids, true) == text;
  }
  std::printf("%zu of %zu texts tokenized identically; %zu round-trip exactly (as in the reference)\n", identical,
              corpus.size(), round_trips);
}

TEST(Tokenizer, BadFilesAreClearErrors) {
  const std::string dir = test::temp_dir();
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  test::expect_one_line_error([&] { Tokenizer::from_file(dir + "/absent.json"); }, dir + "/absent.json", "cannot open");
  const std::string broken = write("broken.json", "{\"model\": ");
  test::expect_one_line_error([&] { Tokenizer::from_file(broken); }, broken, "not valid JSON");
  const std::string wordpiece = write("wp.json", R"({"model": {"type": "WordPiece", "vocab": {}}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(wordpiece); }, wordpiece, "model type 'WordPiece' is not supported");
  const std::string bytelevel = write("bl.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
      "pre_tokenizer": {"type": "ByteLevel"}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(bytelevel); }, bytelevel, "pre_tokenizer 'ByteLevel' is not supported");
  const std::string no_vocab = write("nv.json", R"({"model": {"type": "BPE"}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(no_vocab); }, no_vocab, "malformed tokenizer.json");
  const std::string bad_merge = write("bm.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(bad_merge); }, bad_merge, "uses tokens missing from the vocabulary");
  const Tokenizer tokenizer = m3d_tokenizer();
  test::expect_one_line_error([&] { tokenizer.decode({1, 99999999}); }, "", "token id 99999999 is out of range");
}

}  // namespace
}  // namespace m3d::text
