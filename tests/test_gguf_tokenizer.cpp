// The SentencePiece ("llama") tokenizer of GGUF files against llama.cpp
// (tools/reference/make_spm_gguf_fixtures.py, llama-cpp-python): the test writes the GGUFs
// the script ran llama.cpp on, from the same tokenizer.model (third_party/, fetched by
// scripts/fetch_vocab.sh) with m3d's GGUF writer, reads them back and compares ids and
// decodings; `m3d inspect` and `m3d generate` then run on such a file with a model body.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "io/gguf.h"
#include "io/gguf_write.h"
#include "m3d/error.h"
#include "test_support.h"
#include "text/sentencepiece.h"
#include "text/tokenizer.h"

namespace m3d::text {
namespace {

using json = nlohmann::json;
using V = io::GgufWriteValue;
using Metadata = std::vector<std::pair<std::string, V>>;

const json& reference() {
  static const json j = test::read_json(test::fixture("tokenizers/spm_gguf.json"));
  return j;
}

std::string vocab_path(const std::string& relative) {
  const std::string path = std::string(M3D_SOURCE_DIR) + "/third_party/tokenizers/" + relative;
  EXPECT_TRUE(std::filesystem::exists(path)) << path << " missing: run scripts/fetch_vocab.sh";
  return path;
}

// The GGUF tokenizer arrays the script wrote: the model's pieces, then its extra entries.
struct Vocab {
  std::vector<std::string> tokens;
  std::vector<double> scores;
  std::vector<int32_t> types;
};

Vocab variant_vocab(const json& variant) {
  static const SentencePieceModel model = SentencePieceModel::from_file(vocab_path("mistral_v1/tokenizer.model"));
  Vocab v;
  for (int64_t id = 0; id < model.size(); ++id) {
    v.tokens.push_back(model.id_to_piece(id));
    v.scores.push_back(model.score(id));
    v.types.push_back(static_cast<int32_t>(model.type(id)));
  }
  for (const json& extra : variant["extra_tokens"]) {
    v.tokens.push_back(extra[0].get<std::string>());
    v.scores.push_back(extra[1].get<double>());
    v.types.push_back(extra[2].get<int32_t>());
  }
  return v;
}

// convert_hf_to_gguf.py's tokenizer keys for `variant`, after the llama.* hyperparameters.
Metadata spm_metadata(const json& variant, const Vocab& v, int64_t layers = 1) {
  const json& meta = variant["metadata"];
  V scores;
  scores.type = io::GgufType::ARRAY;
  scores.element = io::GgufType::F32;
  scores.floats = v.scores;
  Metadata m = {{"general.architecture", V::string("llama")},
                {"general.name", V::string(meta["name"])},
                {"llama.context_length", V::u32(4096)},
                {"llama.embedding_length", V::u32(64)},
                {"llama.block_count", V::u32(static_cast<uint32_t>(layers))},
                {"llama.feed_forward_length", V::u32(128)},
                {"llama.attention.head_count", V::u32(2)},
                {"llama.attention.head_count_kv", V::u32(2)},
                {"llama.attention.layer_norm_rms_epsilon", V::f32(1e-5f)},
                {"tokenizer.ggml.model", V::string("llama")},
                {"tokenizer.ggml.pre", V::string("default")},
                {"tokenizer.ggml.tokens", V::string_array(v.tokens)},
                {"tokenizer.ggml.scores", scores},
                {"tokenizer.ggml.token_type", V::i32_array(v.types)},
                {"tokenizer.ggml.bos_token_id", V::u32(meta["bos"])},
                {"tokenizer.ggml.eos_token_id", V::u32(meta["eos"])},
                {"tokenizer.ggml.unknown_token_id", V::u32(meta["unk"])}};
  if (!meta["pad"].is_null()) m.emplace_back("tokenizer.ggml.padding_token_id", V::u32(meta["pad"]));
  m.emplace_back("tokenizer.ggml.add_bos_token", V::boolean(meta["add_bos"]));
  m.emplace_back("tokenizer.ggml.add_eos_token", V::boolean(meta["add_eos"]));
  if (!meta["add_space_prefix"].is_null()) m.emplace_back("tokenizer.ggml.add_space_prefix", V::boolean(meta["add_space_prefix"]));
  return m;
}

// The vocabulary the script wrote: sizes, type counts, score sum and spot entries agree.
void expect_vocab_matches(const Vocab& v, const json& summary) {
  ASSERT_EQ(v.tokens.size(), summary["n_tokens"].get<size_t>());
  std::map<std::string, int64_t> counts;
  for (int32_t type : v.types) counts[std::to_string(type)] += 1;
  EXPECT_EQ(json(counts), summary["type_counts"]);
  double sum = 0;
  for (double s : v.scores) sum += s;
  EXPECT_NEAR(sum, summary["score_sum"].get<double>(), 1e-6 * std::abs(sum));
  for (const json& spot : summary["spots"]) {
    const size_t id = spot["id"];
    EXPECT_EQ(v.tokens[id], spot["token"].get<std::string>()) << id;
    EXPECT_EQ(v.scores[id], spot["score"].get<double>()) << id;
    EXPECT_EQ(v.types[id], spot["type"].get<int32_t>()) << id;
  }
}

std::string write_variant(const std::string& name, const std::vector<io::GgufWriteTensor>& tensors = {}, int64_t layers = 1) {
  const json& variant = reference()["variants"][name];
  const Vocab v = variant_vocab(variant);
  expect_vocab_matches(v, variant["vocab"]);
  const std::string path = test::temp_dir() + "/" + name + ".gguf";
  io::gguf_write(path, spm_metadata(variant, v, layers), tensors);
  return path;
}

Tokenizer read_tokenizer(const std::string& path) { return Tokenizer::from_gguf(io::gguf_tokenizer(io::gguf_read(path)), path); }

class GgufSpmTokenizer : public ::testing::TestWithParam<std::string> {};

// Every text: llama_tokenize's ids with and without BOS/EOS (special tokens parsed), and
// llama_detokenize's text keeping and removing special tokens.
TEST_P(GgufSpmTokenizer, IdsAndDecodingsEqualLlamaCpp) {
  const std::string path = write_variant(GetParam());
  const Tokenizer tokenizer = read_tokenizer(path);
  const json& texts = reference()["texts"];
  const json& cases = reference()["variants"][GetParam()]["cases"];
  ASSERT_EQ(texts.size(), cases.size());
  ASSERT_GE(texts.size(), 30u);
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i];
    const json& want = cases[i];
    const auto ids = want["ids"].get<std::vector<int64_t>>(), ids_plain = want["ids_plain"].get<std::vector<int64_t>>();
    EXPECT_EQ(tokenizer.encode(text), ids) << "text: " << text;
    EXPECT_EQ(tokenizer.encode(text, false), ids_plain) << "text: " << text;
    EXPECT_EQ(tokenizer.decode(ids, false), want["decoded"].get<std::string>()) << "text: " << text;
    EXPECT_EQ(tokenizer.decode(ids, true), want["decoded_skip"].get<std::string>()) << "text: " << text;
    EXPECT_EQ(tokenizer.decode(ids_plain, true), want["decoded_plain_skip"].get<std::string>()) << "text: " << text;
  }
}

