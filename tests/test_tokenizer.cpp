// Tokenizer parity with Hugging Face on real vocabularies (scripts/fetch_vocab.sh),
// over the corpus of tools/reference/make_tokenizer_fixtures.py:
//  - fast tokenizer.json against `tokenizers`: SentencePiece-BPE with M3D-LaMed's
//    added tokens, byte-level Llama-3, byte-level Qwen2.5 with Med3DVLM's <im_patch>
//    (whose slow Qwen2Tokenizer the script checked gives the same ids);
//  - slow SentencePiece tokenizer.model against transformers' LlamaTokenizer
//    (use_fast=False, as M3D loads it) in four saved-checkpoint layouts;
//  - WordPiece: transformers' slow BertTokenizer (uncased and cased) and the fast
//    tokenizer.json, on the BERT vocabulary of all-MiniLM-L6-v2.
#include <gtest/gtest.h>

#include <filesystem>
#include <cstring>
#include <fstream>

#include "m3d/error.h"
#include "test_support.h"
#include "text/sentencepiece.h"
#include "text/tokenizer.h"

namespace m3d::text {
namespace {

namespace fs = std::filesystem;

std::string vocab(const std::string& relative) {
  const std::string path = std::string(M3D_SOURCE_DIR) + "/third_party/tokenizers/" + relative;
  EXPECT_TRUE(fs::exists(path)) << path << " missing: run scripts/fetch_vocab.sh (setup.sh does)";
  return path;
}

// Every text of the reference gives the same ids (with and without special
// tokens) and the same decodings (with and without skipping special tokens).
void expect_parity(const Tokenizer& tokenizer, const nlohmann::json& reference, const char* cases_key = "cases") {
  if (reference.contains("added")) {
    for (const auto& [token, id] : reference["added"].items()) EXPECT_EQ(tokenizer.token_to_id(token), id.get<int64_t>()) << token;
  }
  const auto& corpus = reference["corpus"];
  const auto& cases = reference[cases_key];
  ASSERT_GE(corpus.size(), 300u);
  ASSERT_EQ(corpus.size(), cases.size());
  size_t identical = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::string text = corpus[i];
    const auto& want = cases[i];
    const auto reference_ids = want["ids"].get<std::vector<int64_t>>();
    const auto ids = tokenizer.encode(text);
    const auto ids_plain = tokenizer.encode(text, false);
    const std::string decoded = tokenizer.decode(reference_ids, false), decoded_skip = tokenizer.decode(reference_ids, true);
    EXPECT_EQ(ids, reference_ids) << "text: " << text;
    EXPECT_EQ(ids_plain, want["ids_plain"].get<std::vector<int64_t>>()) << "text: " << text;
    EXPECT_EQ(decoded, want["decoded"].get<std::string>()) << "text: " << text;
    EXPECT_EQ(decoded_skip, want["decoded_skip"].get<std::string>()) << "text: " << text;
    identical += ids == reference_ids && ids_plain == want["ids_plain"].get<std::vector<int64_t>>() && decoded == want["decoded"].get<std::string>() &&
                 decoded_skip == want["decoded_skip"].get<std::string>();
  }
  std::printf("%zu of %zu texts: ids and decodings identical to the reference\n", identical, corpus.size());
}

Tokenizer fast_with_added(const std::string& vocab_dir, const nlohmann::json& reference) {
  Tokenizer tokenizer = Tokenizer::from_file(vocab(vocab_dir + "/tokenizer.json"));
  tokenizer.add_special_tokens(reference["special"].get<std::vector<std::string>>());
  tokenizer.add_tokens(reference["normal"].get<std::vector<std::string>>());
  return tokenizer;
}

TEST(Tokenizer, FastSentencePieceBpeWithM3dTokensMatchesTokenizers) {
  const auto reference = test::read_json(test::fixture("tokenizers/llama2_m3d.json"));
  expect_parity(fast_with_added("llama2", reference), reference);
}

TEST(Tokenizer, FastByteLevelQwen25WithMed3dvlmImagePatchMatchesTokenizers) {
  const auto reference = test::read_json(test::fixture("tokenizers/qwen2_5_med3dvlm.json"));
  const Tokenizer tokenizer = fast_with_added("qwen2_5", reference);
  EXPECT_EQ(tokenizer.token_to_id("<im_patch>"), 151665);  // med3dvlm_spec.md §4.3
  EXPECT_EQ(tokenizer.vocab_size(), 151666);
  expect_parity(tokenizer, reference);
}

TEST(Tokenizer, FastByteLevelLlama3MatchesTokenizers) {
  const auto reference = test::read_json(test::fixture("tokenizers/llama3.json"));
  expect_parity(fast_with_added("llama3", reference), reference);
}

// A checkpoint-like directory: the files save_pretrained wrote plus tokenizer.model.
std::string slow_checkpoint(const std::string& name) {
  const std::string dir = test::temp_dir();
  for (const auto& entry : fs::directory_iterator(test::fixture("tokenizers/" + name))) {
    if (entry.path().filename() != "expected.json") fs::copy_file(entry.path(), dir + "/" + entry.path().filename().string());
  }
  fs::copy_file(vocab("mistral_v1/tokenizer.model"), dir + "/tokenizer.model");
  return dir;
}

void expect_slow_parity(const std::string& name) {
  const auto reference = test::read_json(test::fixture("tokenizers/" + name + "/expected.json"));
  const Tokenizer tokenizer = Tokenizer::load(slow_checkpoint(name));  // auto: tokenizer.model -> slow
  EXPECT_TRUE(tokenizer.is_slow());
  expect_parity(tokenizer, reference);
}

TEST(Tokenizer, SlowLlamaLegacyMatchesTransformers) { expect_slow_parity("slow_llama2_legacy"); }
TEST(Tokenizer, SlowLlamaNonLegacyMatchesTransformers) { expect_slow_parity("slow_llama2"); }
TEST(Tokenizer, SlowLlamaOlderAddedTokensLayoutMatchesTransformers) { expect_slow_parity("slow_llama2_old_layout"); }
TEST(Tokenizer, SlowPhi3LayoutMatchesTransformers) {
  expect_slow_parity("slow_phi3");
  const Tokenizer tokenizer = Tokenizer::load(slow_checkpoint("slow_phi3"));
  EXPECT_EQ(tokenizer.token_to_id("[SEG]"), 32014);  // m3d_lamed_spec.md §4.4
  EXPECT_EQ(tokenizer.vocab_size(), 32015);
}

std::string minilm_dir() {
  const std::string dir = std::string(M3D_SOURCE_DIR) + "/third_party/models/all-MiniLM-L6-v2";
  EXPECT_TRUE(fs::exists(dir + "/vocab.txt")) << dir << " missing: run scripts/fetch_vocab.sh (setup.sh does)";
  return dir;
}

TEST(WordPiece, SlowBertTokenizerMatchesTransformers) {
  const auto reference = test::read_json(test::fixture("tokenizers/bert_wordpiece.json"));
  const Tokenizer tokenizer = Tokenizer::load(minilm_dir());  // auto: vocab.txt -> slow BertTokenizer
  EXPECT_TRUE(tokenizer.is_slow());
  EXPECT_EQ(tokenizer.vocab_size(), 30522);
  EXPECT_EQ(tokenizer.token_to_id("[CLS]"), 101);
  EXPECT_EQ(tokenizer.token_to_id("[SEP]"), 102);
  expect_parity(tokenizer, reference, "slow");
}

TEST(WordPiece, SlowCasedBertTokenizerMatchesTransformers) {
  const auto reference = test::read_json(test::fixture("tokenizers/bert_wordpiece.json"));
  const std::string dir = test::temp_dir();
  fs::copy_file(minilm_dir() + "/vocab.txt", dir + "/vocab.txt");
  fs::copy_file(test::fixture("tokenizers/bert_cased/tokenizer_config.json"), dir + "/tokenizer_config.json");
  expect_parity(Tokenizer::load(dir), reference, "slow_cased");
}

TEST(WordPiece, FastTokenizerJsonMatchesTokenizers) {
  const auto reference = test::read_json(test::fixture("tokenizers/bert_wordpiece.json"));
  const Tokenizer tokenizer = Tokenizer::load(minilm_dir(), Tokenizer::Kind::Fast);
  EXPECT_FALSE(tokenizer.is_slow());
  expect_parity(tokenizer, reference, "fast");
}

TEST(WordPiece, BadFilesAreClearErrors) {
  const std::string dir = test::temp_dir();
  fs::create_directories(dir + "/empty");
  { std::ofstream(dir + "/empty/vocab.txt"); }
  EXPECT_THROW(Tokenizer::load(dir + "/empty"), Error);
  fs::create_directories(dir + "/no_unk");
  { std::ofstream(dir + "/no_unk/vocab.txt") << "[CLS]\n[SEP]\nhello\n"; }
  try {
    Tokenizer::load(dir + "/no_unk");
    FAIL() << "a vocabulary without [UNK] loaded";
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find("[UNK]"), std::string::npos) << e.what(); }
  fs::create_directories(dir + "/other_class");
  { std::ofstream(dir + "/other_class/vocab.txt") << "[UNK]\n[CLS]\n[SEP]\n"; }
  { std::ofstream(dir + "/other_class/tokenizer_config.json") << R"({"tokenizer_class": "RobertaTokenizer"})"; }
  EXPECT_THROW(Tokenizer::load(dir + "/other_class"), Error);
  { std::ofstream(dir + "/ok.txt"); }
  fs::create_directories(dir + "/ok");
  { std::ofstream(dir + "/ok/vocab.txt") << "[UNK]\n[CLS]\n[SEP]\nhello\n##s\n"; }
  const Tokenizer tiny = Tokenizer::load(dir + "/ok");
  EXPECT_EQ(tiny.encode("Hellos hello!"), (std::vector<int64_t>{1, 3, 4, 3, 0, 2}));
  EXPECT_THROW(tiny.encode("bad \xff utf-8"), Error);
  EXPECT_THROW(tiny.decode({99}), Error);
}

