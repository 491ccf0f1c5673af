// PyTorch `.bin` / `.pt` state dicts written by torch.save (zip format, PyTorch
// >= 1.6): `<archive>/data.pkl` is a pickle whose tensors point at storages stored
// as `<archive>/data/<key>`. Tensors are views (offset, sizes, strides) into those
// storages, and several may share one, as the bf16 tensors of M3D-CLIP's
// pretrained_ViT.bin do (m3d_lamed_spec.md §1.7): every view is bounds-checked.
#pragma once

#include <string>
#include <vector>

#include "io/tensor_record.h"

namespace m3d::io {

struct TorchBinFile {
  std::shared_ptr<const MappedFile> file;
  std::vector<TensorRecord> tensors;  // in pickle order
  std::vector<std::string> skipped;  // non-tensor entries of the state dict
};

TorchBinFile torch_bin_read(const std::string& path);
// `verify_pickle`: data.pkl's CRC-32 is checked before it is parsed (off only in the
// fuzz target, so mutations reach the parser).
TorchBinFile torch_bin_parse(std::shared_ptr<const MappedFile> file, bool verify_pickle = true);
// Checks the CRC-32 of every entry (tensor storages included: reads the whole file);
// returns the number of entries checked.
size_t torch_bin_verify(const MappedFile& file);

}  // namespace m3d::io
