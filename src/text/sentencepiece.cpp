// See sentencepiece.h. Field numbers: sentencepiece_model.proto (ModelProto 1 pieces,
// 2 trainer_spec, 3 normalizer_spec, 5 denormalizer_spec; SentencePiece 1 piece,
// 2 score, 3 type; TrainerSpec 3 model_type, 24 treat_whitespace_as_suffix,
// 35 byte_fallback, 44 unk_surface; NormalizerSpec 1 name, 2 precompiled_charsmap,
// 3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces).
#include "text/sentencepiece.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <queue>

#include "io/mapped_file.h"
#include "m3d/error.h"
#include "text/utf8.h"

namespace m3d::text {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's whitespace symbol
constexpr size_t kMaxPieces = 10'000'000;

// Protobuf wire format over untrusted bytes; every read is bounds-checked.
class Wire {
 public:
  Wire(std::string_view data, const std::string& name, const char* message) : data_(data), name_(name), message_(message) {}

  bool done() const { return pos_ >= data_.size(); }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) fail("{}: truncated {} (varint runs past the end)", name_, message_);
      const auto byte = static_cast<unsigned char>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return value;
    }
    fail("{}: malformed {} (varint longer than 10 bytes)", name_, message_);
  }

  // Returns (field number, wire type).
  std::pair<uint64_t, int> tag() {
    const uint64_t key = varint();
    const uint64_t field = key >> 3;
    if (field == 0) fail("{}: malformed {} (field number 0)", name_, message_);
    return {field, static_cast<int>(key & 7)};
  }

  std::string_view bytes() {
    const uint64_t length = varint();
    if (length > data_.size() - pos_) fail("{}: truncated {} (a field of {} bytes runs past the end)", name_, message_, length);
    const std::string_view out = data_.substr(pos_, length);
    pos_ += length;
    return out;
  }

  float fixed32() {
    if (data_.size() - pos_ < 4) fail("{}: truncated {} (float runs past the end)", name_, message_);
    uint32_t bits = 0;
    for (int k = 0; k < 4; ++k) bits |= static_cast<uint32_t>(static_cast<unsigned char>(data_[pos_ + k])) << (8 * k);
    pos_ += 4;
    float value;
    std::memcpy(&value, &bits, 4);
    return value;
  }

  void skip(int wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        break;
      case 1:
        if (data_.size() - pos_ < 8) fail("{}: truncated {}", name_, message_);
        pos_ += 8;
        break;
      case 2:
        bytes();
        break;
      case 5:
        fixed32();
        break;
      default:
        fail("{}: malformed {} (unsupported wire type {})", name_, message_, wire_type);
    }
  }

  void expect(int wire_type, int want, uint64_t field) const {
    if (wire_type != want) fail("{}: malformed {} (field {} has wire type {}, expected {})", name_, message_, field, wire_type, want);
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
  const std::string& name_;
  const char* message_;
};

int piece_byte(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    value *= 16;
    if (c >= '0' && c <= '9') value += c - '0';
    else if (c >= 'A' && c <= 'F') value += c - 'A' + 10;
    else return -1;
  }
  return value;
}

}  // namespace

SentencePieceModel SentencePieceModel::from_file(const std::string& path) {
  const auto file = io::MappedFile::open(path);
  return from_bytes(std::string_view(reinterpret_cast<const char*>(file->data()), file->size()), path);
}

SentencePieceModel::Piece SentencePieceModel::read_piece(std::string_view message, const std::string& name, size_t index) {
  Wire p(message, name, "SentencePiece entry");
  Piece piece;
  while (!p.done()) {
    const auto [f, t] = p.tag();
    if (f == 1) {
      p.expect(t, 2, f);
      piece.text = std::string(p.bytes());
    } else if (f == 2) {
      p.expect(t, 5, f);
      piece.score = p.fixed32();
    } else if (f == 3) {
      p.expect(t, 0, f);
      const uint64_t kind = p.varint();
      if (kind < 1 || kind > 6) fail("{}: piece {} has unknown type {}", name, index, kind);
      piece.type = static_cast<Type>(kind);
    } else {
      p.skip(t);
    }
  }
  return piece;
}