TEST(Tokenizer, LoadChoosesAndNamesTheFiles) {
  const std::string dir = slow_checkpoint("slow_llama2");
  test::expect_one_line_error([&] { Tokenizer::load(dir, Tokenizer::Kind::Fast); }, dir, "no tokenizer.json for the fast tokenizer (tokenizer.model is there");
  const std::string empty = dir + "/empty";
  fs::create_directories(empty);
  test::expect_one_line_error([&] { Tokenizer::load(empty, Tokenizer::Kind::Slow); }, empty, "no tokenizer.model");
  test::expect_one_line_error([&] { Tokenizer::load(empty); }, empty, "no tokenizer.json");
  std::ofstream(dir + "/tokenizer_config.json") << R"({"tokenizer_class": "BertTokenizer"})";
  test::expect_one_line_error([&] { Tokenizer::load(dir); }, dir, "tokenizer_class 'BertTokenizer' is not supported");
  std::ofstream(dir + "/tokenizer_config.json") << R"({"added_tokens_decoder": {"x": {"content": "a"}}})";
  test::expect_one_line_error([&] { Tokenizer::load(dir); }, dir, "added_tokens_decoder key 'x' is not a token id");
  std::ofstream(dir + "/tokenizer_config.json") << R"({"added_tokens_decoder": {"40000": {}}})";
  test::expect_one_line_error([&] { Tokenizer::load(dir); }, dir, "malformed tokenizer files");
}

