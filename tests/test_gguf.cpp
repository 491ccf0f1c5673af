// GGUF reader and block formats against gguf-py (tools/reference/make_gguf_fixtures.py):
// every block type dequantizes to gguf-py's values bit for bit, the reference
// quantizers write gguf-py's bytes, metadata of every type reads back, llama.cpp's
// names and q/k permutation map back to the HF layout, and corrupt files are
// one-line errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "io/gguf.h"
#include "io/gguf_write.h"
#include "io/inspect.h"
#include "io/safetensors.h"
#include "m3d/error.h"
#include "test_support.h"

namespace m3d::io {
namespace {

using test::fixture;

const nlohmann::json& expected_json() {
  static const nlohmann::json j = test::read_json(fixture("gguf/expected.json"));
  return j;
}

// expected.safetensors: name -> f32 values.
std::vector<float> expected_values(const std::string& name) {
  static const SafetensorsFile st = safetensors_read(fixture("gguf/expected.safetensors"));
  for (const auto& record : st.tensors) {
    if (record.name != name) continue;
    EXPECT_EQ(record.dtype, DType::F32) << name;
    std::vector<float> out(static_cast<size_t>(record.numel()));
    std::memcpy(out.data(), record.data, out.size() * 4);
    return out;
  }
  ADD_FAILURE() << "expected.safetensors has no '" << name << "'";
  return {};
}

// Bitwise equality, so -0.0 vs 0.0 or a changed NaN would show.
void expect_bits_equal(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], 4) != 0 && mismatches++ < 5) { ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " != gguf-py's " << want[i]; }
  }
  EXPECT_EQ(mismatches, 0u) << what;
}

TEST(GgufBlocks, EveryTypeDequantizesLikeGgufPy) {
  const GgufFile gguf = gguf_read(fixture("gguf/blocks.gguf"));
  const auto& tensors = expected_json()["blocks"]["tensors"];
  ASSERT_EQ(gguf.tensors.size(), tensors.size());
  std::set<std::string> types;
  for (const auto& tensor : gguf.tensors) {
    SCOPED_TRACE(tensor.name);
    const auto& want = tensors.at(tensor.name);
    EXPECT_EQ(ggml_type_name(tensor.type), want["type"].get<std::string>());
    EXPECT_EQ(tensor.shape, want["shape"].get<std::vector<int64_t>>());
    expect_bits_equal(gguf_dequantize(tensor), expected_values("blocks/" + tensor.name), tensor.name);
    types.insert(want["type"].get<std::string>());
  }
  for (const char* type :
       {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "F64", "I8", "I16", "I32"}) {
    EXPECT_TRUE(types.count(type)) << type << " is not covered by the fixture";
  }
}

TEST(GgufBlocks, TypeSizesMatchGgufPy) {
  // GGML_QUANT_SIZES in gguf-py's constants.py.
  const std::map<GgmlType, std::pair<int64_t, size_t>> sizes = {
      {GgmlType::Q4_0, {32, 18}},   {GgmlType::Q4_1, {32, 20}},   {GgmlType::Q5_0, {32, 22}},   {GgmlType::Q5_1, {32, 24}},
      {GgmlType::Q8_0, {32, 34}},   {GgmlType::Q2_K, {256, 84}},  {GgmlType::Q3_K, {256, 110}}, {GgmlType::Q4_K, {256, 144}},
      {GgmlType::Q5_K, {256, 176}}, {GgmlType::Q6_K, {256, 210}}, {GgmlType::Q8_K, {256, 292}}, {GgmlType::BF16, {1, 2}},
  };
  for (const auto& [type, size] : sizes) {
    EXPECT_EQ(ggml_type_info(type).block_size, size.first) << ggml_type_name(type);
    EXPECT_EQ(ggml_type_info(type).type_size, size.second) << ggml_type_name(type);
  }
  EXPECT_FALSE(ggml_type_info(4).has_value()) << "ggml removed types 4 and 5";
  EXPECT_FALSE(ggml_type_info(99).has_value());
}