SentencePieceModel SentencePieceModel::from_bytes(std::string_view bytes, const std::string& name) {
  SentencePieceModel model;
  model.name_ = name;
  std::fill(std::begin(model.byte_ids_), std::end(model.byte_ids_), -1);
  int64_t model_type = 1;  // proto default: UNIGRAM
  bool trainer_spec = false;
  bool whitespace_as_suffix = false;
  std::string charsmap, denormalizer_charsmap;

  auto parse_normalizer = [&](std::string_view message, bool denormalizer) {
    Wire w(message, name, "NormalizerSpec");
    while (!w.done()) {
      const auto [field, type] = w.tag();
      switch (field) {
        case 2:
          w.expect(type, 2, field);
          (denormalizer ? denormalizer_charsmap : charsmap) = std::string(w.bytes());
          break;
        case 3:
          w.expect(type, 0, field);
          if (!denormalizer) model.add_dummy_prefix_ = w.varint() != 0;
          else w.varint();
          break;
        case 4:
          w.expect(type, 0, field);
          if (!denormalizer) model.remove_extra_whitespaces_ = w.varint() != 0;
          else w.varint();
          break;
        case 5:
          w.expect(type, 0, field);
          if (!denormalizer) model.escape_whitespaces_ = w.varint() != 0;
          else w.varint();
          break;
        default:
          w.skip(type);
      }
    }
  };

  Wire w(bytes, name, "SentencePiece model");
  while (!w.done()) {
    const auto [field, type] = w.tag();
    if (field == 1) {
      w.expect(type, 2, field);
      if (model.pieces_.size() >= kMaxPieces) fail("{}: more than {} pieces", name, kMaxPieces);
      model.pieces_.push_back(read_piece(w.bytes(), name, model.pieces_.size()));
    } else if (field == 2) {
      w.expect(type, 2, field);
      trainer_spec = true;
      Wire t(w.bytes(), name, "TrainerSpec");
      while (!t.done()) {
        const auto [f, ft] = t.tag();
        switch (f) {
          case 3:
            t.expect(ft, 0, f);
            model_type = static_cast<int64_t>(t.varint());
            break;
          case 24:
            t.expect(ft, 0, f);
            whitespace_as_suffix = t.varint() != 0;
            break;
          case 35:
            t.expect(ft, 0, f);
            model.byte_fallback_ = t.varint() != 0;
            break;
          case 44:
            t.expect(ft, 2, f);
            model.unk_surface_ = std::string(t.bytes());
            break;
          default:
            t.skip(ft);
        }
      }
    } else if (field == 3 || field == 5) {
      w.expect(type, 2, field);
      parse_normalizer(w.bytes(), field == 5);
    } else {
      w.skip(type);
    }
  }

  if (model.pieces_.empty()) fail("{}: not a SentencePiece model (no pieces)", name);
  // spm_train writes the trainer spec after the pieces: without it the model type would
  // read as the proto default (Unigram) and a cut file would be reported as unsupported.
  if (!trainer_spec) fail("{}: no trainer spec after the {} pieces: the file is truncated (or not a SentencePiece model)", name, model.pieces_.size());
  if (model_type != 2) {
    fail("{}: SentencePiece model type {} is not supported (supported: BPE, as in Llama-2 / Phi-3 / Mistral)", name,
         model_type == 1 ? "Unigram" : std::to_string(model_type));
  }
  if (!charsmap.empty() || !denormalizer_charsmap.empty()) {
    fail("{}: SentencePiece normalization rules (precompiled_charsmap) are not supported; only the identity normalizer", name);
  }
  if (whitespace_as_suffix) fail("{}: treat_whitespace_as_suffix is not supported", name);
  model.index_pieces();
  return model;
}

