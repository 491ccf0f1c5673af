// SentencePiece `tokenizer.model` files read without libsentencepiece (whose
// bundled protobuf-lite clashes with libtorch's protobuf in one process): a
// bounds-checked protobuf wire reader for ModelProto, the identity normalizer,
// BPE merging by piece score with byte fallback, and decoding, as
// sentencepiece 0.2.0 (normalizer.cc, bpe_model.cc, sentencepiece_processor.cc)
// does them. Unigram models and precompiled normalization rules are refused by name.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace m3d::text {

class SentencePieceModel {
 public:
  enum class Type : uint8_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

  // Parses a serialized ModelProto; `name` names the source in errors.
  static SentencePieceModel from_bytes(std::string_view bytes, const std::string& name);
  static SentencePieceModel from_file(const std::string& path);

  // HF's non-legacy Llama tokenizer loads the model with add_dummy_prefix forced off.
  void set_add_dummy_prefix(bool value) { add_dummy_prefix_ = value; }

  // SentencePieceProcessor::EncodeAsIds.
  std::vector<int64_t> encode(std::string_view text) const;
  // SentencePieceProcessor::DecodePieces: each piece is looked up by string, as
  // transformers' slow tokenizers call it.
  std::string decode_pieces(const std::vector<std::string>& pieces) const;

  int64_t size() const { return static_cast<int64_t>(pieces_.size()); }
  int64_t piece_to_id(std::string_view piece) const;  // the unk id when unknown
  const std::string& id_to_piece(int64_t id) const;  // throws when out of range
  Type type(int64_t id) const { return pieces_.at(static_cast<size_t>(id)).type; }
  float score(int64_t id) const { return pieces_.at(static_cast<size_t>(id)).score; }
  int64_t unk_id() const { return unk_id_; }

 private:
  struct Piece {
    std::string text;
    float score = 0;
    Type type = Type::Normal;
  };
  std::string normalize(std::string_view text) const;
  size_t match_user_defined(std::string_view text) const;  // longest user-defined piece at the start, or 0
  // After parsing: the piece maps, the unknown and byte ids, with their checks.
  // One ModelProto.pieces entry (the `index`-th, for messages).
  static Piece read_piece(std::string_view message, const std::string& name, size_t index);
  void index_pieces();

  std::string name_;
  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int64_t> mergeable_;  // Normal, UserDefined and Unused pieces
  std::unordered_map<std::string, int64_t> reserved_;  // Control, Unknown and Byte pieces
  std::vector<std::string> user_defined_;
  int64_t unk_id_ = 0;
  int64_t byte_ids_[256];
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, escape_whitespaces_ = true;
  std::string unk_surface_ = " \xE2\x81\x87 ";
};

}  // namespace m3d::text