TEST(GgufBlocks, ReferenceQuantizersWriteGgufPysBytes) {
  const GgufFile gguf = gguf_read(fixture("gguf/blocks.gguf"));
  size_t checked = 0;
  for (const char* name : {"t.f32", "t.f16", "t.bf16", "t.q8_0", "t.q4_0", "t.q4_1", "t.q5_0", "t.q5_1"}) {
    SCOPED_TRACE(name);
    const GgufTensor* tensor = gguf.find_tensor(name);
    ASSERT_NE(tensor, nullptr);
    const std::vector<float> source = expected_values(std::string("source/") + name);
    std::vector<uint8_t> bytes(tensor->nbytes + 64, 0xAA);
    const size_t written = ggml_quantize(tensor->type, source.data(), bytes.data(), static_cast<int64_t>(source.size()));
    ASSERT_EQ(written, tensor->nbytes);
    EXPECT_EQ(std::memcmp(bytes.data(), tensor->data, written), 0) << "bytes differ from gguf-py's quantize";
    EXPECT_EQ(bytes[written], 0xAA) << "wrote past the end";
    ++checked;
  }
  EXPECT_EQ(checked, 8u);
  std::vector<uint8_t> out(200);
  const float x[256] = {};
  test::expect_one_line_error([&] { ggml_quantize(GgmlType::Q4_K, x, out.data(), 256); }, "", "no reference quantizer for Q4_K");
  test::expect_one_line_error([&] { ggml_quantize(GgmlType::Q8_0, x, out.data(), 33); }, "", "not a whole number of Q8_0 blocks");
  std::vector<float> y(256);
  test::expect_one_line_error([&] { ggml_dequantize(GgmlType::IQ2_XXS, out.data(), y.data(), 256); }, "", "no reference dequantizer for IQ2_XXS");
}

TEST(GgufBlocks, HalfConversionsRoundToNearestEven) {
  EXPECT_EQ(f32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_fp16(65520.0f), 0x7C00) << "rounds up to inf like numpy";
  EXPECT_EQ(f32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_fp16(1.0f + 1.0f / 2048), 0x3C00) << "tie goes to even";
  EXPECT_EQ(f32_to_fp16(1.0f + 3.0f / 2048), 0x3C02) << "tie goes to even";
  EXPECT_EQ(f32_to_fp16(5.960464477539063e-08f), 0x0001) << "smallest subnormal";
  EXPECT_EQ(f32_to_fp16(2.98023223876953125e-08f), 0x0000) << "half the smallest subnormal ties to 0";
  EXPECT_EQ(fp16_to_f32(0x0001), 5.960464477539063e-08f);
  EXPECT_EQ(fp16_to_f32(0xFC00), -INFINITY);
  EXPECT_TRUE(std::isnan(fp16_to_f32(f32_to_fp16(NAN))));
  for (uint32_t h = 0; h < 0x7C00; ++h) { ASSERT_EQ(f32_to_fp16(fp16_to_f32(static_cast<uint16_t>(h))), h) << "every finite half round-trips"; }
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), 0x3F80) << "tie goes to even";
  EXPECT_EQ(bf16_to_f32(0x3F81), 1.0078125f);
}

// Compares one metadata value with expected.json's {type, element, value}.
void expect_value(const GgufFile& gguf, const std::string& key, const nlohmann::json& want) {
  SCOPED_TRACE(key);
  const GgufValue* v = gguf.find(key);
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(gguf_type_name(v->type), want["type"].get<std::string>());
  EXPECT_EQ(gguf_type_name(v->element), want["element"].get<std::string>());
  const nlohmann::json values = v->is_array() ? want["value"] : nlohmann::json::array({want["value"]});
  ASSERT_EQ(v->count, values.size());
  for (uint64_t i = 0; i < v->count; ++i) {
    switch (v->element) {
      case GgufType::STRING:
        EXPECT_EQ(v->strings[i], values[i].get<std::string>());
        break;
      case GgufType::BOOL:
        EXPECT_EQ(v->bool_at(i, key), values[i].get<bool>());
        break;
      case GgufType::F32:
      case GgufType::F64:
        EXPECT_EQ(v->float_at(i, key), values[i].get<double>());
        break;
      case GgufType::U64: {
        uint64_t raw;
        std::memcpy(&raw, v->data + 8 * i, 8);
        EXPECT_EQ(raw, values[i].get<uint64_t>());
        break;
      }
      default:
        EXPECT_EQ(v->int_at(i, key), values[i].get<int64_t>());
        break;
    }
  }
}