// Serialized ModelProto pieces for hand-made SentencePiece models.
std::string varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  return out + static_cast<char>(v);
}
std::string field(int number, const std::string& bytes) { return varint(static_cast<uint64_t>(number) << 3 | 2) + varint(bytes.size()) + bytes; }
std::string piece(const std::string& text, float score, int type) {
  std::string score_bytes(4, '\0');
  std::memcpy(score_bytes.data(), &score, 4);
  return field(1, field(1, text) + varint(2 << 3 | 5) + score_bytes + varint(3 << 3) + varint(type));
}
std::string bpe_trainer() { return field(2, varint(3 << 3) + varint(2)); }

TEST(SentencePiece, SmallModelMatchesTheSentencePieceLibrary) {
  // 700 pieces: most text goes through byte fallback and low-ranked merges.
  const auto reference = test::read_json(test::fixture("tokenizers/tiny_bpe.json"));
  const auto sp = SentencePieceModel::from_file(test::fixture("tokenizers/tiny_bpe.model"));
  const auto& corpus = reference["corpus"];
  size_t identical = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::string text = corpus[i];
    const auto want = reference["cases"][i]["ids"].get<std::vector<int64_t>>();
    const auto ids = sp.encode(text);
    std::vector<std::string> pieces;
    for (int64_t id : want) pieces.push_back(sp.id_to_piece(id));
    const std::string decoded = sp.decode_pieces(pieces);
    EXPECT_EQ(ids, want) << "text: " << text;
    EXPECT_EQ(decoded, reference["cases"][i]["decoded"].get<std::string>()) << "text: " << text;
    identical += ids == want && decoded == reference["cases"][i]["decoded"].get<std::string>();
  }
  std::printf("%zu of %zu texts identical to sentencepiece %s\n", identical, corpus.size(), reference["sentencepiece_version"].get<std::string>().c_str());
}

