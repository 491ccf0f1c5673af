// A checkpoint as published: a directory with config.json and weights in
// model.safetensors, sharded model-0000k-of-0000n.safetensors + index, or
// pytorch_model.bin (also sharded); or one weights file given directly. m3d quantize
// writes a directory whose weights are model.gguf (tensors under their HF names,
// block-quantized ones listed apart in `blocks`).
// All tensors are validated and mapped; none is read until used.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/tensor_record.h"

namespace m3d::io {

enum class WeightFormat { Safetensors, TorchBin, Gguf };

struct Checkpoint {
  std::string path;  // what was opened
  std::string directory;  // where config.json and tokenizer files are looked up
  WeightFormat format = WeightFormat::Safetensors;
  std::vector<std::string> files;  // weight files, in load order
  std::map<std::string, std::string> metadata;  // safetensors __metadata__ of the first file
  std::map<std::string, TensorRecord> tensors;  // by name
  // Block-quantized tensors of a model.gguf (Q8_0, Q4_K, ...), by HF name; their
  // bytes stay in the mapped file, which `gguf` keeps open.
  std::map<std::string, GgufTensor> blocks;
  std::shared_ptr<const GgufFile> gguf;

  const TensorRecord& tensor(const std::string& name) const;  // throws naming the checkpoint
  uint64_t total_bytes() const;
};

// `path` is a checkpoint directory or a single weights file.
Checkpoint checkpoint_open(const std::string& path);

// Reads every byte of the weight files and checks what the format records: the CRC-32
// of every zip entry of torch .bin/.pt files (safetensors records no checksum; its
// header and byte ranges are checked on open). Returns one line per file.
std::vector<std::string> checkpoint_verify(const Checkpoint& checkpoint);

}  // namespace m3d::io