// llama_vocab_is_eog: EOS and the end-of-turn tokens llama.cpp knows by text (Phi-3's <|end|>,
// written user-defined in that layout, and <|endoftext|>; also </s> when EOS is another token).
TEST_P(GgufSpmTokenizer, EndOfGenerationIdsEqualLlamaCpp) {
  const io::GgufTokenizer t = io::gguf_tokenizer(io::gguf_read(write_variant(GetParam())));
  EXPECT_EQ(gguf_end_of_generation_ids(t), reference()["variants"][GetParam()]["eog_ids"].get<std::vector<int64_t>>());
}

TEST(GgufEndOfGeneration, SmolLm2FileGivesLlamaCppsSet) {
  const std::string path = std::string(M3D_SOURCE_DIR) + "/third_party/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " missing: run scripts/fetch_vocab.sh";
  EXPECT_EQ(gguf_end_of_generation_ids(io::gguf_tokenizer(io::gguf_read(path))), reference()["smollm2_eog_ids"].get<std::vector<int64_t>>());
}

INSTANTIATE_TEST_SUITE_P(Variants, GgufSpmTokenizer, ::testing::Values("llama2", "phi3_lamed", "no_prefix"));

// The same vocabulary's tokenizer.json through m3d's Hugging Face BPE: where the script found
// `tokenizers` and llama.cpp to agree (all texts of this corpus), m3d's two paths agree too.
TEST(GgufSpmTokenizerVsHf, TokenizerJsonGivesTheIdsHfGives) {
  const Tokenizer hf = Tokenizer::from_file(vocab_path("llama2/tokenizer.json"));
  const json& texts = reference()["texts"];
  const json& cases = reference()["variants"]["llama2"]["cases"];
  for (size_t i = 0; i < texts.size(); ++i) {
    const json& want = cases[i].contains("hf_ids") ? cases[i]["hf_ids"] : cases[i]["ids"];
    EXPECT_EQ(hf.encode(texts[i].get<std::string>()), want.get<std::vector<int64_t>>()) << texts[i];
  }
}