TEST(GgufReader, MetadataOfEveryTypeEqualsWhatGgufPyWrote) {
  for (const char* name : {"blocks", "tiny_llama"}) {
    const GgufFile gguf = gguf_read(fixture(std::string("gguf/") + name + ".gguf"));
    const auto& want = expected_json()[name]["metadata"];
    EXPECT_EQ(gguf.version, 3u);
    EXPECT_EQ(gguf.metadata.size(), want.size()) << name;
    for (const auto& [key, value] : want.items()) expect_value(gguf, key, value);
  }
  const GgufFile gguf = gguf_read(fixture("gguf/blocks.gguf"));
  std::set<GgufType> types;
  for (const auto& [key, value] : gguf.metadata) types.insert(value.is_array() ? value.element : value.type);
  EXPECT_EQ(types.size(), 12u) << "every scalar type, in arrays too";
}

TEST(GgufReader, TypedAccessorsConvertOrNameTheKey) {
  const GgufFile gguf = gguf_read(fixture("gguf/blocks.gguf"));
  const std::string path = fixture("gguf/blocks.gguf");
  EXPECT_EQ(gguf.get_int("test.i8"), -128);
  EXPECT_EQ(gguf.get_int("test.u32"), 4294967295LL);
  EXPECT_EQ(gguf.get_float("test.f32"), static_cast<double>(0.1f));
  EXPECT_EQ(gguf.get_bool("test.bool_true"), true);
  EXPECT_EQ(gguf.get_string("test.string"), "héllo, GGUF ✓");
  EXPECT_EQ(gguf.get_ints("test.array.i16"), (std::vector<int64_t>{-32768, 32767}));
  EXPECT_EQ(gguf.get_floats("test.array.f64"), (std::vector<double>{2.5, -1e-300}));
  EXPECT_EQ(gguf.get_strings("test.array.string"), (std::vector<std::string>{"a", "", "ü ß 中"}));
  EXPECT_FALSE(gguf.get_int("absent").has_value());
  EXPECT_TRUE(gguf.get_strings("absent").empty());
  test::expect_one_line_error([&] { gguf.get_int("test.string"); }, path, "metadata 'test.string'");
  test::expect_one_line_error([&] { gguf.get_int("test.u64"); }, path, "is too large");
  test::expect_one_line_error([&] { gguf.get_int("test.array.u8"); }, path, "is [UINT8; 3], expected an integer");
  test::expect_one_line_error([&] { gguf.get_strings("test.array.u8"); }, path, "expected an array of STRING");
  test::expect_one_line_error([&] { gguf.get_float("test.i32"); }, path, "expected FLOAT32 or FLOAT64");
  EXPECT_EQ(gguf.find("test.array.u32")->summary(), "[7, 4294967295]");
  EXPECT_EQ(gguf.find("test.array.string")->summary(2), "['a', '', ... (3 STRING)]");
}

TEST(GgufReader, TensorsPointIntoTheMappedFileAtTheAlignment) {
  const GgufFile gguf = gguf_read(fixture("gguf/blocks.gguf"));
  EXPECT_EQ(gguf.alignment, 64u);
  EXPECT_EQ(gguf.data_offset % 64, 0u);
  const uint8_t* begin = gguf.file->data();
  for (const auto& tensor : gguf.tensors) {
    EXPECT_EQ(tensor.data, begin + gguf.data_offset + tensor.offset) << tensor.name;
    EXPECT_EQ(tensor.offset % 64, 0u) << tensor.name;
    EXPECT_LE(tensor.data + tensor.nbytes, begin + gguf.file->size()) << tensor.name;
    EXPECT_EQ(tensor.nbytes, static_cast<uint64_t>(tensor.rows()) * tensor.row_bytes()) << tensor.name;
  }
  const GgufTensor* f32 = gguf.find_tensor("t.f32");
  const auto record = gguf_tensor_record(gguf, *f32);
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->data, f32->data) << "zero-copy";
  EXPECT_EQ(record->shape, (std::vector<int64_t>{3, 512}));
  EXPECT_EQ(record->nbytes(), f32->nbytes);
  EXPECT_FALSE(gguf_tensor_record(gguf, *gguf.find_tensor("t.q4_k")).has_value());
  EXPECT_EQ(gguf_tensor_record(gguf, *gguf.find_tensor("t.i16"))->dtype, DType::I16);
}