TEST(SentencePiece, HandMadeModelMergesByScoreAndFallsBackToBytes) {
  // <unk>, then pieces whose scores make "▁ab" win over "▁a" + "b"; "c" is unknown.
  std::string model = piece("<unk>", 0, 2) + piece("<s>", 0, 3) + piece("\xE2\x96\x81", -1, 1) + piece("a", -2, 1) + piece("b", -3, 1) +
                      piece(
                          "\xE2\x96\x81"
                          "a",
                          -4, 1) +
                      piece("ab", -1.5f, 1) +
                      piece(
                          "\xE2\x96\x81"
                          "ab",
                          -5, 1) +
                      piece("<0x63>", 0, 6) + bpe_trainer() + field(2, varint(35 << 3) + varint(1)) + field(3, varint(4 << 3) + varint(0));
  const auto sp = SentencePieceModel::from_bytes(model, "hand.model");
  EXPECT_EQ(sp.encode("ab"), (std::vector<int64_t>{7}));  // ▁ + (a b -> ab, score -1.5) -> ▁ab
  EXPECT_EQ(sp.encode("abc"), (std::vector<int64_t>{7, 8}));  // c -> byte piece <0x63>
  EXPECT_EQ(sp.encode(""), (std::vector<int64_t>{}));
  EXPECT_EQ(sp.decode_pieces({"\xE2\x96\x81"
                              "ab",
                              "<0x63>", "<s>"}),
            "abc");
}

TEST(SentencePiece, BadModelsAreClearErrors) {
  const std::string good = piece("<unk>", 0, 2) + piece("a", 0, 1) + bpe_trainer();
  EXPECT_NO_THROW(SentencePieceModel::from_bytes(good, "m"));
  test::expect_one_line_error([&] { SentencePieceModel::from_bytes(good.substr(0, good.size() - 3), "t.model"); }, "t.model", "truncated");
  test::expect_one_line_error([&] { SentencePieceModel::from_bytes("", "e.model"); }, "e.model", "no pieces");
  // Cut after the pieces (a whole field): truncated, not "Unigram" (the proto default).
  test::expect_one_line_error([&] { SentencePieceModel::from_bytes(piece("<unk>", 0, 2) + piece("a", 0, 1), "cut.model"); }, "cut.model",
                              "no trainer spec after the 2 pieces: the file is truncated");
  test::expect_one_line_error(
      [&] { SentencePieceModel::from_bytes(piece("<unk>", 0, 2) + piece("a", 0, 1) + field(2, varint(3 << 3) + varint(1)), "u.model"); }, "u.model",
      "model type Unigram is not supported");
  test::expect_one_line_error([&] { SentencePieceModel::from_bytes(piece("a", 0, 1) + bpe_trainer(), "n.model"); }, "n.model", "exactly one unknown piece");
  test::expect_one_line_error([&] { SentencePieceModel::from_bytes(good + piece("a", 0, 1), "d.model"); }, "d.model", "piece 'a' appears twice");
  test::expect_one_line_error([&] { SentencePieceModel::from_bytes(good + piece("b", 0, 9), "k.model"); }, "k.model", "unknown type 9");
  test::expect_one_line_error([&] { SentencePieceModel::from_bytes(good + field(3, field(2, "rules")), "c.model"); }, "c.model", "precompiled_charsmap");
  test::expect_one_line_error([&] { SentencePieceModel::from_bytes(std::string(12, '\xFF'), "v.model"); }, "v.model", "varint");
  test::expect_one_line_error([&] { SentencePieceModel::from_bytes("\x0B", "g.model"); }, "g.model", "wire type 3");
  const std::string text_file = test::temp_dir() + "/tokenizer.model";
  std::ofstream(text_file) << "this is not a protobuf";
  EXPECT_THROW(SentencePieceModel::from_file(text_file), m3d::Error);
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
  test::expect_one_line_error([&] { Tokenizer::from_file(wordpiece); }, wordpiece, "pre_tokenizer 'none' is not supported with WordPiece");
  const std::string wordpiece_empty = write("wp_empty.json", R"({"model": {"type": "WordPiece", "vocab": {}}, "pre_tokenizer": {"type": "BertPreTokenizer"}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(wordpiece_empty); }, wordpiece_empty, "vocabulary is empty");
  const std::string unigram = write("unigram.json", R"({"model": {"type": "Unigram", "vocab": []}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(unigram); }, unigram, "model type 'Unigram' is not supported");
  const std::string scripts = write("us.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
      "pre_tokenizer": {"type": "UnicodeScripts"}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(scripts); }, scripts, "pre_tokenizer 'UnicodeScripts' is not supported (supported: Sequence, Split");
  const std::string bad_regex = write("rx.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
      "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": false}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(bad_regex); }, bad_regex, "cannot compile the regex '(unclosed'");
  const std::string merged = write("mg.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
      "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "MergedWithPrevios", "invert": false}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(merged); }, merged, "behavior 'MergedWithPrevios' is not supported (supported: Removed");
  const std::string no_vocab = write("nv.json", R"({"model": {"type": "BPE"}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(no_vocab); }, no_vocab, "malformed tokenizer.json");
  const std::string bad_merge = write("bm.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})");
  test::expect_one_line_error([&] { Tokenizer::from_file(bad_merge); }, bad_merge, "uses tokens missing from the vocabulary");
  const Tokenizer tokenizer = Tokenizer::from_file(vocab("llama2/tokenizer.json"));
  test::expect_one_line_error([&] { tokenizer.decode({1, 99999999}); }, "", "token id 99999999 is out of range");
  const Tokenizer qwen = Tokenizer::from_file(vocab("qwen2_5/tokenizer.json"));
  test::expect_one_line_error([&] { qwen.encode("bad \xC3 utf-8"); }, "", "not valid UTF-8");
  const Tokenizer slow = Tokenizer::load(slow_checkpoint("slow_llama2"));
  test::expect_one_line_error([&] { slow.decode({1, 99999999}); }, "tokenizer.model", "token id 99999999 is out of range");
}

}  // namespace
}  // namespace m3d::text