TEST(GgufSpmTokenizerVocab, TypesAndAddedTokens) {
  const Tokenizer t = read_tokenizer(write_variant("phi3_lamed"));
  EXPECT_EQ(t.vocab_size(), 32064);
  EXPECT_TRUE(t.is_byte_token(t.token_to_id("<0x0A>")));
  EXPECT_FALSE(t.is_byte_token(t.token_to_id("<|end|>")));
  EXPECT_EQ(t.token_to_id("[SEG]"), 32014);
  EXPECT_EQ(t.id_to_token(32007), "<|end|>");
  EXPECT_EQ(t.token_to_id("absent piece"), -1);
  Tokenizer added = read_tokenizer(write_variant("llama2"));
  added.add_special_tokens({"<im_patch>"});
  added.add_tokens({"[SEG]"});
  EXPECT_EQ(added.token_to_id("<im_patch>"), 32000);
  EXPECT_EQ(added.token_to_id("[SEG]"), 32001);
  // As llama.cpp treats a control and a user-defined token: split out of the text with the
  // space prefix after them; decoding drops the control one only when skipping.
  EXPECT_EQ(added.encode("a<im_patch>[SEG]b", false), (std::vector<int64_t>{264, 32000, 32001, 287}));
  EXPECT_EQ(added.decode({264, 32000, 32001, 287}, true), "a[SEG] b");
  EXPECT_EQ(added.decode({264, 32000, 32001, 287}, false), "a<im_patch>[SEG] b");
}

// A one-key change of a written file, then the error naming the file.
TEST(GgufSpmTokenizerVocab, BrokenVocabulariesAreErrors) {
  const json& variant = reference()["variants"]["llama2"];
  Vocab v = variant_vocab(variant);
  const std::string dir = test::temp_dir();
  auto expect_error = [&](const Vocab& broken, const std::string& model, const std::string& fragment) {
    Metadata m = spm_metadata(variant, broken);
    for (auto& [key, value] : m) {
      if (key == "tokenizer.ggml.model") value = V::string(model);
    }
    const std::string path = dir + "/broken.gguf";
    io::gguf_write(path, m, {});
    test::expect_one_line_error([&] { read_tokenizer(path); }, path, fragment);
  };
  expect_error(v, "t5", "tokenizer.ggml.model 't5' is not supported from GGUF metadata (supported: gpt2, byte-level BPE; llama, SentencePiece BPE)");
  Vocab twice = v;
  twice.tokens[300] = twice.tokens[301];
  expect_error(twice, "llama", "tokenizer.ggml.tokens has '" + v.tokens[301] + "' twice (ids 300 and 301)");
  Vocab bad_byte = v;
  bad_byte.types[400] = 6;
  expect_error(bad_byte, "llama", "tokenizer.ggml.tokens[400] '" + v.tokens[400] + "' has the byte type but is not of the form <0xXX>");
}

// --- the CLI on a GGUF with this tokenizer and a model body ---
#ifdef M3D_TEST_CLI  // build/m3d exists in the libtorch build only (not in the sanitizer build)