void SentencePieceModel::index_pieces() {
  int unknowns = 0;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& piece = pieces_[i];
    if (piece.text.empty()) fail("{}: piece {} is empty", name_, i);
    const bool mergeable = piece.type == Type::Normal || piece.type == Type::UserDefined || piece.type == Type::Unused;
    auto& map = mergeable ? mergeable_ : reserved_;
    if (mergeable_.count(piece.text) || reserved_.count(piece.text)) fail("{}: piece '{}' appears twice", name_, piece.text);
    map.emplace(piece.text, static_cast<int64_t>(i));
    if (piece.type == Type::Unknown) {
      unk_id_ = static_cast<int64_t>(i);
      ++unknowns;
    }
    if (piece.type == Type::UserDefined) user_defined_.push_back(piece.text);
    if (piece.type == Type::Byte) {
      const int b = piece_byte(piece.text);
      if (b < 0) fail("{}: byte piece '{}' is not of the form <0xXX>", name_, piece.text);
      byte_ids_[b] = static_cast<int64_t>(i);
    }
  }
  if (unknowns != 1) fail("{}: a SentencePiece model needs exactly one unknown piece, found {}", name_, unknowns);
}

size_t SentencePieceModel::match_user_defined(std::string_view text) const {
  size_t best = 0;
  for (const auto& piece : user_defined_) {
    if (piece.size() > best && text.substr(0, piece.size()) == piece) best = piece.size();
  }
  return best;
}

std::string SentencePieceModel::normalize(std::string_view text) const {
  std::string out;
  size_t i = 0;
  if (remove_extra_whitespaces_) {
    while (i < text.size() && text[i] == ' ') ++i;
  }
  if (i == text.size()) return out;
  const std::string_view space = escape_whitespaces_ ? kSpace : std::string_view(" ");
  if (add_dummy_prefix_) out += space;
  bool previous_space = remove_extra_whitespaces_;
  while (i < text.size()) {
    size_t n = match_user_defined(text.substr(i));
    std::string_view piece;
    if (n == 0) {
      n = utf8::valid_char_length(text.substr(i));
      piece = n ? text.substr(i, n) : utf8::kReplacement;
      n = std::max<size_t>(n, 1);
    } else {
      piece = text.substr(i, n);
    }
    i += n;
    while (previous_space && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    if (piece.empty()) continue;
    for (char c : piece) {
      if (escape_whitespaces_ && c == ' ') out += kSpace;
      else out += c;
    }
    if (remove_extra_whitespaces_) previous_space = piece.back() == ' ';
  }
  if (remove_extra_whitespaces_) {
    while (out.size() >= space.size() && std::string_view(out).substr(out.size() - space.size()) == space) { out.resize(out.size() - space.size()); }
  }
  return out;
}

std::vector<int64_t> SentencePieceModel::encode(std::string_view text) const {
  const std::string normalized = normalize(text);
  struct Symbol {
    size_t begin, length;
    int prev, next;
    bool freeze;
  };
  struct Pair {
    int left, right;
    float score;
    size_t length;
  };
  auto lower = [](const Pair& a, const Pair& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::priority_queue<Pair, std::vector<Pair>, decltype(lower)> agenda(lower);
  std::map<std::string, std::pair<std::string, std::string>, std::less<>> unmerge;  // for Unused pieces

  std::vector<Symbol> symbols;
  for (size_t i = 0; i < normalized.size();) {
    size_t n = match_user_defined(std::string_view(normalized).substr(i));
    const bool freeze = n > 0;
    if (!freeze) n = std::min(utf8::sequence_length(static_cast<unsigned char>(normalized[i])), normalized.size() - i);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({i, n, index - 1, i + n < normalized.size() ? index + 1 : -1, freeze});
    i += n;
  }
  auto maybe_add = [&](int left, int right) {
    if (left < 0 || right < 0 || symbols[left].freeze || symbols[right].freeze) return;
    const size_t length = symbols[left].length + symbols[right].length;
    const std::string_view piece = std::string_view(normalized).substr(symbols[left].begin, length);
    auto it = mergeable_.find(std::string(piece));
    if (it == mergeable_.end()) return;
    agenda.push({left, right, pieces_[it->second].score, length});
    if (pieces_[it->second].type == Type::Unused) {
      unmerge[std::string(piece)] = {normalized.substr(symbols[left].begin, symbols[left].length),
                                     normalized.substr(symbols[right].begin, symbols[right].length)};
    }
  };
  for (size_t i = 1; i < symbols.size(); ++i) maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.length == 0 || right.length == 0 || left.length + right.length != top.length) continue;  // stale
    left.length += right.length;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.length = 0;
    maybe_add(left.prev, top.left);
    maybe_add(top.left, left.next);
  }

  std::vector<int64_t> ids;
  bool previous_unknown = false;
  std::function<void(const std::string&)> emit = [&](const std::string& piece) {
    auto it = mergeable_.find(piece);
    if (it != mergeable_.end() && pieces_[it->second].type != Type::Unused) {
      ids.push_back(it->second);
      previous_unknown = false;
      return;
    }
    if (auto u = unmerge.find(piece); u != unmerge.end()) {
      emit(u->second.first);
      emit(u->second.second);
      return;
    }
    if (byte_fallback_) {
      for (unsigned char b : piece) ids.push_back(byte_ids_[b] >= 0 ? byte_ids_[b] : unk_id_);
      previous_unknown = false;
      return;
    }
    if (!previous_unknown) ids.push_back(unk_id_);  // consecutive unknown pieces merge into one
    previous_unknown = true;
  };
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) emit(normalized.substr(symbols[i].begin, symbols[i].length));
  return ids;
}

