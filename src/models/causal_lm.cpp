// Causal-LM assembly from the architecture registry's rows (models/registry.h); the
// multimodal models are LaMed's (models/lamed.h) and Med3DVLM's (models/med3dvlm.h).
// Letters: B batch, L tokens, N image tokens, D hidden, V vocab.
#include "models/causal_lm.h"

#include <spdlog/spdlog.h>

#include "io/state_dict.h"
#include "m3d/error.h"
#include "models/gguf_model.h"
#include "models/med3dvlm.h"
#include "models/registry.h"

namespace m3d::models {

CausalLmImpl::CausalLmImpl(std::shared_ptr<DecoderModelImpl> decoder, bool tie_word_embeddings) {
  model = register_module("model", std::move(decoder));
  if (!tie_word_embeddings) {
    const auto& c = model->config();
    lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false));
  }
}

torch::Tensor CausalLmImpl::logits(const torch::Tensor& hidden) const { return decoder_logits(*model, lm_head, hidden); }

LamedModelImpl* CausalLmImpl::lamed() const { return dynamic_cast<LamedModelImpl*>(model.get()); }

MultimodalModelImpl* CausalLmImpl::multimodal() const { return dynamic_cast<MultimodalModelImpl*>(model.get()); }

torch::Tensor CausalLmImpl::embed(const torch::Tensor& input_ids, const torch::Tensor& images) const {
  const auto& table = model->embed_tokens->weight;
  auto embeds = model->embed_tokens(input_ids.to(table.device())).to(compute_dtype(table.scalar_type(), table.device()));  // (B, L, D)
  if (!images.defined()) return embeds;
  MultimodalModelImpl* vision_model = multimodal();
  if (vision_model == nullptr) fail("this model has no vision tower; it cannot take an image");
  const int64_t L = input_ids.size(1);
  if (L == 1) return embeds;  // the official code passes single tokens through
  auto image_embeds = vision_model->encode_images(images);  // (B, N, D)
  const int64_t N = image_embeds.size(1);
  if (image_embeds.size(0) != embeds.size(0)) { fail("image splice: {} images for {} prompts", image_embeds.size(0), embeds.size(0)); }
  if (L < N + 1) fail("image splice: the prompt has {} tokens, fewer than 1 + {} image tokens", L, N);
  // cat(E[:, :1], image, E[:, N+1:]) (lamed_arch.py:120-132; Med3DVLM vlm_arch.py prepare_inputs_for_multimodal)
  return torch::cat({embeds.slice(1, 0, 1), image_embeds, embeds.slice(1, N + 1)}, 1);  // (B, L, D)
}

namespace {

// The registry row of `config`, refused unless model_load builds it (a causal LM).
const Architecture& causal_lm_architecture_of(const io::HfConfig& config, const std::string& where) {
  const Architecture& arch = architecture_of(config, where);
  if (arch.kind == ModelKind::Clip) { fail("{}: {} is {}, not a causal LM; clip_load opens it (m3d embed --model DIR)", where, arch.name, arch.description); }
  return arch;
}

}  // namespace

CausalLm model_build(const io::HfConfig& config, const std::string& where, const io::Checkpoint* ckpt) {
  const Architecture& arch = causal_lm_architecture_of(config, where);
  const DecoderConfig decoder = DecoderConfig::from_hf(config, arch.family, where);
  std::shared_ptr<DecoderModelImpl> model;
  if (arch.kind == ModelKind::Lamed) {
    const LamedConfig lamed = LamedConfig::from_hf(config, where);
    const Vit3dConfig vit = ckpt ? vit3d_config_from_checkpoint(*ckpt, "model.vision_tower.vision_tower.", lamed) : lamed.vit3d();
    model = std::make_shared<LamedModelImpl>(decoder, lamed, vit);
  } else if (arch.kind == ModelKind::Med3dvlm) {
    model = med3dvlm_model_build(config, decoder, where, ckpt);
  } else {
    model = std::make_shared<DecoderModelImpl>(decoder);
  }
  CausalLm lm(model, decoder.tie_word_embeddings);
  lm->eval();
  return lm;
}

LoadedModel model_load(const std::string& dir, c10::ScalarType dtype, c10::Device device) {
  if (is_gguf_model(dir)) {
    if (!device.is_cpu()) fail("{}: GGUF models run on the CPU (their quantized kernels are CPU code)", dir);
    return model_load_gguf(dir, {dtype});
  }
  const std::string config_path = dir + "/config.json";
  LoadedModel out;
  out.config = io::hf_config_read(config_path);
  out.architecture = out.config.architecture();
  const Architecture& arch = causal_lm_architecture_of(out.config, config_path);
  const io::Checkpoint ckpt = io::checkpoint_open(dir);
  {
    const DefaultDtypeGuard guard(c10::isFloatingType(dtype) ? dtype : torch::kFloat);  // parameters born in `dtype`
    out.lm = model_build(out.config, config_path, &ckpt);
  }
  io::LoadOptions options;
  // The [SEG] path is a module of its own (the CausalLm is what training builds); its
  // tensors load into it below, strictly, or are skipped when config.json has no
  // segmentation_module (the official LamedMetaModel then builds none either).
  if (arch.kind == ModelKind::Lamed) options.ignore = {kSegModulePrefix, kSegProjectorPrefix};
  attach_quantized(*out.lm, ckpt);  // m3d quantize's model.gguf
  const io::LoadReport report = io::state_dict_load(*out.lm, ckpt, options);
  if (arch.kind == ModelKind::Lamed && segvol_configured(out.config)) {
    const DefaultDtypeGuard guard(c10::isFloatingType(dtype) ? dtype : torch::kFloat);
    out.seg = lamed_seg_load(ckpt);
    out.seg->to(device);
  } else if (!report.ignored.empty()) {
    out.ignored = report.ignored;
    spdlog::warn("{}: {} segmentation tensors not loaded: config.json has no segmentation_module", dir, report.ignored.size());
  }
  out.lm->to(device);
  return out;
}

}  // namespace m3d::models
