// The architecture registry: one table of every model m3d opens, keyed by
// config.json's architectures[0] (model_type when there is none), with its kind and
// decoder family. model_load builds the causal LMs (text, LaMed, Med3DVLM), clip_load
// the contrastive ones (CLIP); a new model gets its row here (docs/HOWTO-add-model.md §3).
#pragma once

#include <string>
#include <vector>

#include "io/hf_config.h"

namespace m3d::models {

enum class ModelKind {
  Text,  // a decoder without a vision side
  Lamed,  // LaMed: ViT3D + spp projector + decoder (models/lamed.h)
  Med3dvlm,  // Med3DVLM: DCFormer + MLP-Mixer projector + Qwen2 (models/med3dvlm.h)
  Clip,  // contrastive image-report model (models/clip.h), no decoder
};

struct Architecture {
  std::string name;  // config.json architectures[0]
  ModelKind kind;
  std::string family;  // decoder family (phi3, llama, qwen2); empty for CLIP
  std::string description;  // one line, for messages and docs
};

// Every row, causal LMs first, in the order docs/models.md lists them.
const std::vector<Architecture>& architectures();
// The names in architectures(), for messages and m3d::model_architectures.
std::vector<std::string> model_architectures();
// The row of config.json's architecture; fails naming `where` with the supported list.
const Architecture& architecture_of(const io::HfConfig& config, const std::string& where);
// The row of `dir`/config.json: which kind of checkpoint the directory holds (or of
// the GGUF file's metadata when `dir` is a .gguf file).
const Architecture& architecture_of_dir(const std::string& dir);
// text, lamed, med3dvlm, clip (m3d::ModelInfo::family).
std::string model_kind_name(ModelKind kind);

}  // namespace m3d::models