int64_t SentencePieceModel::piece_to_id(std::string_view piece) const {
  const std::string key(piece);
  if (auto it = reserved_.find(key); it != reserved_.end()) return it->second;
  if (auto it = mergeable_.find(key); it != mergeable_.end()) return it->second;
  return unk_id_;
}

const std::string& SentencePieceModel::id_to_piece(int64_t id) const {
  if (id < 0 || id >= size()) fail("{}: token id {} is out of range (vocabulary of {})", name_, id, size());
  return pieces_[static_cast<size_t>(id)].text;
}

std::string SentencePieceModel::decode_pieces(const std::vector<std::string>& pieces) const {
  std::string text;
  const bool strip_bos_space = add_dummy_prefix_ || remove_extra_whitespaces_;
  bool expect_bos_space = true, bos_space_seen = false;
  std::string bytes;  // pending byte pieces
  auto flush_bytes = [&] {
    for (size_t offset = 0; offset < bytes.size();) {
      const size_t n = utf8::valid_char_length(std::string_view(bytes).substr(offset));
      if (n == 0) {
        text += utf8::kReplacement;
        offset += 1;
      } else {
        text.append(bytes, offset, n);
        offset += n;
      }
    }
    bytes.clear();
  };
  for (const auto& piece : pieces) {
    const int64_t id = piece_to_id(piece);
    const Type kind = pieces_[static_cast<size_t>(id)].type;
    if (kind == Type::Byte) {
      bytes += static_cast<char>(piece_byte(piece));
      continue;
    }
    flush_bytes();
    if (bos_space_seen || !text.empty()) expect_bos_space = false;
    bos_space_seen = false;
    if (kind == Type::Control) continue;
    if (kind == Type::Unknown) {
      text += piece == pieces_[static_cast<size_t>(id)].text ? unk_surface_ : piece;
      continue;
    }
    std::string_view view = piece;
    if (expect_bos_space && strip_bos_space && view.substr(0, kSpace.size()) == kSpace) {
      view.remove_prefix(kSpace.size());
      bos_space_seen = !remove_extra_whitespaces_;
    }
    for (size_t i = 0; i < view.size();) {
      if (view.substr(i, kSpace.size()) == kSpace) {
        text += ' ';
        i += kSpace.size();
      } else {
        text += view[i++];
      }
    }
  }
  flush_bytes();
  return text;
}

}  // namespace m3d::text
