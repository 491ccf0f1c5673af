// GGUF (llama.cpp's model file, ggml docs/gguf.md), versions 2 and 3,
// little-endian: magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
// metadata key/values (typed scalars, strings, arrays), tensor infos (name, dims
// innermost first, ggml type, offset), padding to `general.alignment` (default 32),
// then the data section. Every count, length and offset is checked against the
// file before it is used; tensors point into the memory-mapped file (zero-copy).
// Beside the reader: llama.cpp tensor names <-> Hugging Face names for the llama
// family, undoing the converter's q/k rotary row permutation, and the config and
// tokenizer that llama.cpp's converter stored in the metadata.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/gguf_blocks.h"
#include "io/hf_config.h"
#include "io/tensor_record.h"

namespace m3d::io {

// Metadata value types; values are GGUF's `gguf_metadata_value_type`.
enum class GgufType : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 };
std::string_view gguf_type_name(GgufType type);  // "UINT8", ..., as gguf-py spells them

struct GgufValue {
  GgufType type = GgufType::U8;  // ARRAY for arrays
  GgufType element = GgufType::U8;  // the element type of an array; == type for a scalar
  uint64_t count = 1;  // elements (1 for a scalar)
  const uint8_t* data = nullptr;  // numeric and bool elements, little-endian, in the mapped file
  std::vector<std::string> strings;  // STRING scalar (one) or array elements

  bool is_array() const { return type == GgufType::ARRAY; }
  // Element i converted; throw m3d::Error (naming `where`) when the element type
  // does not fit: integers (any width, range-checked) / floats (F32, F64) / BOOL.
  int64_t int_at(uint64_t i, const std::string& where) const;
  double float_at(uint64_t i, const std::string& where) const;
  bool bool_at(uint64_t i, const std::string& where) const;
  // "UINT32", "[STRING; 49152]"
  std::string type_string() const;
  // Short human form for listings: scalars in full, arrays as their first items.
  std::string summary(size_t max_items = 4) const;
};

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> shape;  // outermost first, as numpy/torch: the reverse of GGUF's dims
  uint64_t offset = 0;  // in the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // in the mapped file

  int64_t numel() const;
  int64_t rows() const;  // product of all but the last dimension (1 for 0-d/1-d)
  size_t row_bytes() const;  // bytes of one row of shape.back() elements
};

struct GgufFile {
  std::shared_ptr<const MappedFile> file;
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  // start of the data section in the file
  std::vector<std::pair<std::string, GgufValue>> metadata;  // in file order
  std::vector<GgufTensor> tensors;  // in file order

  const GgufValue* find(const std::string& key) const;
  const GgufTensor* find_tensor(const std::string& name) const;
  // Typed metadata lookups: nullopt / empty when the key is absent, m3d::Error
  // naming the file and key when it holds another type.
  std::optional<std::string> get_string(const std::string& key) const;
  std::optional<int64_t> get_int(const std::string& key) const;
  std::optional<double> get_float(const std::string& key) const;  // F32 / F64
  std::optional<bool> get_bool(const std::string& key) const;
  std::vector<std::string> get_strings(const std::string& key) const;
  std::vector<int64_t> get_ints(const std::string& key) const;
  std::vector<double> get_floats(const std::string& key) const;
  // general.architecture; throws when it is missing.
  std::string architecture() const;
};

// Largest counts and lengths accepted before anything is allocated; real files are far below.
constexpr uint32_t kGgufMaxDims = 4;  // GGML_MAX_DIMS
constexpr size_t kGgufMaxName = 63;  // GGML_MAX_NAME - 1
// m3d's own GGUF checkpoints (m3d quantize): a tensor whose HF name is longer than
// kGgufMaxName is stored as kGgufLongNamePrefix + i, its name in kGgufLongNamesKey[i].
constexpr const char* kGgufLongNamePrefix = "m3d.long.";
constexpr const char* kGgufLongNamesKey = "m3d.long_names";

