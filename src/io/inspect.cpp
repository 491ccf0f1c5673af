#include "io/inspect.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>

#include "io/hf_config.h"

namespace m3d::io {
namespace {

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", value, units[unit]);
}

std::string dtype_counts(const std::map<std::string, size_t>& dtypes) {
  std::vector<std::string> parts;
  for (const auto& [dtype, count] : dtypes) parts.push_back(fmt::format("{}×{}", dtype, count));
  return fmt::format("{}", fmt::join(parts, " "));
}

// Config keys worth showing, in this order, when present.
constexpr const char* kConfigKeys[] = {
    "model_type",          "torch_dtype",         "hidden_size",
    "intermediate_size",   "num_hidden_layers",   "num_attention_heads",
    "num_key_value_heads", "vocab_size",          "max_position_embeddings",
    "vision_tower",        "mm_projector_type",   "mm_hidden_size",
    "image_size",          "input_size",          "patch_size",
    "proj_out_num",        "segmentation_module",
};

// Adds one tensor to its top-level module and to the totals; modules are listed
// in the order of their first tensor, so callers pass tensors sorted by name.
void summary_add(CheckpointSummary& s, const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape, int64_t numel, uint64_t bytes) {
  const std::string module = module_of(name);
  auto it = std::find_if(s.modules.begin(), s.modules.end(), [&](const ModuleSummary& m) { return m.name == module; });
  if (it == s.modules.end()) {
    s.modules.emplace_back();
    s.modules.back().name = module;
    it = s.modules.end() - 1;
  }
  it->parameters += numel;
  it->bytes += bytes;
  it->tensors += 1;
  it->dtypes[dtype] += 1;
  s.parameters += numel;
  s.bytes += bytes;
  s.dtypes[dtype] += 1;
  s.tensors.push_back({name, dtype, shape});
}

}  // namespace

std::string module_of(const std::string& key) {
  const size_t first = key.find('.');
  if (first == std::string::npos) return key;
  if (key.compare(0, first, "model") == 0) {
    const size_t second = key.find('.', first + 1);
    if (second != std::string::npos) return key.substr(0, second);
  }
  return key.substr(0, first);
}

CheckpointSummary checkpoint_summarize(const Checkpoint& checkpoint) {
  CheckpointSummary s;
  s.path = checkpoint.path;
  s.format = checkpoint.format == WeightFormat::Safetensors ? "safetensors" : checkpoint.format == WeightFormat::Gguf ? "gguf (m3d quantize)" : "torch";
  s.files = checkpoint.files;
  s.metadata = checkpoint.metadata;
  const auto config_path = std::filesystem::path(checkpoint.directory.empty() ? "." : checkpoint.directory) / "config.json";
  s.config = nlohmann::ordered_json::object();
  if (std::filesystem::exists(config_path)) {
    const HfConfig config = hf_config_read(config_path.string());
    s.architecture = config.architecture();
    for (const char* key : kConfigKeys) {
      if (config.raw.contains(key)) s.config[key] = config.raw[key];
    }
  }
  for (const auto& [name, record] : checkpoint.tensors) {
    summary_add(s, name, std::string(dtype_name(record.dtype)), record.shape, record.numel(), record.nbytes());
  }
  for (const auto& [name, block] : checkpoint.blocks) summary_add(s, name, std::string(ggml_type_name(block.type)), block.shape, block.numel(), block.nbytes);
  return s;
}

