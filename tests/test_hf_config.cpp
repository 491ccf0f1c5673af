// HF metadata files: the shapes they take in published checkpoints (tokens as
// strings or AddedToken objects, eos as int or list, huge model_max_length) and
// clear errors for malformed files.
#include <gtest/gtest.h>

#include <fstream>

#include "io/hf_config.h"
#include "m3d/error.h"
#include "test_support.h"

namespace m3d::io {
namespace {

std::string write(const std::string& name, const std::string& text) {
  const std::string path = test::temp_dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(HfConfig, ReadsTheOfficialLamedFixtureConfig) {
  const HfConfig c = hf_config_read(test::shared_fixture("vit3d_spp_tiny/config.json"));
  EXPECT_EQ(c.architecture(), "LamedPhi3ForCausalLM");
  EXPECT_EQ(c.model_type, "lamed_phi3");
  EXPECT_EQ(c.hidden_size, 96);
  EXPECT_EQ(c.raw["mm_projector_type"], "spp");
  EXPECT_FALSE(c.num_hidden_layers.has_value());
}

TEST(HfConfig, ReadsDecoderKeys) {
  const HfConfig c = hf_config_read(write("config.json", R"({
    "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "rope_scaling": null})"));
  EXPECT_EQ(c.architecture(), "Phi3ForCausalLM");
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.vocab_size, 32064);
  EXPECT_DOUBLE_EQ(*c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.tie_word_embeddings, false);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(HfConfig, WrongTypesNameFileAndKey) {
  const std::string path = write("config.json", R"({"model_type": "phi3", "hidden_size": "big"})");
  try {
    hf_config_read(path);
    FAIL();
  } catch (const Error& e) { EXPECT_EQ(std::string(e.what()), path + ": key 'hidden_size': expected an integer, found string"); }
}

TEST(HfConfig, MalformedJsonNamesFile) {
  const std::string path = write("config.json", R"({"model_type": )");
  try {
    hf_config_read(path);
    FAIL();
  } catch (const Error& e) { EXPECT_EQ(std::string(e.what()).rfind(path + ": not valid JSON", 0), 0u) << e.what(); }
  EXPECT_THROW(hf_config_read(write("c2.json", "[1]")), Error);
  EXPECT_THROW(hf_config_read(test::temp_dir() + "/absent.json"), Error);
}

TEST(GenerationConfig, EosMayBeIntOrList) {
  auto g = generation_config_read(write("g.json", R"({"bos_token_id": 1, "eos_token_id": [32000, 32007], "do_sample": false, "temperature": 0.7})"));
  EXPECT_EQ(g.bos_token_id, 1);
  EXPECT_EQ(g.eos_token_id, (std::vector<int64_t>{32000, 32007}));
  EXPECT_EQ(g.do_sample, false);
  auto h = generation_config_read(write("h.json", R"({"eos_token_id": 2, "max_new_tokens": 256})"));
  EXPECT_EQ(h.eos_token_id, std::vector<int64_t>{2});
  EXPECT_EQ(h.max_new_tokens, 256);
  EXPECT_THROW(generation_config_read(write("i.json", R"({"eos_token_id": "x"})")), Error);
}

TEST(TokenizerConfig, ReadsTokensAndAddedTokensDecoder) {
  auto t = tokenizer_config_read(write("tokenizer_config.json", R"({
    "tokenizer_class": "LlamaTokenizer", "add_bos_token": true, "add_eos_token": false, "legacy": false,
    "model_max_length": 1000000000000000019884624838656, "padding_side": "left",
    "bos_token": "<s>", "eos_token": {"content": "<|endoftext|>", "lstrip": false, "normalized": false},
    "unk_token": "<unk>", "pad_token": null,
    "additional_special_tokens": ["<im_patch>", {"content": "[SEG]"}],
    "added_tokens_decoder": {"32011": {"content": "<im_patch>", "special": true, "lstrip": false, "rstrip": false,
                                        "normalized": false, "single_word": false}}})"));
  EXPECT_EQ(t.tokenizer_class, "LlamaTokenizer");
  EXPECT_EQ(t.legacy, false);
  EXPECT_EQ(t.model_max_length, INT64_MAX);
  EXPECT_EQ(t.padding_side, "left");
  EXPECT_EQ(t.eos_token, "<|endoftext|>");
  EXPECT_FALSE(t.pad_token.has_value());
  EXPECT_EQ(t.additional_special_tokens, (std::vector<std::string>{"<im_patch>", "[SEG]"}));
  ASSERT_EQ(t.added_tokens_decoder.count(32011), 1u);
  EXPECT_TRUE(t.added_tokens_decoder[32011].special);
  EXPECT_FALSE(t.added_tokens_decoder[32011].normalized);
  EXPECT_THROW(tokenizer_config_read(write("t2.json", R"({"added_tokens_decoder": {"x": {"content": "a"}}})")), Error);
}

TEST(AddedTokens, ReadsIdsAndRejectsBadOnes) {
  auto added = added_tokens_read(write("added_tokens.json", R"({"<im_patch>": 32011, "[SEG]": 32014})"));
  EXPECT_EQ(added.at("[SEG]"), 32014);
  EXPECT_THROW(added_tokens_read(write("a2.json", R"({"x": -1})")), Error);
}

TEST(SpecialTokensMap, Reads) {
  auto s = special_tokens_map_read(
      write("special_tokens_map.json", R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "additional_special_tokens": ["<bx_start>", "<bx_end>"]})"));
  EXPECT_EQ(s.bos_token, "<s>");
  EXPECT_EQ(s.eos_token, "</s>");
  EXPECT_EQ(s.additional_special_tokens.size(), 2u);
}

}  // namespace
}  // namespace m3d::io