TEST(GgufLlama, NamesMapLikeGgufPysTensorNameMap) {
  size_t checked = 0;
  for (const auto& [arch, pairs] : expected_json()["tiny_llama"]["names"].items()) {
    for (const auto& [hf, gguf_name] : pairs.items()) {
      EXPECT_EQ(gguf_name_from_hf(hf), gguf_name.get<std::string>()) << arch << " " << hf;
      EXPECT_EQ(gguf_name_to_hf(gguf_name.get<std::string>()), hf) << arch << " " << hf;
      ++checked;
    }
  }
  EXPECT_GE(checked, 40u);
  EXPECT_FALSE(gguf_name_to_hf("rope_freqs.weight").has_value());
  EXPECT_FALSE(gguf_name_to_hf("blk.x.attn_q.weight").has_value());
  EXPECT_FALSE(gguf_name_to_hf("blk.0.attn_q").has_value());
  EXPECT_EQ(gguf_name_to_hf("blk.0.attn_qkv.weight"), "model.layers.0.self_attn.qkv_proj.weight");
}

TEST(GgufLlama, UnpermutedQkRowsEqualTheHfWeights) {
  const GgufFile gguf = gguf_read(fixture("gguf/tiny_llama.gguf"));
  ASSERT_TRUE(gguf_arch_permutes_qk(gguf.architecture()));
  const HfConfig config = gguf_hf_config(gguf);
  size_t checked = 0;
  for (const auto& tensor : gguf.tensors) {
    const auto hf = gguf_name_to_hf(tensor.name);
    ASSERT_TRUE(hf.has_value()) << tensor.name;
    EXPECT_EQ(*hf, expected_json()["tiny_llama"]["tensors"].at(tensor.name)["hf"].get<std::string>());
    expect_bits_equal(gguf_dequantize(tensor), expected_values("tiny/" + tensor.name), tensor.name);
    const bool q = hf->find("q_proj.weight") != std::string::npos, k = hf->find("k_proj.weight") != std::string::npos;
    if (!q && !k) continue;
    SCOPED_TRACE(*hf);
    const int64_t heads = q ? *config.num_attention_heads : *config.num_key_value_heads;
    const std::vector<int64_t> source = gguf_rope_unpermute_rows(tensor.rows(), heads);
    std::vector<uint8_t> bytes(tensor.nbytes);
    for (int64_t r = 0; r < tensor.rows(); ++r) {
      std::memcpy(bytes.data() + r * tensor.row_bytes(), tensor.data + source[r] * tensor.row_bytes(), tensor.row_bytes());
    }
    std::vector<float> values(static_cast<size_t>(tensor.numel()));
    ggml_dequantize(tensor.type, bytes.data(), values.data(), tensor.numel());
    expect_bits_equal(values, expected_values("hf/" + *hf), *hf);
    ++checked;
  }
  EXPECT_EQ(checked, 4u) << "q and k of both layers, in F32, Q8_0 and Q4_0";
  test::expect_one_line_error([] { gguf_rope_unpermute_rows(30, 4); }, "", "multiple of 2 x heads");
}

TEST(GgufLlama, ConfigFromMetadataEqualsTheHfConfig) {
  const GgufFile gguf = gguf_read(fixture("gguf/tiny_llama.gguf"));
  const auto& want = expected_json()["tiny_llama"]["config"];
  const HfConfig c = gguf_hf_config(gguf);
  EXPECT_EQ(c.architectures, want["architectures"].get<std::vector<std::string>>());
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, want["hidden_size"].get<int64_t>());
  EXPECT_EQ(c.intermediate_size, want["intermediate_size"].get<int64_t>());
  EXPECT_EQ(c.num_hidden_layers, want["num_hidden_layers"].get<int64_t>());
  EXPECT_EQ(c.num_attention_heads, want["num_attention_heads"].get<int64_t>());
  EXPECT_EQ(c.num_key_value_heads, want["num_key_value_heads"].get<int64_t>());
  EXPECT_EQ(c.vocab_size, want["vocab_size"].get<int64_t>());
  EXPECT_EQ(c.max_position_embeddings, want["max_position_embeddings"].get<int64_t>());
  EXPECT_EQ(c.rms_norm_eps, want["rms_norm_eps"].get<double>());
  EXPECT_EQ(c.rope_theta, want["rope_theta"].get<double>());
  EXPECT_EQ(c.tie_word_embeddings, false);
  for (const auto& [key, value] : want.items()) EXPECT_EQ(c.raw[key], value) << key;
  EXPECT_FALSE(c.raw.contains("rope_scaling"));
  const GgufFile blocks = gguf_read(fixture("gguf/blocks.gguf"));
  test::expect_one_line_error([&] { gguf_hf_config(blocks); }, fixture("gguf/blocks.gguf"),
                              "architecture 'm3d_test' has no config mapping (supported: llama, qwen2)");
}