CheckpointSummary gguf_summarize(const GgufFile& gguf) {
  CheckpointSummary s;
  s.path = gguf.file->path();
  s.format = fmt::format("gguf v{}", gguf.version);
  s.files = {s.path};
  s.architecture = gguf.get_string("general.architecture").value_or("");
  s.config = nlohmann::ordered_json::object();
  if (s.architecture == "llama" || s.architecture == "qwen2") {
    const HfConfig config = gguf_hf_config(gguf);
    for (const char* key : kConfigKeys) {
      if (config.raw.contains(key)) s.config[key] = config.raw[key];
    }
  }
  for (const auto& [key, value] : gguf.metadata) s.metadata[key] = value.summary();
  std::vector<const GgufTensor*> sorted;
  for (const auto& tensor : gguf.tensors) sorted.push_back(&tensor);
  std::sort(sorted.begin(), sorted.end(), [](const GgufTensor* a, const GgufTensor* b) { return a->name < b->name; });
  for (const GgufTensor* tensor : sorted) {
    const std::string type(ggml_type_name(tensor->type));
    summary_add(s, tensor->name, type, tensor->shape, tensor->numel(), tensor->nbytes);
    s.dtype_bytes[type] += tensor->nbytes;
  }
  return s;
}

std::string summary_text(const CheckpointSummary& s, bool list_tensors) {
  std::string out;
  out += fmt::format("checkpoint    {}\n", s.path);
  out += fmt::format("architecture  {}\n", s.architecture.empty() ? "(no config.json)" : s.architecture);
  out += fmt::format("format        {}, {} file(s)\n", s.format, s.files.size());
  out += fmt::format("parameters    {} in {} tensors, {} ({})\n", s.parameters, s.tensors.size(), human_bytes(s.bytes), dtype_counts(s.dtypes));
  for (const auto& [type, bytes] : s.dtype_bytes) { out += fmt::format("  {:<12}{:>5} tensors  {:>11}\n", type, s.dtypes.at(type), human_bytes(bytes)); }
  if (!s.config.empty()) {
    out += "config\n";
    for (const auto& [key, value] : s.config.items()) out += fmt::format("  {:<26}{}\n", key, value.dump());
  }
  if (!s.metadata.empty()) {
    out += "metadata\n";
    size_t key_width = 26;  // GGUF keys run longer
    for (const auto& [key, value] : s.metadata) key_width = std::max(key_width, key.size() + 2);
    for (const auto& [key, value] : s.metadata) out += fmt::format("  {:<{}}{}\n", key, key_width, value);
  }
  size_t width = 6;
  for (const auto& m : s.modules) width = std::max(width, m.name.size());
  out += fmt::format("modules\n  {:<{}}  {:>14}  {:>11}  {:>7}  dtypes\n", "module", width, "parameters", "bytes", "tensors");
  for (const auto& m : s.modules) {
    out += fmt::format("  {:<{}}  {:>14}  {:>11}  {:>7}  {}\n", m.name, width, m.parameters, human_bytes(m.bytes), m.tensors, dtype_counts(m.dtypes));
  }
  if (list_tensors) {
    out += "tensors\n";
    for (const auto& t : s.tensors) out += fmt::format("  {}  {} {}\n", t.name, t.dtype, shape_string(t.shape));
  }
  return out;
}

nlohmann::ordered_json summary_json(const CheckpointSummary& s, bool list_tensors) {
  nlohmann::ordered_json j;
  j["path"] = s.path;
  j["architecture"] = s.architecture;
  j["format"] = s.format;
  j["files"] = s.files;
  j["parameters"] = s.parameters;
  j["bytes"] = s.bytes;
  j["tensors"] = s.tensors.size();
  j["dtypes"] = s.dtypes;
  if (!s.dtype_bytes.empty()) j["dtype_bytes"] = s.dtype_bytes;
  j["config"] = s.config;
  j["metadata"] = s.metadata;
  j["modules"] = nlohmann::ordered_json::array();
  for (const auto& m : s.modules) {
    j["modules"].push_back({{"name", m.name}, {"parameters", m.parameters}, {"bytes", m.bytes}, {"tensors", m.tensors}, {"dtypes", m.dtypes}});
  }
  if (list_tensors) {
    j["tensor_list"] = nlohmann::ordered_json::array();
    for (const auto& t : s.tensors) j["tensor_list"].push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}});
  }
  return j;
}

}  // namespace m3d::io
