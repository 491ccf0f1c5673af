// m3d quantize (models/quantize.h).
#include "models/quantize.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>

#include "core/strings.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/gguf_write.h"
#include "io/hf_config.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/causal_lm.h"
#include "models/layers.h"
#include "models/quant_matmul.h"

namespace m3d::models {
namespace fs = std::filesystem;
namespace {

// The "<module>.weight" keys of every Linear (and the embedding) of the built model.
std::set<std::string> linear_weights(torch::nn::Module& root) {
  std::set<std::string> keys;
  for (const auto& item : root.named_modules()) {
    if (dynamic_cast<LinearImpl*>(item.value().get()) != nullptr) keys.insert(item.key() + ".weight");
  }
  return keys;
}

bool in_llm(const std::string& key) { return key.rfind("model.layers.", 0) == 0 || key == "lm_head.weight"; }

// The decoder layer a key belongs to ("model.layers.7.mlp.down_proj.weight" -> 7), -1 if none.
int64_t layer_of(const std::string& key) {
  static const std::string prefix = "model.layers.";
  if (key.rfind(prefix, 0) != 0) return -1;
  return std::strtoll(key.c_str() + prefix.size(), nullptr, 10);
}

// llama-quant.cpp's use_more_bits: the first and last eighth of the layers and every third between.
bool use_more_bits(int64_t layer, int64_t layers) { return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2; }

// The type `key` gets before the row-length fallback (QuantizeOptions::k_m_mixture).
io::GgmlType intended_type(const QuantizeOptions& options, const std::string& key, int64_t layers) {
  if (!options.k_m_mixture) return options.type;
  if (key == "lm_head.weight") return io::GgmlType::Q6_K;
  const bool sensitive = ends_with(key, ".self_attn.v_proj.weight") || ends_with(key, ".mlp.down_proj.weight");
  return sensitive && use_more_bits(layer_of(key), layers) ? io::GgmlType::Q6_K : options.type;
}

// The type a weight of `cols` columns gets: `type` when whole blocks fit, a 32-element
// type of at least as many bits for a K type that does not, nullopt when none fits.
std::optional<io::GgmlType> type_for(io::GgmlType type, int64_t cols) {
  if (cols % io::ggml_type_info(type).block_size == 0) return type;
  const io::GgmlType fallback = type == io::GgmlType::Q4_K ? io::GgmlType::Q4_0 : io::GgmlType::Q8_0;
  if (cols % io::ggml_type_info(fallback).block_size == 0) return fallback;
  return std::nullopt;
}

std::vector<uint8_t> quantize_rows(io::GgmlType type, const at::Tensor& weight) {
  const at::Tensor w = weight.to(at::kFloat).contiguous();
  const int64_t rows = w.size(0), cols = w.size(1);
  const io::GgmlTypeInfo& info = io::ggml_type_info(type);
  const size_t row_bytes = static_cast<size_t>(cols / info.block_size) * info.type_size;
  std::vector<uint8_t> bytes(static_cast<size_t>(rows) * row_bytes);
  const float* src = w.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (type == io::GgmlType::Q4_K || type == io::GgmlType::Q6_K) {
        quant_quantize_k(type, src + r * cols, bytes.data() + r * row_bytes, cols);
      } else {
        io::ggml_quantize(type, src + r * cols, bytes.data() + r * row_bytes, cols);
      }
    }
  });
  return bytes;
}

// A plain tensor in its own dtype (F32, F16, BF16; others as F32).
io::GgufWriteTensor plain_tensor(const std::string& name, const io::TensorRecord& record) {
  io::GgufWriteTensor t;
  t.name = name;
  t.shape = record.shape.empty() ? std::vector<int64_t>{1} : record.shape;
  at::Tensor source = io::tensor_from_record(record).contiguous();
  if (record.dtype == DType::F16) {
    t.type = io::GgmlType::F16;
  } else if (record.dtype == DType::BF16) {
    t.type = io::GgmlType::BF16;
  } else {
    t.type = io::GgmlType::F32;
    source = source.to(at::kFloat);
  }
  const auto* data = static_cast<const uint8_t*>(source.data_ptr());
  t.bytes.assign(data, data + source.nbytes());
  return t;
}