TEST(GgufLlama, TokenizerFromMetadata) {
  const GgufFile gguf = gguf_read(fixture("gguf/tiny_llama.gguf"));
  const auto& meta = expected_json()["tiny_llama"]["metadata"];
  const GgufTokenizer t = gguf_tokenizer(gguf);
  EXPECT_EQ(t.model, "gpt2");
  EXPECT_EQ(t.pre, "smollm");
  EXPECT_EQ(t.tokens, meta["tokenizer.ggml.tokens"]["value"].get<std::vector<std::string>>());
  EXPECT_EQ(t.token_types, meta["tokenizer.ggml.token_type"]["value"].get<std::vector<int32_t>>());
  EXPECT_EQ(t.merges, meta["tokenizer.ggml.merges"]["value"].get<std::vector<std::string>>());
  EXPECT_TRUE(t.scores.empty());
  EXPECT_EQ(t.bos_token_id, 1);
  EXPECT_EQ(t.eos_token_id, 2);
  EXPECT_EQ(t.unknown_token_id, 0);
  EXPECT_EQ(t.padding_token_id, 2);
  EXPECT_EQ(t.add_bos_token, false);
  EXPECT_FALSE(t.add_eos_token.has_value());
  EXPECT_EQ(t.chat_template, meta["tokenizer.chat_template"]["value"].get<std::string>());
  test::expect_one_line_error([] { gguf_tokenizer(gguf_read(fixture("gguf/blocks.gguf"))); }, "blocks.gguf", "'tokenizer.ggml.model' is missing");
}

TEST(GgufInspect, SummaryCountsElementsAndStoredBytesPerModuleAndType) {
  const GgufFile gguf = gguf_read(fixture("gguf/tiny_llama.gguf"));
  const CheckpointSummary s = gguf_summarize(gguf);
  EXPECT_EQ(s.architecture, "llama");
  EXPECT_EQ(s.format, "gguf v3");
  int64_t parameters = 0;
  std::map<std::string, size_t> types;
  for (const auto& [name, t] : expected_json()["tiny_llama"]["tensors"].items()) {
    int64_t n = 1;
    for (const auto& d : t["shape"]) n *= d.get<int64_t>();
    parameters += n;
    types[t["type"].get<std::string>()] += 1;
  }
  EXPECT_EQ(s.parameters, parameters);
  EXPECT_EQ(s.dtypes, types);
  EXPECT_EQ(s.bytes, gguf.file->size() - gguf.data_offset) << "the tensors fill the data section";
  uint64_t by_type = 0;
  for (const auto& [type, bytes] : s.dtype_bytes) by_type += bytes;
  EXPECT_EQ(by_type, s.bytes);
  std::vector<std::string> modules;
  for (const auto& m : s.modules) modules.push_back(m.name);
  EXPECT_EQ(modules, (std::vector<std::string>{"blk", "output", "output_norm", "token_embd"}));
  EXPECT_EQ(s.config["hidden_size"], 64);
  EXPECT_EQ(s.config["num_key_value_heads"], 2);
  EXPECT_EQ(s.metadata.at("tokenizer.ggml.tokens"), "['<|endoftext|>', '<|im_start|>', '<|im_end|>', 'a', ... (32 STRING)]");
  EXPECT_EQ(s.metadata.at("tokenizer.chat_template").find('\n'), std::string::npos) << "one line per key";
  const std::string text = summary_text(s, true);
  EXPECT_NE(text.find("Q8_0"), std::string::npos) << text;
  EXPECT_NE(text.find("blk.1.attn_k.weight  Q4_0 [32, 64]"), std::string::npos) << text;
}