namespace m3d::text {
namespace {

// Med3DVLM saves its slow Qwen2Tokenizer: vocab.json + merges.txt + tokenizer_config.json
// (with <im_patch> added as a special token). Built here from the same vocabulary; the
// reference script checked the slow tokenizer gives the fast one's ids on the whole corpus.
TEST(Tokenizer, Qwen2SlowFilesMatchTheReference) {
  const auto source = test::read_json(vocab("qwen2_5/tokenizer.json"));
  const std::string dir = test::temp_dir();
  std::ofstream(dir + "/vocab.json") << source["model"]["vocab"].dump();
  std::ofstream merges(dir + "/merges.txt");
  merges << "#version: 0.2\n";
  for (const auto& m : source["model"]["merges"])
    merges << (m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>()) << "\n";
  merges.close();
  nlohmann::json decoder = nlohmann::json::object();
  for (const auto& a : source["added_tokens"]) {
    decoder[std::to_string(a["id"].get<int64_t>())] = {{"content", a["content"]}, {"special", a["special"]}, {"normalized", false}};
  }
  decoder["151665"] = {{"content", "<im_patch>"}, {"special", true}, {"normalized", false}};
  std::ofstream(dir + "/tokenizer_config.json") << nlohmann::json{{"tokenizer_class", "Qwen2Tokenizer"}, {"added_tokens_decoder", decoder}}.dump();
  const Tokenizer tokenizer = Tokenizer::load(dir);
  EXPECT_FALSE(tokenizer.is_slow());  // byte-level BPE, the same algorithm as the fast tokenizer
  EXPECT_EQ(tokenizer.token_to_id("<im_patch>"), 151665);
  expect_parity(tokenizer, test::read_json(test::fixture("tokenizers/qwen2_5_med3dvlm.json")));
  std::ofstream(dir + "/tokenizer_config.json") << R"({"tokenizer_class": "GPT2Tokenizer"})";
  test::expect_one_line_error([&] { Tokenizer::load(dir); }, dir, "tokenizer_class 'GPT2Tokenizer' are not supported");
}

}  // namespace
}  // namespace m3d::text