void copy_side_files(const std::string& dir, const std::string& out_dir) {
  static const std::set<std::string> kWeights = {".safetensors", ".bin", ".pt", ".pth", ".gguf"};
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    if (kWeights.count(entry.path().extension().string()) || name.find(".index.json") != std::string::npos) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) fail("{}: cannot read", entry.path().string());
    io::write_file_atomic((fs::path(out_dir) / name).string(), bytes);
  }
}

}  // namespace

io::GgmlType quantize_type_named(const std::string& name) {
  std::string upper = name;
  std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  for (io::GgmlType type : {io::GgmlType::Q8_0, io::GgmlType::Q4_0, io::GgmlType::Q4_1, io::GgmlType::Q4_K, io::GgmlType::Q6_K}) {
    if (io::ggml_type_name(type) == upper) return type;
  }
  fail("quantization type '{}' is not supported (supported: q8_0, q4_0, q4_1, q4_k, q6_k, q4_k_m)", name);
}

QuantizeOptions quantize_options_named(const std::string& name) {
  QuantizeOptions options;
  options.k_m_mixture = ascii_lower(name) == "q4_k_m";
  options.type = options.k_m_mixture ? io::GgmlType::Q4_K : quantize_type_named(name);
  return options;
}

QuantizeReport quantize_checkpoint(const std::string& dir, const std::string& out_dir, const QuantizeOptions& options) {
  const io::Checkpoint ckpt = io::checkpoint_open(dir);
  if (ckpt.format == io::WeightFormat::Gguf) fail("{}: already quantized (model.gguf); quantize the original checkpoint", dir);
  const io::HfConfig config = io::hf_config_read(dir + "/config.json");
  std::set<std::string> linears;
  {
    const DefaultDtypeGuard guard(at::kFloat);
    CausalLm lm = model_build(config, dir + "/config.json", &ckpt);
    linears = linear_weights(*lm);
  }
  if (fs::exists(out_dir) && !fs::is_empty(out_dir)) fail("{}: the output directory exists and is not empty", out_dir);
  fs::create_directories(out_dir);
  QuantizeReport report;
  std::vector<io::GgufWriteTensor> tensors;
  std::vector<std::string> long_names;
  int64_t layers = 0;
  for (const auto& item : ckpt.tensors) layers = std::max(layers, layer_of(item.first) + 1);
  for (const auto& [key, record] : ckpt.tensors) {
    report.bytes_in += record.nbytes();
    const bool candidate = linears.count(key) && record.shape.size() == 2 && (options.everything || in_llm(key));
    const io::GgmlType intended = intended_type(options, key, layers);
    const std::optional<io::GgmlType> type = candidate ? type_for(intended, record.shape[1]) : std::nullopt;
    if (candidate && type != intended) {
      report.fallbacks.push_back(
          fmt::format("{}: {} (rows are no whole number of {} blocks)", key, type ? io::ggml_type_name(*type) : "kept", io::ggml_type_name(intended)));
    }
    if (type) ++report.by_type[std::string(io::ggml_type_name(*type))];
    io::GgufWriteTensor t;
    if (type) {
      t = {key, *type, record.shape, quantize_rows(*type, io::tensor_from_record(record))};
      ++report.quantized;
    } else {
      t = plain_tensor(key, record);
      ++report.kept;
    }
    if (key.size() > io::kGgufMaxName) {
      t.name = io::kGgufLongNamePrefix + std::to_string(long_names.size());
      long_names.push_back(key);
    }
    report.bytes_out += t.bytes.size();
    tensors.push_back(std::move(t));
  }
  std::vector<std::pair<std::string, io::GgufWriteValue>> metadata = {
      {"general.architecture", io::GgufWriteValue::string("m3d")},
      {"general.name", io::GgufWriteValue::string(config.architecture())},
      {"m3d.quantization", io::GgufWriteValue::string(options.k_m_mixture ? "Q4_K_M" : std::string(io::ggml_type_name(options.type)))},
      {"m3d.source", io::GgufWriteValue::string(fs::path(dir).filename().string())},
  };
  if (!long_names.empty()) metadata.emplace_back(io::kGgufLongNamesKey, io::GgufWriteValue::string_array(long_names));
  copy_side_files(dir, out_dir);
  io::gguf_write(out_dir + "/model.gguf", metadata, tensors);
  return report;
}

}  // namespace m3d::models