io::GgufWriteTensor f32_tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& values) {
  io::GgufWriteTensor t{name, io::GgmlType::F32, std::move(shape), std::vector<uint8_t>(values.size() * 4)};
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

// A one-layer llama (E 64) whose blocks add nothing (zero attention and MLP outputs), so the
// next token depends on the last one alone: token chain[k] is embedded as unit vector k and
// the output row of chain[k + 1] is 10 * unit vector k. Greedy decoding after chain[0]
// therefore walks the chain.
std::vector<io::GgufWriteTensor> chain_model(int64_t vocab, const std::vector<int64_t>& chain) {
  const int64_t E = 64, F = 128;
  std::vector<float> embed(static_cast<size_t>(vocab * E)), output(static_cast<size_t>(vocab * E));
  for (size_t k = 0; k < chain.size(); ++k) {
    embed[static_cast<size_t>(chain[k] * E) + k] = 1;
    if (k + 1 < chain.size()) output[static_cast<size_t>(chain[k + 1] * E) + k] = 10;
  }
  const std::vector<float> ones(E, 1.0f), square(E * E), up(F * E);
  return {f32_tensor("token_embd.weight", {vocab, E}, embed), f32_tensor("output_norm.weight", {E}, ones),
          f32_tensor("output.weight", {vocab, E}, output),    f32_tensor("blk.0.attn_norm.weight", {E}, ones),
          f32_tensor("blk.0.attn_q.weight", {E, E}, square),  f32_tensor("blk.0.attn_k.weight", {E, E}, square),
          f32_tensor("blk.0.attn_v.weight", {E, E}, square),  f32_tensor("blk.0.attn_output.weight", {E, E}, square),
          f32_tensor("blk.0.ffn_norm.weight", {E}, ones),     f32_tensor("blk.0.ffn_gate.weight", {F, E}, up),
          f32_tensor("blk.0.ffn_up.weight", {F, E}, up),      f32_tensor("blk.0.ffn_down.weight", {E, F}, up)};
}

// `m3d generate` encodes the prompt as llama.cpp does and prints what llama_detokenize
// makes of the generated ids: the chain spells a reference text's ids (no BOS), then EOS.
TEST(CliGgufSpm, GenerateEncodesThePromptAndDecodesTheAnswerAsLlamaCpp) {
  const std::string m3d = std::string(M3D_BINARY_DIR) + "/m3d";
  const json& texts = reference()["texts"];
  const json& cases = reference()["variants"]["llama2"]["cases"];
  auto find = [&](const std::string& text) {
    for (size_t i = 0; i < texts.size(); ++i) {
      if (texts[i] == text) return cases[i];
    }
    ADD_FAILURE() << text << " is not in the fixture";
    return json();
  };
  const json prompt = find("Hello world"), answer = find("日本語のテキスト");
  std::vector<int64_t> chain = {prompt["ids"].back().get<int64_t>()};
  for (const json& id : answer["ids_plain"]) chain.push_back(id.get<int64_t>());
  chain.push_back(reference()["variants"]["llama2"]["metadata"]["eos"].get<int64_t>());
  const std::string path = write_variant("llama2", chain_model(32000, chain));

  std::string out, err;
  ASSERT_EQ(test::run_command(m3d + " generate --model " + path + " --prompt 'Hello world' --greedy --max-new-tokens 32 --json --show-ids", &out, &err), 0)
      << err;
  const json j = json::parse(out);
  EXPECT_EQ(j["text"], answer["decoded_plain_skip"]);
  EXPECT_EQ(j["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["completion_tokens"], chain.size() - 1);
  EXPECT_NE(err.find("prompt ids (3, 0 from the cache): " + prompt["ids"].dump()), std::string::npos) << err;

  ASSERT_EQ(test::run_command(m3d + " inspect --json " + path, &out, &err), 0) << err;
  const json inspected = json::parse(out);
  EXPECT_EQ(inspected["architecture"], "llama");
  EXPECT_EQ(inspected["config"]["vocab_size"], 32000);
  EXPECT_EQ(inspected["metadata"]["tokenizer.ggml.model"], "llama");
}
#endif

}  // namespace
}  // namespace m3d::text