// --- hand-built files for the corrupt cases ---

struct Bytes {
  std::vector<uint8_t> b;
  Bytes& u8(uint8_t v) {
    b.push_back(v);
    return *this;
  }
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  Bytes& raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  Bytes& add(const Bytes& other) { return raw(other.b.data(), other.b.size()); }
};

Bytes kv_string(const std::string& key, const std::string& value) { return Bytes().str(key).u32(8).str(value); }
Bytes kv_u32(const std::string& key, uint32_t value) { return Bytes().str(key).u32(4).u32(value); }
Bytes tensor_info(const std::string& name, const std::vector<uint64_t>& dims, uint32_t type, uint64_t offset) {
  Bytes out;
  out.str(name).u32(static_cast<uint32_t>(dims.size()));
  for (uint64_t d : dims) out.u64(d);
  return out.u32(type).u64(offset);
}

// A file with the given key/values and tensor infos, padded to `alignment`, then `data` zero bytes.
std::vector<uint8_t> gguf_file(const std::vector<Bytes>& kvs, const std::vector<Bytes>& infos, size_t data, uint32_t version = 3, uint64_t alignment = 32) {
  Bytes out;
  out.raw("GGUF", 4).u32(version).u64(infos.size()).u64(kvs.size());
  for (const auto& kv : kvs) out.add(kv);
  for (const auto& info : infos) out.add(info);
  out.b.resize(out.b.size() + (alignment - out.b.size() % alignment) % alignment + data, 0);
  return out.b;
}

TEST(GgufReader, HandBuiltFileOfVersion2WithAnEmptyArrayReads) {
  const auto arch = kv_string("general.architecture", "x");
  const auto empty = Bytes().str("empty").u32(9).u32(4).u64(0);
  const auto bytes = gguf_file({arch, empty}, {tensor_info("w", {4, 2}, 0, 0), tensor_info("b", {4}, 1, 32)}, 64, 2);
  const GgufFile gguf = gguf_parse(MappedFile::from_bytes("v2.gguf", bytes.data(), bytes.size()));
  EXPECT_EQ(gguf.version, 2u);
  EXPECT_EQ(gguf.architecture(), "x");
  EXPECT_TRUE(gguf.get_ints("empty").empty());
  ASSERT_EQ(gguf.tensors.size(), 2u);
  EXPECT_EQ(gguf.tensors[0].shape, (std::vector<int64_t>{2, 4})) << "GGUF dims are innermost first";
  EXPECT_EQ(gguf.tensors[1].nbytes, 8u);
}

struct CorruptCase {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* message;
};

