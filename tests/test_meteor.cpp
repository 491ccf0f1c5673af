// METEOR against nltk 3.8.1 as HF evaluate 0.4.1 calls it (tools/reference/make_meteor_fixtures.py):
// word_tokenize (Punkt sentences + NLTKWordTokenizer), WordNet 3.0 morphy and synonym sets, and
// the score on the 500 pairs of the text-metric corpus plus pairs aimed at the matcher. Needs the
// Punkt parameters (scripts/fetch_vocab.sh) and Debian's wordnet-base (scripts/setup.sh).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "eval/meteor.h"
#include "m3d/error.h"
#include "test_support.h"

namespace m3d::eval {
namespace {

using json = nlohmann::json;

const json& reference() {
  static const json j = test::read_json(test::fixture("metrics/meteor.json"));
  return j;
}

const std::string& punkt_dir() {
  static const std::string dir = std::string(M3D_SOURCE_DIR) + "/" + kPunktEnglishDir;
  return dir;
}

const MeteorData& data() {
  static const MeteorData d = meteor_data_load(punkt_dir(), kWordNetDir);
  return d;
}

// Python counts code points where m3d counts bytes.
size_t code_points_before(const std::string& text, size_t byte_offset) {
  size_t n = 0;
  for (size_t i = 0; i < std::min(byte_offset, text.size()); ++i) n += (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80;
  return n + (byte_offset > text.size() ? byte_offset - text.size() : 0);
}

json spans_in_code_points(const std::string& text) {
  json out = json::array();
  for (const auto& [b, e] : data().punkt.span_tokenize(text)) out.push_back({code_points_before(text, b), code_points_before(text, e)});
  return out;
}

// Every text of the fixture with its expected tokens and sentence spans.
std::vector<const json*> texts() {
  std::vector<const json*> out;
  for (const char* group : {"pairs", "extra_pairs"}) {
    for (const auto& p : reference()[group]) {
      out.push_back(&p["prediction"]);
      for (const auto& r : p["references"]) out.push_back(&r);
    }
  }
  for (const auto& t : reference()["punkt_texts"]) out.push_back(&t);
  return out;
}

TEST(Meteor, PunktSentenceSpansMatchNltk) {
  size_t checked = 0, mismatches = 0;
  for (const json* t : texts()) {
    const std::string text = (*t)["text"];
    const json got = spans_in_code_points(text);
    ++checked;
    if (got != (*t)["spans"]) {
      if (++mismatches <= 5) { ADD_FAILURE() << "text: " << json(text).dump() << "\n  nltk: " << (*t)["spans"].dump() << "\n  m3d:  " << got.dump(); }
    }
  }
  std::printf("Punkt spans: %zu of %zu texts identical\n", checked - mismatches, checked);
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GT(checked, 1100u);
  for (const auto& t : reference()["punkt_texts"]) {
    EXPECT_EQ(data().punkt.tokenize(t["text"].get<std::string>()), t["sentences"].get<std::vector<std::string>>()) << t["text"];
  }
}

TEST(Meteor, WordTokenizeMatchesNltk) {
  size_t checked = 0, mismatches = 0;
  for (const json* t : texts()) {
    const std::string text = (*t)["text"];
    const auto got = word_tokenize(text, data().punkt);
    ++checked;
    if (json(got) != (*t)["tokens"]) {
      if (++mismatches <= 5) { ADD_FAILURE() << "text: " << json(text).dump() << "\n  nltk: " << (*t)["tokens"].dump() << "\n  m3d:  " << json(got).dump(); }
    }
  }
  std::printf("word_tokenize: %zu of %zu texts identical\n", checked - mismatches, checked);
  EXPECT_EQ(mismatches, 0u);
}

TEST(Meteor, WordNetMorphyAndSynonymsMatchNltk) {
  size_t checked = 0;
  for (const auto& [word, want] : reference()["synonyms"].items()) {
    const auto& set = data().wordnet.synonyms(word);
    std::vector<std::string> got(set.begin(), set.end());
    std::sort(got.begin(), got.end());  // Python's sorted(): code point order = UTF-8 byte order
    EXPECT_EQ(got, want["names"].get<std::vector<std::string>>()) << word;
    for (const auto& [pos, forms] : want["morphy"].items()) {
      EXPECT_EQ(data().wordnet.morphy(python_lower(word), pos[0]), forms.get<std::vector<std::string>>()) << word << " " << pos;
    }
    ++checked;
  }
  EXPECT_GE(checked, 300u);
  EXPECT_EQ(data().wordnet.morphy("aardwolves", 'n'), std::vector<std::string>{"aardwolf"});
  EXPECT_EQ(data().wordnet.morphy("hardrock", 'r'), std::vector<std::string>{});
}

TEST(Meteor, ScoreMatchesNltkOnEveryPair) {
  constexpr double kTolerance = 1e-6;
  size_t checked = 0, mismatches = 0;
  double max_diff = 0;
  for (const char* group : {"pairs", "extra_pairs"}) {
    for (const auto& p : reference()[group]) {
      const std::string pred = p["prediction"]["text"];
      std::vector<std::string> refs;
      for (const auto& r : p["references"]) refs.push_back(r["text"]);
      const double got = meteor(pred, refs, data()), want = p["meteor"];
      max_diff = std::max(max_diff, std::abs(got - want));
      ++checked;
      if (std::abs(got - want) > kTolerance && ++mismatches <= 5) {
        ADD_FAILURE() << "prediction: " << json(pred).dump() << "\n  references: " << json(refs).dump() << "\n  nltk " << want << ", m3d " << got;
      }
      // The scorer alone, on nltk's own tokens: score, matches and chunks per reference.
      const auto hyp = p["prediction"]["tokens"].get<std::vector<std::string>>();
      for (size_t r = 0; r < refs.size(); ++r) {
        const auto ref = p["references"][r]["tokens"].get<std::vector<std::string>>();
        const auto& want_r = p["per_reference"][r];
        const MeteorAlignment a = meteor_align(hyp, ref, data().wordnet);
        EXPECT_EQ(static_cast<int64_t>(a.matches.size()), want_r[1].get<int64_t>()) << pred;
        EXPECT_EQ(a.chunks, want_r[2].get<int64_t>()) << pred;
        EXPECT_NEAR(meteor_tokens(hyp, ref, data().wordnet), want_r[0].get<double>(), kTolerance) << pred;
      }
    }
  }
  std::printf("METEOR: %zu of %zu pairs within %g of nltk, max |diff| %.3g\n", checked - mismatches, checked, kTolerance, max_diff);
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GE(checked, 518u);
}

TEST(Meteor, SpecTestVectors) {
  // m3d_bench_spec.md §3.8: 9 matches, 6 chunks; and nltk's doctest value.
  const auto& v = reference()["spec_vectors"];
  EXPECT_NEAR(meteor(v[0]["prediction"], v[0]["reference"].get<std::string>(), data()), 0.598958, 1e-6);
  EXPECT_NEAR(meteor(v[1]["prediction"], v[1]["reference"].get<std::string>(), data()), 0.6944, 1e-4);
  for (const auto& c : v) EXPECT_NEAR(meteor(c["prediction"], c["reference"].get<std::string>(), data()), c["meteor"].get<double>(), 1e-12);
  const auto a = meteor_align(word_tokenize(v[0]["prediction"], data().punkt), word_tokenize(v[0]["reference"], data().punkt), data().wordnet);
  EXPECT_EQ(a.matches.size(), 9u);
  EXPECT_EQ(a.chunks, 6);
}

TEST(Meteor, EmptyAndInvalidInput) {
  EXPECT_EQ(meteor("", "The liver is normal.", data()), 0.0);  // ZeroDivisionError -> 0 in nltk
  EXPECT_EQ(meteor("The liver is normal.", "", data()), 0.0);
  EXPECT_EQ(meteor("spleen", "liver", data()), 0.0);
  EXPECT_EQ(meteor("liver", std::vector<std::string>{}, data()), 0.0);
  EXPECT_DOUBLE_EQ(meteor("Liver normal.", std::vector<std::string>{"spleen", "liver normal ."}, data()),
                   meteor("Liver normal.", "liver normal .", data()));  // the best reference
  // Invalid UTF-8 is read as Python's errors="replace" would: each bad sequence one U+FFFD.
  EXPECT_EQ(word_tokenize("bad \xC3 liver.", data().punkt), (std::vector<std::string>{"bad", "\xEF\xBF\xBD", "liver", "."}));
  EXPECT_DOUBLE_EQ(meteor("bad \xC3 liver", "bad \xEF\xBF\xBD liver", data()), 1.0 - 0.5 * std::pow(1.0 / 3.0, 3));  // one chunk of 3
  test::expect_one_line_error([&] { data().punkt.span_tokenize("bad \xFF"); }, "", "not valid UTF-8");
}

TEST(Meteor, MissingDataSaysWhereToGetIt) {
  const std::string dir = test::temp_dir();
  test::expect_one_line_error([&] { meteor_data_load(dir, kWordNetDir); }, dir + "/abbrev_types.txt", "scripts/fetch_vocab.sh");
  test::expect_one_line_error([&] { meteor_data_load(punkt_dir(), dir); }, dir + "/index.noun", "wordnet-base");
  test::write_bytes(dir + "/abbrev_types.txt", {'d', 'r'});
  test::write_bytes(dir + "/sent_starters.txt", {'t', 'h', 'e'});
  test::write_bytes(dir + "/collocations.tab", {'a', ' ', 'b'});
  test::expect_one_line_error([&] { punkt_parameters_load(dir); }, dir + "/collocations.tab", "2");
  EXPECT_THROW(WordNet("/nonexistent"), Error);
}

}  // namespace
}  // namespace m3d::eval
