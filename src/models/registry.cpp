// The one architecture table (models/registry.h). Names are what save_pretrained
// writes into config.json, the model class's name: M3D-LaMed's release
// (m3d_lamed_spec.md §4.2), Med3DVLM's merge script (a plain string, med3dvlm_spec.md
// §4.8), M3D LaMed/src/model/CLIP.py's M3DCLIP (§9) and Med3DVLM src/model/CLIP.py's
// DEC_CLIP, which the DCFormer_SigLIP release is (med3dvlm_spec.md §2.6).
#include "models/registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "io/gguf.h"
#include "m3d/error.h"
#include "models/gguf_model.h"

namespace m3d::models {

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> kArchitectures = {
      {"LamedPhi3ForCausalLM", ModelKind::Lamed, "phi3", "M3D-LaMed-Phi-3-4B (ViT3D + spp projector + Phi-3)"},
      {"LamedLlamaForCausalLM", ModelKind::Lamed, "llama", "M3D-LaMed-Llama-2-7B (ViT3D + spp projector + Llama-2)"},
      {"VLMQwenForCausalLM", ModelKind::Med3dvlm, "qwen2", "Med3DVLM-Qwen-2.5-7B (DCFormer + MLP-Mixer projector + Qwen2.5)"},
      {"Phi3ForCausalLM", ModelKind::Text, "phi3", "a Phi-3 text decoder"},
      {"LlamaForCausalLM", ModelKind::Text, "llama", "a Llama text decoder"},
      {"Qwen2ForCausalLM", ModelKind::Text, "qwen2", "a Qwen2 text decoder"},
      {"M3DCLIP", ModelKind::Clip, "", "M3D-CLIP (ViT3D + BERT), a contrastive image-report model"},
      {"DEC_CLIP", ModelKind::Clip, "", "Med3DVLM's DCFormer_SigLIP (DCFormer + DistilBERT), a contrastive image-report model"},
  };
  return kArchitectures;
}

std::vector<std::string> model_architectures() {
  std::vector<std::string> names;
  for (const Architecture& arch : architectures()) names.push_back(arch.name);
  return names;
}

const Architecture& architecture_of(const io::HfConfig& config, const std::string& where) {
  const auto& all = architectures();
  auto it = std::find_if(all.begin(), all.end(), [&](const Architecture& a) { return a.name == config.architecture(); });
  if (it == all.end()) {
    fail("{}: architecture '{}' is not supported (supported: {})", where, config.architecture().empty() ? "(none given)" : config.architecture(),
         fmt::join(model_architectures(), ", "));
  }
  return *it;
}

const Architecture& architecture_of_dir(const std::string& dir) {
  if (is_gguf_model(dir)) return architecture_of(io::gguf_hf_config(io::gguf_read(dir)), dir);
  const std::string config_path = dir + "/config.json";
  return architecture_of(io::hf_config_read(config_path), config_path);
}

std::string model_kind_name(ModelKind kind) {
  switch (kind) {
    case ModelKind::Text:
      return "text";
    case ModelKind::Lamed:
      return "lamed";
    case ModelKind::Med3dvlm:
      return "med3dvlm";
    case ModelKind::Clip:
      return "clip";
  }
  fail("model kind {} is unknown", static_cast<int>(kind));
}

}  // namespace m3d::models
