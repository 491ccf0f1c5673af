// The SentencePiece-BPE tokenizer of a GGUF file (tokenizer.ggml.model "llama": Llama-2, Mistral
// v1, TinyLlama, Phi-3) as llama.cpp runs it (src/llama-vocab.cpp: load, tokenizer_st_partition,
// tokenize, llm_tokenizer_spm_session, token_to_piece, detokenize), not as sentencepiece does:
// every vocabulary entry can be merged into, special tokens are parsed out of the text first and
// the text after each gets the space prefix again. Left out: tokenizing with parse_special off.
#include <algorithm>
#include <cctype>
#include <queue>
#include <unordered_map>

#include <fmt/format.h>

#include "core/strings.h"
#include "io/gguf.h"
#include "m3d/error.h"
#include "text/backend.h"
#include "text/utf8.h"

namespace m3d::text {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's whitespace symbol

// tokenizer.ggml.token_type values (llama.cpp's LLAMA_TOKEN_TYPE_*).
enum class TokenType : int32_t { Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

// llama.cpp's unicode_len_utf8: the length a lead byte announces, from its high nibble.
size_t lead_length(unsigned char lead) {
  static constexpr uint8_t kLength[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLength[lead >> 4];
}

class GgufSpmTokenizer final : public TokenizerBackend {
 public:
  struct Token {
    std::string text;
    float score = 0;
    TokenType type = TokenType::Normal;
    bool rstrip = false;  // whitespace after it is dropped when it is split out of the text
  };
  std::string name;
  std::vector<Token> tokens;
  std::unordered_map<std::string, int64_t> ids;
  std::vector<int64_t> specials;  // control, user-defined and unknown ids, longest text first
  int64_t bos = 1, eos = 2;
  bool add_bos = true, add_eos = false, add_space_prefix = true;

  bool splits_out(TokenType type) const { return type == TokenType::Control || type == TokenType::UserDefined || type == TokenType::Unknown; }

  void index_specials() {
    specials.clear();
    for (size_t id = 0; id < tokens.size(); ++id) {
      if (splits_out(tokens[id].type)) specials.push_back(static_cast<int64_t>(id));
    }
    std::stable_sort(specials.begin(), specials.end(), [&](int64_t a, int64_t b) { return tokens[a].text.size() > tokens[b].text.size(); });
  }

  int64_t byte_token(unsigned char byte) const {
    auto it = ids.find(fmt::format("<0x{:02X}>", byte));
    if (it == ids.end()) it = ids.find(std::string(1, static_cast<char>(byte)));  // llama.cpp's fallback: the byte as text
    if (it == ids.end()) fail("{}: byte 0x{:02X} has neither a <0x{:02X}> token nor a token of its own", name, byte, byte);
    return it->second;
  }

  // A run of text between special tokens (tokenizer_st_partition), or a special token's id.
  struct Fragment {
    size_t begin = 0, length = 0;
    int64_t id = -1;
  };
  std::vector<Fragment> partition(const std::string& text) const;
  void spm(const std::string& text, std::vector<int64_t>& out) const;

  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;
  int64_t token_to_id(const std::string& token) const override {
    auto it = ids.find(token);
    return it == ids.end() ? -1 : it->second;
  }
  std::string id_to_token(int64_t id) const override { return id < 0 || id >= vocab_size() ? "" : tokens[static_cast<size_t>(id)].text; }
  int64_t vocab_size() const override { return static_cast<int64_t>(tokens.size()); }
  bool is_byte_token(int64_t id) const override { return id >= 0 && id < vocab_size() && tokens[static_cast<size_t>(id)].type == TokenType::Byte; }

  // A special token becomes control (skipped when decoding without special tokens), any
  // other user-defined (matched in text, decoded as written); new ones follow the vocabulary.
  void add(const std::string& content, bool special) override {
    if (content.empty()) fail("{}: cannot add an empty token", name);
    auto it = ids.find(content);
    if (it == ids.end()) {
      it = ids.emplace(content, vocab_size()).first;
      tokens.push_back({content, 0.0f, TokenType::Normal, false});
    }
    Token& token = tokens[static_cast<size_t>(it->second)];
    if (special) token.type = TokenType::Control;
    else if (!splits_out(token.type)) token.type = TokenType::UserDefined;
    index_specials();
  }
};

std::vector<GgufSpmTokenizer::Fragment> GgufSpmTokenizer::partition(const std::string& text) const {
  std::vector<Fragment> fragments;
  if (!text.empty()) fragments.push_back({0, text.size(), -1});
  for (int64_t special : specials) {
    const Token& token = tokens[static_cast<size_t>(special)];
    std::vector<Fragment> split;
    for (const Fragment& fragment : fragments) {
      if (fragment.id >= 0) {
        split.push_back(fragment);
        continue;
      }
      size_t begin = fragment.begin, length = fragment.length;
      for (size_t match = text.find(token.text, begin); match != std::string::npos && match + token.text.size() <= begin + length;
           match = text.find(token.text, begin)) {
        if (match > begin) split.push_back({begin, match - begin, -1});
        split.push_back({0, 0, special});
        const size_t end = begin + length;
        begin = match + token.text.size();
        if (token.rstrip) {
          while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;  // C isspace, as llama.cpp
        }
        length = end - begin;
      }
      if (length > 0) split.push_back({begin, length, -1});
    }
    fragments = std::move(split);
  }
  return fragments;
}

// llm_tokenizer_spm_session::tokenize: UTF-8 characters merge pairwise, the pair whose
// merged text is the highest-scoring vocabulary entry first (the leftmost on ties); a
// symbol that is no token becomes byte tokens.
void GgufSpmTokenizer::spm(const std::string& text, std::vector<int64_t>& out) const {
  struct Symbol {
    size_t begin, length;
    int prev, next;
  };
  struct Bigram {
    int left, right;
    float score;
    size_t length;
  };
  auto lower = [](const Bigram& a, const Bigram& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(lower)> queue(lower);
  std::vector<Symbol> symbols;
  for (size_t at = 0; at < text.size();) {
    const size_t n = std::min(lead_length(static_cast<unsigned char>(text[at])), text.size() - at);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({at, n, index - 1, at + n == text.size() ? -1 : index + 1});
    at += n;
  }
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const size_t length = symbols[left].length + symbols[right].length;
    auto it = ids.find(text.substr(symbols[left].begin, length));
    if (it != ids.end()) queue.push({left, right, tokens[static_cast<size_t>(it->second)].score, length});
  };
  for (int i = 1; i < static_cast<int>(symbols.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    if (left.length == 0 || right.length == 0 || left.length + right.length != bigram.length) continue;  // stale
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add(left.prev, bigram.left);
    try_add(bigram.left, left.next);
  }
  // llama.cpp's resegment also looks the piece up in the merges that made it, but only pieces
  // that are tokens were merged: what is left is a character outside the vocabulary.
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    const std::string piece = text.substr(symbols[i].begin, symbols[i].length);
    if (auto it = ids.find(piece); it != ids.end()) {
      out.push_back(it->second);
    } else {
      for (char byte : piece) out.push_back(byte_token(static_cast<unsigned char>(byte)));
    }
  }
}

std::vector<int64_t> GgufSpmTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  std::vector<int64_t> out;
  if (add_special_tokens && add_bos) out.push_back(bos);
  bool after_special = true;  // the text's start counts as following a special token
  for (const Fragment& fragment : partition(text)) {
    if (fragment.id >= 0) {
      out.push_back(fragment.id);
      after_special = true;
      continue;
    }
    const std::string run = (add_space_prefix && after_special ? " " : "") + text.substr(fragment.begin, fragment.length);
    spm(replace_all(run, " ", kSpace), out);
    after_special = false;
  }
  if (add_special_tokens && add_eos) out.push_back(eos);
  return out;
}

// llama_detokenize(remove_special = skip_special_tokens, unparse_special = !skip_special_tokens):
// one leading space goes unless a removed BOS led; control and unknown tokens print their text
// only when kept, user-defined ones always, unused ones never. Bytes that do not form UTF-8
// become U+FFFD (llama.cpp leaves them to the caller).
std::string GgufSpmTokenizer::decode(const std::vector<int64_t>& ids_in, bool skip_special_tokens) const {
  size_t first = 0, last = ids_in.size();
  bool remove_space = add_space_prefix;
  if (skip_special_tokens && add_bos && last > 0 && ids_in[0] == bos) {
    remove_space = false;
    first = 1;
  }
  if (skip_special_tokens && add_eos && last > first && ids_in[last - 1] == eos) --last;
  std::string text;
  for (size_t i = first; i < last; ++i) {
    const int64_t id = ids_in[i];
    if (id < 0 || id >= vocab_size()) fail("{}: token id {} is out of range (vocabulary of {})", name, id, vocab_size());
    const Token& token = tokens[static_cast<size_t>(id)];
    std::string piece;
    switch (token.type) {
      case TokenType::Control:
      case TokenType::Unknown:
        if (!skip_special_tokens) piece = token.text;
        break;
      case TokenType::UserDefined:
        piece = token.text;
        break;
      case TokenType::Normal:
        piece = replace_all(token.text, kSpace, " ");
        break;
      case TokenType::Byte:
        piece = std::string(1, static_cast<char>(std::stoi(token.text.substr(3, 2), nullptr, 16)));
        break;
      case TokenType::Unused:
      case TokenType::Undefined:
        break;
    }
    if (remove_space && !piece.empty() && piece.front() == ' ') piece.erase(0, 1);
    remove_space = false;
    text += piece;
  }
  return utf8::lossy(text);
}

// Tokens llama.cpp makes control by their text whatever the file says (llama-vocab.cpp: the
// end-of-turn, end-of-message and fill-in-the-middle tokens it finds by text), as llama-cpp-python
// 0.3.36 behaves, probed one token at a time: these end generation...
constexpr const char* kEndOfGeneration[] = {"</s>",         "<|eot_id|>",      "<|im_end|>",
                                            "<|end|>",      "<end_of_turn>",   "<|endoftext|>",
                                            "<EOT>",        "_<EOT>",          "<|eom_id|>",
                                            "<|return|>",   "<|call|>",        "<|flush|>",
                                            "<|calls|>",    "<|end_of_text|>", "<end_of_utterance>",
                                            "<|fim_pad|>",  "<fim-pad>",       "<PAD>",
                                            "<|fim_repo|>", "<|repo_name|>",   "<fim-repo>",
                                            "<REPO>",       "<|file_sep|>",    "<reponame>",
                                            "<fim_pad>",    "<eos>",           "<\uFF5Cend\u2581of\u2581sentence\uFF5C>"};  // DeepSeek's <｜end▁of▁sentence｜>
// ... these do not.
constexpr const char* kFillInTheMiddle[] = {"<fim_prefix>",
                                            "<fim_suffix>",
                                            "<fim_middle>",
                                            "<|fim_prefix|>",
                                            "<fim-prefix>",
                                            "<PRE>",
                                            "<|fim_suffix|>",
                                            "<fim-suffix>",
                                            "<SUF>",
                                            "<|fim_middle|>",
                                            "<fim-middle>",
                                            "<MID>",
                                            "<\uFF5Cfim\u2581begin\uFF5C>",
                                            "<\uFF5Cfim\u2581hole\uFF5C>",
                                            "<\uFF5Cfim\u2581end\uFF5C>"};

template <size_t N>
bool listed(const char* const (&list)[N], const std::string& text) {
  return std::find_if(std::begin(list), std::end(list), [&](const char* t) { return text == t; }) != std::end(list);
}

}  // namespace

std::unique_ptr<TokenizerBackend> load_gguf_spm(const io::GgufTokenizer& gguf, const std::string& name) {
  auto backend = std::make_unique<GgufSpmTokenizer>();
  GgufSpmTokenizer& t = *backend;
  t.name = name;
  t.tokens.resize(gguf.tokens.size());
  for (size_t id = 0; id < gguf.tokens.size(); ++id) {
    GgufSpmTokenizer::Token& token = t.tokens[id];
    token.text = gguf.tokens[id].empty() ? fmt::format("[EMPTY_{}]", id) : gguf.tokens[id];  // as llama.cpp names an empty token
    if (!gguf.scores.empty()) token.score = gguf.scores[id];
    if (!gguf.token_types.empty()) {
      const int32_t type = gguf.token_types[id];
      token.type = type >= 1 && type <= 6 ? static_cast<TokenType>(type) : TokenType::Undefined;
    }
    if (listed(kEndOfGeneration, token.text) || listed(kFillInTheMiddle, token.text)) token.type = TokenType::Control;
    if (token.type == TokenType::Byte &&
        (token.text.size() != 6 || token.text.compare(0, 3, "<0x") != 0 || token.text[5] != '>' || !std::isxdigit(static_cast<unsigned char>(token.text[3])) ||
         !std::isxdigit(static_cast<unsigned char>(token.text[4])))) {
      fail("{}: tokenizer.ggml.tokens[{}] '{}' has the byte type but is not of the form <0xXX>", name, id, token.text);
    }
    if (!t.ids.emplace(token.text, static_cast<int64_t>(id)).second) {
      fail("{}: tokenizer.ggml.tokens has '{}' twice (ids {} and {})", name, token.text, t.ids[token.text], id);
    }
  }
  if (gguf.bos_token_id) t.bos = *gguf.bos_token_id;
  if (gguf.eos_token_id) t.eos = *gguf.eos_token_id;
  t.add_bos = gguf.add_bos_token.value_or(true);
  t.add_eos = gguf.add_eos_token.value_or(false);
  t.add_space_prefix = gguf.add_space_prefix.value_or(true);
  for (int64_t id : {t.bos, t.eos}) {
    if (id >= t.vocab_size())
      fail("{}: special token id {} is outside the {} tokens (llama.cpp's default BOS 1 / EOS 2 apply when unset)", name, id, t.vocab_size());
  }
  t.index_specials();
  // llama.cpp's Phi-3 rule, keyed on general.name: the whitespace after every special token
  // and </s> is dropped, but not after <unk>, <s> and <|endoftext|>.
  const std::string model_name = ascii_lower(gguf.model_name);
  if (model_name.find("phi-3") != std::string::npos || model_name.find("phi3") != std::string::npos) {
    for (int64_t id : t.specials) t.tokens[static_cast<size_t>(id)].rstrip = true;
    if (auto it = t.ids.find("</s>"); it != t.ids.end()) t.tokens[static_cast<size_t>(it->second)].rstrip = true;
    for (const char* text : {"<unk>", "<s>", "<|endoftext|>"}) {
      if (auto it = t.ids.find(text); it != t.ids.end()) t.tokens[static_cast<size_t>(it->second)].rstrip = false;
    }
  }
  return backend;
}

std::vector<int64_t> gguf_end_of_generation_ids(const io::GgufTokenizer& gguf) {
  std::vector<int64_t> ids;
  if (gguf.eos_token_id) ids.push_back(*gguf.eos_token_id);
  else if (gguf.model == "llama" && gguf.tokens.size() > 2) ids.push_back(2);  // llama.cpp's SentencePiece default
  for (size_t id = 0; id < gguf.tokens.size(); ++id) {
    const bool known = std::find(ids.begin(), ids.end(), static_cast<int64_t>(id)) != ids.end();
    if (!known && listed(kEndOfGeneration, gguf.tokens[id])) ids.push_back(static_cast<int64_t>(id));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace m3d::text