std::vector<CorruptCase> corrupt_cases() {
  const auto arch = kv_string("general.architecture", "x");
  const auto w = tensor_info("w", {4}, 0, 0);
  std::vector<uint8_t> truncated_header = gguf_file({arch}, {w}, 16);
  truncated_header.resize(60);  // inside the first key/value
  std::vector<uint8_t> truncated_data = gguf_file({arch}, {w}, 16);
  truncated_data.resize(truncated_data.size() - 1);
  std::vector<uint8_t> no_data = gguf_file({arch}, {w}, 0);
  no_data.resize(no_data.size() - 1);  // the header's padding is cut short too
  const Bytes huge_string = Bytes().u64(uint64_t{1} << 60);
  return {
      {"empty", {}, "not a GGUF file"},
      {"bad_magic", {'G', 'G', 'U', 'G', 3, 0, 0, 0}, "not a GGUF file"},
      {"version_1", gguf_file({arch}, {}, 0, 1), "version 1 is not supported"},
      {"version_4", gguf_file({arch}, {}, 0, 4), "version 4 is not supported"},
      {"big_endian", gguf_file({arch}, {}, 0, 3u << 24), "big-endian GGUF files are not supported"},
      {"truncated_header", truncated_header, "run past the end of the file"},
      {"huge_tensor_count", Bytes().raw("GGUF", 4).u32(3).u64(uint64_t{1} << 62).u64(0).b, "tensor count 4611686018427387904"},
      {"huge_kv_count", Bytes().raw("GGUF", 4).u32(3).u64(0).u64(~uint64_t{0}).b, "cannot fit"},
      {"huge_key_length", Bytes().raw("GGUF", 4).u32(3).u64(0).u64(1).add(huge_string).u64(0).u64(0).b, "metadata key 0: length"},
      {"huge_string_value", gguf_file({Bytes().str("k").u32(8).add(huge_string)}, {}, 0), "metadata 'k': length 1152921504606846976"},
      {"huge_array", gguf_file({Bytes().str("k").u32(9).u32(6).u64(uint64_t{1} << 61)}, {}, 0), "metadata 'k': array length"},
      {"unknown_type", gguf_file({Bytes().str("k").u32(13).u32(0)}, {}, 0), "metadata 'k': unknown value type 13"},
      {"nested_array", gguf_file({Bytes().str("k").u32(9).u32(9).u64(1)}, {}, 0), "arrays of arrays"},
      {"bad_bool", gguf_file({Bytes().str("k").u32(7).u8(2)}, {}, 0), "bool value 2 is neither 0 nor 1"},
      {"duplicate_key", gguf_file({arch, arch}, {}, 0), "metadata 'general.architecture': appears twice"},
      {"empty_key", gguf_file({kv_u32("", 1)}, {}, 0), "metadata key 0 is empty"},
      {"alignment_type", gguf_file({Bytes().str("general.alignment").u32(10).u64(32)}, {}, 0), "expected UINT32"},
      {"alignment_not_pow2", gguf_file({kv_u32("general.alignment", 48)}, {w}, 16, 3, 48), "48 is not a power of two"},
      {"tensor_beyond_file", gguf_file({arch}, {tensor_info("w", {4}, 0, 32)}, 16), "tensor 'w': byte range [32, 48) exceeds"},
      {"truncated_data", truncated_data, "tensor 'w': 4 blocks of F32 (4 bytes each) exceed the data section of 15 bytes"},
      {"no_data_section", no_data, "past the end of the file"},
      {"misaligned_offset", gguf_file({arch}, {tensor_info("w", {4}, 0, 4)}, 64), "offset 4 is not a multiple of the alignment 32"},
      {"unknown_ggml_type", gguf_file({arch}, {tensor_info("w", {4}, 99, 0)}, 16), "unknown ggml type 99"},
      {"partial_block", gguf_file({arch}, {tensor_info("w", {33}, 8, 0)}, 64), "33 elements are not a whole number of Q8_0 blocks"},
      {"five_dims", gguf_file({arch}, {tensor_info("w", {1, 1, 1, 1, 1}, 0, 0)}, 32), "5 dimensions"},
      {"overflowing_dims", gguf_file({arch}, {tensor_info("w", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0)}, 32), "overflow 64 bits"},
      {"huge_dims", gguf_file({arch}, {tensor_info("w", {uint64_t{1} << 40, 4}, 0, 0)}, 32), "exceed the data section"},
      {"overlap", gguf_file({arch}, {tensor_info("a", {16}, 0, 0), tensor_info("b", {4}, 0, 32)}, 64), "tensors 'a' and 'b' overlap"},
      {"duplicate_tensor", gguf_file({arch}, {w, tensor_info("w", {4}, 0, 32)}, 64), "tensor 'w': appears twice"},
      {"long_name", gguf_file({arch}, {tensor_info(std::string(64, 'n'), {4}, 0, 0)}, 16), "more than GGUF's 63"},
  };
}

TEST(GgufReader, CorruptFilesGiveOneLineErrorsNamingFileAndProblem) {
  const std::string dir = test::temp_dir();
  for (const auto& c : corrupt_cases()) {
    const std::string path = dir + "/" + c.name + ".gguf";
    test::write_bytes(path, c.bytes);
    SCOPED_TRACE(c.name);
    test::expect_one_line_error([&] { gguf_read(path); }, path, c.message);
  }
}