// True when the file starts with the GGUF magic (reads 4 bytes).
bool gguf_has_magic(const std::string& path);
GgufFile gguf_read(const std::string& path);
// Parses bytes that are already mapped; errors name file->path().
GgufFile gguf_parse(std::shared_ptr<const MappedFile> file);

// Decodes a whole tensor to f32, row-major in `shape` order.
std::vector<float> gguf_dequantize(const GgufTensor& tensor);
// The tensor as a TensorRecord when its type is a plain dtype (F32, F16, BF16,
// F64, I8, I16, I32, I64); nullopt for block-quantized types.
std::optional<TensorRecord> gguf_tensor_record(const GgufFile& gguf, const GgufTensor& tensor);

// --- llama family: names, rotary permutation, config, tokenizer ---

// llama.cpp's name for a Hugging Face llama-family key and back:
// model.embed_tokens <-> token_embd, model.layers.N.self_attn.q_proj <-> blk.N.attn_q,
// model.norm <-> output_norm, lm_head <-> output, ... (suffix .weight/.bias kept).
// nullopt for names outside the table (e.g. rope_freqs).
std::optional<std::string> gguf_name_to_hf(const std::string& gguf_name);
std::optional<std::string> gguf_name_from_hf(const std::string& hf_name);

// llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute) stores the
// rows of q_proj (heads = num_attention_heads) and k_proj (heads =
// num_key_value_heads) reordered from HF's rotate-half RoPE layout to ggml's
// interleaved one. With d = rows / heads, row h*d + i*(d/2) + j of HF's weight
// (head h, half i in {0, 1}, j < d/2) is row h*d + 2j + i of the GGUF tensor.
// Returns, for each HF row r, the GGUF row it is read from. Rows of any block
// type move as whole byte rows, so this undoes the permutation without
// dequantizing. Throws when rows is not a multiple of 2 * heads.
std::vector<int64_t> gguf_rope_unpermute_rows(int64_t rows, int64_t heads);
// True for the architectures whose converter applies that permutation (llama).
bool gguf_arch_permutes_qk(const std::string& architecture);

// A config.json equivalent from `{arch}.*` metadata for the llama family
// (llama, qwen2): hidden_size <- embedding_length, intermediate_size <-
// feed_forward_length, num_hidden_layers <- block_count, num_attention_heads(_kv)
// <- attention.head_count(_kv), rms_norm_eps <- attention.layer_norm_rms_epsilon,
// rope_theta <- rope.freq_base, max_position_embeddings <- context_length,
// vocab_size <- vocab_size or the token list, tie_word_embeddings when there is no
// output.weight; rope scaling keys go to raw["rope_scaling"] so the decoder can
// refuse them. Throws naming the file and key for other architectures or missing keys.
HfConfig gguf_hf_config(const GgufFile& gguf);

// tokenizer.ggml.* as stored by llama.cpp's converter, as data.
struct GgufTokenizer {
  std::string model;  // "gpt2" (byte-level BPE) | "llama" (SentencePiece) | ...
  std::string pre;  // pre-tokenizer name, e.g. "smollm", "llama-bpe", "default"
  std::vector<std::string> tokens;
  std::vector<float> scores;  // empty when absent
  std::vector<int32_t> token_types;  // 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
  std::vector<std::string> merges;  // "a b", BPE only
  std::optional<int64_t> bos_token_id, eos_token_id, unknown_token_id, padding_token_id;
  std::optional<bool> add_bos_token, add_eos_token, add_space_prefix;
  std::string chat_template;  // tokenizer.chat_template, "" when absent
  std::string model_name;  // general.name: llama.cpp keys Phi-3's special-token whitespace rule on it
};
// Throws when tokenizer.ggml.model or tokens are missing or the arrays disagree in length
// or a special id is outside the vocabulary.
GgufTokenizer gguf_tokenizer(const GgufFile& gguf);

}  // namespace m3d::io
