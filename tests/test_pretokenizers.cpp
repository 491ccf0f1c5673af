// tokenizer.json normalizers, pre-tokenizers and decoders against Hugging Face
// `tokenizers` 0.19.1 (tools/reference/make_pretokenizer_fixtures.py): each case is a
// tiny trained BPE model (SentencePiece-style with byte fallback, or byte-level) with the
// sections of one layout (Llama-2 legacy, Mistral's Metaspace "first", BERT-like
// lowercasing, NFKC + Whitespace, every Split behaviour, SmolLM's Digits + ByteLevel,
// ...); on 32 texts the ids, the decodings and which texts round-trip equal the reference.
#include <gtest/gtest.h>

#include <fstream>

#include "test_support.h"
#include "text/tokenizer.h"

namespace m3d::text {
namespace {

TEST(PreTokenizers, EveryLayoutMatchesTokenizers) {
  const auto fixture = test::read_json(test::fixture("tokenizers/pretokenizers.json"));
  const auto& texts = fixture["texts"];
  ASSERT_GE(fixture["cases"].size(), 25u);
  size_t identical = 0, total = 0;
  for (const auto& c : fixture["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    nlohmann::json root = c["tokenizer"];
    root["model"] = fixture["models"][c["model"].get<std::string>()];
    const Tokenizer tokenizer = Tokenizer::from_json(root, name);
    std::vector<int64_t> round_trips;
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string text = texts[i];
      const auto want = c["ids"][i].get<std::vector<int64_t>>();
      const auto ids = tokenizer.encode(text);
      const std::string decoded = tokenizer.decode(want);
      EXPECT_EQ(ids, want) << "text: " << text;
      EXPECT_EQ(decoded, c["decoded"][i].get<std::string>()) << "text: " << text;
      bool same = ids == want && decoded == c["decoded"][i].get<std::string>();
      if (c.contains("decoded_skip")) {
        const std::string skipped = tokenizer.decode(want, true);
        EXPECT_EQ(skipped, c["decoded_skip"][i].get<std::string>()) << "text: " << text;
        same = same && skipped == c["decoded_skip"][i].get<std::string>();
      }
      if (tokenizer.decode(tokenizer.encode(text, false), true) == text) round_trips.push_back(static_cast<int64_t>(i));
      identical += same;
      ++total;
    }
    EXPECT_EQ(round_trips, c["round_trips"].get<std::vector<int64_t>>());
  }
  std::printf("%zu of %zu (layout, text) pairs: ids and decodings identical to tokenizers\n", identical, total);
}

// Mistral's layout (Metaspace "first" without splitting, byte fallback) gives back
// every text that does not start with a space.
TEST(PreTokenizers, MetaspaceBpeRoundTrips) {
  const auto fixture = test::read_json(test::fixture("tokenizers/pretokenizers.json"));
  for (const auto& c : fixture["cases"]) {
    if (c["name"] != "mistral_metaspace_first") continue;
    nlohmann::json root = c["tokenizer"];
    root["model"] = fixture["models"]["sp"];
    const Tokenizer tokenizer = Tokenizer::from_json(root, "mistral");
    for (const std::string text : {"Hello world", "tabs\tand\nnewlines", "中文 🫁 café", "x  y", "a [SEG] b"}) {
      EXPECT_EQ(tokenizer.decode(tokenizer.encode(text), true), text) << text;
    }
    return;
  }
  FAIL() << "no mistral_metaspace_first case";
}

TEST(PreTokenizers, UnsupportedPartsAreClearErrors) {
  const std::string dir = test::temp_dir();
  auto check = [&](const std::string& name, const std::string& sections, const std::string& fragment) {
    const std::string path = dir + "/" + name + ".json";
    std::ofstream(path) << R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, )" << sections << "}";
    test::expect_one_line_error([&] { Tokenizer::from_file(path); }, path, fragment);
  };
  check("nmt", R"("normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Nmt"}]})",
        "normalizer 'Nmt' is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents)");
  check("bert", R"("pre_tokenizer": {"type": "BertPreTokenizer"})", "pre_tokenizer 'BertPreTokenizer' is not supported (supported: Sequence, Split,");
  check("wordpiece", R"("decoder": {"type": "WordPiece"})", "decoder 'WordPiece' is not supported (supported: Sequence, Replace, ByteFallback, Fuse,");
  check("scheme", R"("pre_tokenizer": {"type": "Metaspace", "replacement": "_", "prepend_scheme": "sometimes"})",
        "Metaspace: prepend_scheme 'sometimes' is not supported (supported: always, first, never)");
  check("legacy", R"("pre_tokenizer": {"type": "Metaspace", "replacement": "_", "add_prefix_space": false})",
        "add_prefix_space false does not match prepend_scheme 'always'");
  check("replacement", R"("decoder": {"type": "Metaspace", "replacement": "ab"})", "Metaspace pre-tokenizer: 'replacement' must be one character");
  check("pattern", R"("pre_tokenizer": {"type": "Split", "pattern": {"Glob": "*"}, "behavior": "Isolated", "invert": false})",
        "Split: pattern {\"Glob\":\"*\"} is not supported");
  check("behavior", R"("pre_tokenizer": {"type": "Punctuation", "behavior": "Merged"})", "Punctuation pre-tokenizer: behavior 'Merged' is not supported");
}

}  // namespace
}  // namespace m3d::text