TEST(GgufReader, EveryTruncationOfARealFileIsAnError) {
  const auto bytes = test::read_bytes(fixture("gguf/tiny_llama.gguf"));
  const GgufFile whole = gguf_parse(MappedFile::from_bytes("whole.gguf", bytes.data(), bytes.size()));
  const size_t last_end = whole.data_offset + whole.tensors.back().offset + whole.tensors.back().nbytes;
  ASSERT_EQ(last_end, bytes.size()) << "the last tensor ends the file";
  for (size_t size = 0; size < bytes.size(); size += (size < whole.data_offset ? 7 : 997)) {
    SCOPED_TRACE(size);
    EXPECT_THROW(gguf_parse(MappedFile::from_bytes("cut.gguf", bytes.data(), size)), Error);
  }
  EXPECT_THROW(gguf_parse(MappedFile::from_bytes("cut.gguf", bytes.data(), bytes.size() - 1)), Error);
}

TEST(GgufReader, HasMagicLooksAtTheFirstBytesOnly) {
  EXPECT_TRUE(gguf_has_magic(fixture("gguf/blocks.gguf")));
  EXPECT_FALSE(gguf_has_magic(fixture("gguf/expected.json")));
  EXPECT_FALSE(gguf_has_magic(test::temp_dir() + "/absent.gguf"));
  EXPECT_THROW(gguf_read(test::temp_dir() + "/absent.gguf"), Error);
}

// m3d quantize's writer against gguf-py's GGUFWriter on the same content
// (tools/reference/make_gguf_write_fixture.py restates these values).
TEST(GgufWrite, BytesEqualGgufPysWriter) {
  using V = io::GgufWriteValue;
  const std::vector<std::pair<std::string, V>> metadata = {
      {"general.architecture", V::string("m3d")},
      {"general.name", V::string("LamedPhi3ForCausalLM")},
      {"m3d.count", V::u32(7)},
      {"m3d.offset", V::i32(-3)},
      {"m3d.scale", V::f32(0.5f)},
      {"m3d.flag", V::boolean(true)},
      {"m3d.big", V::u64(uint64_t{1} << 40)},
      {"m3d.long_names", V::string_array({"model.a.very.long.name", "x"})},
      {"m3d.ids", V::i32_array({1, -2, 3})},
  };
  io::GgufWriteTensor plain{"plain", io::GgmlType::F32, {2, 3}, {}};
  for (int i = 0; i < 6; ++i) {
    const float v = static_cast<float>(i) / 4;
    const auto* b = reinterpret_cast<const uint8_t*>(&v);
    plain.bytes.insert(plain.bytes.end(), b, b + 4);
  }
  io::GgufWriteTensor blocks{"blocks", io::GgmlType::Q8_0, {2, 32}, std::vector<uint8_t>(68)};
  for (int r = 0; r < 2; ++r) {
    float row[32];
    for (int j = 0; j < 32; ++j) row[j] = static_cast<float>(j - 16) * static_cast<float>(r + 1) / 8;
    io::ggml_quantize(io::GgmlType::Q8_0, row, blocks.bytes.data() + 34 * r, 32);
  }
  const std::string path = test::temp_dir() + "/written.gguf";
  io::gguf_write(path, metadata, {plain, blocks});
  EXPECT_EQ(test::read_bytes(path), test::read_bytes(test::fixture("gguf/written.gguf")));
  const io::GgufFile back = io::gguf_read(path);
  EXPECT_EQ(back.get_strings("m3d.long_names"), (std::vector<std::string>{"model.a.very.long.name", "x"}));
  EXPECT_EQ(back.find_tensor("blocks")->type, io::GgmlType::Q8_0);
}

TEST(GgufWrite, RefusesWhatGgufCannotHold) {
  const std::string path = test::temp_dir() + "/bad.gguf";
  io::GgufWriteTensor wrong_bytes{"t", io::GgmlType::F32, {2, 3}, std::vector<uint8_t>(20)};
  EXPECT_THROW(io::gguf_write(path, {}, {wrong_bytes}), m3d::Error);
  io::GgufWriteTensor partial_block{"t", io::GgmlType::Q8_0, {1, 40}, std::vector<uint8_t>(34)};
  EXPECT_THROW(io::gguf_write(path, {}, {partial_block}), m3d::Error);
  io::GgufWriteTensor long_name{std::string(64, 'n'), io::GgmlType::F32, {1}, std::vector<uint8_t>(4)};
  EXPECT_THROW(io::gguf_write(path, {}, {long_name}), m3d::Error);
  EXPECT_FALSE(std::filesystem::exists(path));  // nothing left under the final name
}

}  // namespace
}  // namespace m3d::io
