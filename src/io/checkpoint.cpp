#include "io/checkpoint.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "io/torch_bin.h"
#include "io/zip.h"
#include "m3d/error.h"

namespace m3d::io {
namespace fs = std::filesystem;

namespace {

void add_tensors(Checkpoint& ckpt, std::vector<TensorRecord> records, const std::string& file) {
  for (auto& record : records) {
    const std::string name = record.name;
    if (!ckpt.tensors.emplace(name, std::move(record)).second) {
      fail("{}: tensor '{}' appears in more than one weight file (again in {})", ckpt.path, name, file);
    }
  }
}

void add_file(Checkpoint& ckpt, const std::string& file) {
  auto mapped = MappedFile::open(file);
  const std::string ext = fs::path(file).extension().string();
  const bool pickle_name = ext == ".bin" || ext == ".pt" || ext == ".pth";
  if (ext != ".safetensors" && (zip_has_magic(*mapped) || pickle_name)) {
    ckpt.format = WeightFormat::TorchBin;
    add_tensors(ckpt, torch_bin_parse(mapped).tensors, file);
  } else {
    SafetensorsFile st = safetensors_parse(mapped);
    if (ckpt.files.empty()) ckpt.metadata = st.metadata;
    add_tensors(ckpt, std::move(st.tensors), file);
  }
  ckpt.files.push_back(file);
}

// HF sharded index: {"metadata": {...}, "weight_map": {tensor: shard file}}.
void add_sharded(Checkpoint& ckpt, const fs::path& index_path) {
  std::ifstream in(index_path);
  if (!in) fail("{}: cannot open", index_path.string());
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) { fail("{}: not valid JSON: {}", index_path.string(), e.what()); }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) { fail("{}: no 'weight_map' object", index_path.string()); }
  std::map<std::string, std::string> expected;  // tensor -> shard
  std::vector<std::string> shards;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) fail("{}: weight_map['{}'] is not a file name", index_path.string(), name);
    const std::string file = shard.get<std::string>();
    if (file.find('/') != std::string::npos || file == "..") {
      fail("{}: weight_map['{}'] = '{}' is not a file in this directory", index_path.string(), name, file);
    }
    expected[name] = file;
    if (std::find(shards.begin(), shards.end(), file) == shards.end()) shards.push_back(file);
  }
  std::sort(shards.begin(), shards.end());
  const fs::path dir = index_path.parent_path();
  for (const auto& shard : shards) add_file(ckpt, (dir / shard).string());
  for (const auto& [name, shard] : expected) {
    if (!ckpt.tensors.count(name)) fail("{}: tensor '{}' is listed for {} but that file lacks it", index_path.string(), name, shard);
  }
  for (const auto& [name, record] : ckpt.tensors) {
    if (!expected.count(name)) fail("{}: tensor '{}' is in {} but not in the index", index_path.string(), name, record.file->path());
  }
}

// m3d quantize's model.gguf: tensors under their HF names (names over GGUF's 63
// bytes are stored as "m3d.long.<i>" with the full name in m3d.long_names[i]).
void add_gguf(Checkpoint& ckpt, const std::string& file) {
  ckpt.format = WeightFormat::Gguf;
  ckpt.gguf = std::make_shared<const GgufFile>(gguf_read(file));
  const GgufFile& gguf = *ckpt.gguf;
  const std::vector<std::string> long_names = gguf.get_strings(kGgufLongNamesKey);
  for (const GgufTensor& t : gguf.tensors) {
    std::string name = t.name;
    if (name.rfind(kGgufLongNamePrefix, 0) == 0) {
      const std::string index = name.substr(std::string(kGgufLongNamePrefix).size());
      size_t used = 0;
      size_t i = long_names.size();
      try {
        i = std::stoul(index, &used);
      } catch (const std::exception&) {}
      if (used != index.size() || i >= long_names.size()) fail("{}: tensor '{}' has no entry in {}", file, name, kGgufLongNamesKey);
      name = long_names[i];
    }
    if (ckpt.tensors.count(name) || ckpt.blocks.count(name)) fail("{}: tensor '{}' appears twice", file, name);
    if (auto record = gguf_tensor_record(gguf, t)) {
      record->name = name;
      ckpt.tensors.emplace(name, std::move(*record));
    } else {
      ckpt.blocks.emplace(name, t);
    }
  }
  ckpt.files.push_back(file);
}

}  // namespace

const TensorRecord& Checkpoint::tensor(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) fail("{}: no tensor '{}'", path, name);
  return it->second;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, record] : tensors) total += record.nbytes();
  for (const auto& [name, block] : blocks) total += block.nbytes;
  return total;
}

Checkpoint checkpoint_open(const std::string& path) {
  Checkpoint ckpt;
  ckpt.path = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("{}: no such file or directory", path);
  if (!fs::is_directory(path, ec)) {
    ckpt.directory = fs::path(path).parent_path().string();
    add_file(ckpt, path);
    return ckpt;
  }
  ckpt.directory = path;
  const fs::path dir(path);
  // Same preference as transformers: safetensors first, then pickle.
  for (const char* index : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
    if (fs::exists(dir / index)) {
      add_sharded(ckpt, dir / index);
      return ckpt;
    }
  }
  for (const char* single : {"model.safetensors", "pytorch_model.bin", "model.bin"}) {
    if (fs::exists(dir / single)) {
      add_file(ckpt, (dir / single).string());
      return ckpt;
    }
  }
  if (fs::exists(dir / "model.gguf")) {
    add_gguf(ckpt, (dir / "model.gguf").string());
    return ckpt;
  }
  fail("{}: no weights found (looked for model.safetensors[.index.json], pytorch_model.bin[.index.json], model.bin, model.gguf)", path);
}

std::vector<std::string> checkpoint_verify(const Checkpoint& checkpoint) {
  std::vector<std::string> lines;
  for (const auto& file : checkpoint.files) {
    const auto mapped = MappedFile::open(file);
    if (zip_has_magic(*mapped)) {
      lines.push_back(fmt::format("{}: {} zip entries, every CRC-32 matches", file, torch_bin_verify(*mapped)));
    } else if (gguf_has_magic(file)) {
      lines.push_back(fmt::format("{}: GGUF records no checksum; header, tensor infos and byte ranges checked", file));
    } else {
      lines.push_back(fmt::format("{}: safetensors records no checksum; header and byte ranges checked", file));
    }
  }
  return lines;
}

}  // namespace m3d::io
