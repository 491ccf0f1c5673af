// M3D-CLIP (M3D LaMed/src/model/CLIP.py), and Med3DVLM's src/model/CLIP.py: DEC_CLIP
// (DCFormer_SigLIP) and its sigmoid loss. Letters: B batch, N global batch / tokens,
// C channels, E embedding.
#include "models/clip.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "io/json_util.h"
#include "io/state_dict.h"
#include "m3d/error.h"

namespace m3d::models {
namespace {

using json = nlohmann::json;

// F.normalize(x, dim=-1): x / max(||x||, 1e-12).
torch::Tensor l2_normalize(const torch::Tensor& x) { return x / x.norm(2, -1, true).clamp_min(1e-12); }

std::array<int64_t, 3> triple(const json& c, const char* key, std::array<int64_t, 3> fallback, const std::string& where) {
  if (!c.contains(key)) return fallback;
  const auto values = c.at(key).get<std::vector<int64_t>>();
  if (values.size() != 3) fail("{}: {} must have 3 values (D, H, W), got {}", where, key, values.size());
  return {values[0], values[1], values[2]};
}

// The gather / local loss switches both configs share (open_clip's).
void read_loss_gathering(const json& c, const std::string& where, ClipConfig& config) {
  config.gather_loss = c.value("gather_loss", config.gather_loss);
  config.local_loss = c.value("local_loss", config.local_loss);
  if (config.gather_loss && config.local_loss) {
    fail("{}: local_loss=true is not supported (the official branch uses labels that are wrong on every rank but 0)", where);
  }
}

// DEC_CLIPConfig (Med3DVLM src/model/CLIP.py) with its training script's values.
ClipConfig dec_clip_config_from_json(const json& c, const std::string& where) {
  ClipConfig config;
  config.model_type = "dec_clip";
  const std::string tower = c.value("vision_encoder", std::string("dcformer"));
  if (tower != "dcformer") fail("{}: vision_encoder '{}' is not supported for DEC_CLIP (supported: dcformer, the released tower)", where, tower);
  config.hidden_size = c.value("hidden_size", int64_t{512});  // DEC_CLIPConfig's default; train_clip.py passes 768
  config.loss_type = c.value("loss_type", std::string("nce"));
  if (config.loss_type != "sigmoid") {
    fail("{}: DEC_CLIP loss_type '{}' is not supported (supported: sigmoid, what DCFormer_SigLIP trained with)", where, config.loss_type);
  }
  if (c.value("efficient_loss", false)) fail("{}: efficient_loss=true is not supported (DCFormer_SigLIP trained with the gathered loss)", where);
  read_loss_gathering(c, where, config);
  config.t_prime_init = c.value("t_prime", config.t_prime_init);
  config.bias_init = c.value("bias", config.bias_init);
  config.language_model_name_or_path = c.value("language_model_name_or_path", std::string("medicalai/ClinicalBERT"));
  const auto ints = [&](const char* key, std::array<int64_t, 5> fallback) {
    if (!c.contains(key)) return fallback;
    const auto v = c.at(key).get<std::vector<int64_t>>();
    if (v.size() != 5) fail("{}: {} must have 5 values (s0 .. s4), got {}", where, key, v.size());
    return std::array<int64_t, 5>{v[0], v[1], v[2], v[3], v[4]};
  };
  config.dcformer.num_blocks = ints("dcformer_num_blocks", config.dcformer.num_blocks);
  config.dcformer.channels = ints("dcformer_channels", config.dcformer.channels);
  for (int s = 0; s < 5; ++s) {
    if (config.dcformer.channels[s] < 1) fail("{}: dcformer_channels must be positive", where);
  }
  config.dcformer.image_size = dcformer_image_size_from_input_size(c, where, config.dcformer.image_size);
  // ClinicalBERT (medicalai/ClinicalBERT, a multilingual-cased DistilBERT) unless text_config says otherwise.
  json text = c.value("text_config", json{{"model_type", "distilbert"}, {"vocab_size", 119547}});
  if (!text.contains("model_type")) text["model_type"] = "distilbert";
  config.text = BertConfig::from_json(text, where + " (text_config)");
  return config;
}

// What DEC_CLIP's save_pretrained writes (the released config's keys; dim / depth /
// mlp_depth are the ViT's and unused by the DCFormer), plus m3d's text_config and
// the DCFormer's dims.
json dec_clip_config_to_json(const ClipConfig& c) {
  json text = c.text.to_json();
  text.erase("architectures");
  const auto& d = c.dcformer;
  return {{"architectures", {"DEC_CLIP"}},
          {"model_type", "dec_clip"},
          {"language_model_name_or_path", c.language_model_name_or_path},
          {"vision_encoder", "dcformer"},
          {"input_size", {d.image_size[1], d.image_size[2], d.image_size[0]}},  // (H, W, D)
          {"dim", 768},
          {"depth", 12},
          {"hidden_size", c.hidden_size},
          {"mlp_depth", 2},
          {"local_loss", c.local_loss},
          {"gather_loss", c.gather_loss},
          {"loss_type", c.loss_type},
          {"t_prime", c.t_prime_init},
          {"bias", c.bias_init},
          {"efficient_loss", false},
          {"dcformer_num_blocks", d.num_blocks},
          {"dcformer_channels", d.channels},
          {"text_config", text}};
}

}  // namespace

ClipConfig ClipConfig::from_json(const json& c, const std::string& where) {
  ClipConfig config;
  try {
    const std::string model_type = c.value("model_type", std::string("m3d_clip"));
    if (model_type == "dec_clip") return dec_clip_config_from_json(c, where);
    if (model_type != "m3d_clip") fail("{}: model_type '{}' is not a contrastive model m3d knows (supported: m3d_clip, dec_clip)", where, model_type);
    Vit3dConfig& v = config.vision;
    v.in_channels = c.value("in_channels", v.in_channels);
    v.img_size = triple(c, "img_size", v.img_size, where);
    v.patch_size = triple(c, "patch_size", v.patch_size, where);
    v.hidden_size = c.value("hidden_size", v.hidden_size);
    v.mlp_dim = c.value("mlp_dim", v.mlp_dim);
    v.num_layers = c.value("num_layers", v.num_layers);
    v.num_heads = c.value("num_heads", v.num_heads);
    v.classification = true;
    const std::string pos_embed = c.value("pos_embed", std::string("perceptron"));
    if (pos_embed != "perceptron") fail("{}: pos_embed '{}' is not supported (supported: perceptron)", where, pos_embed);
    if (c.value("spatial_dims", 3) != 3) fail("{}: spatial_dims must be 3", where);
    config.hidden_size = v.hidden_size;
    config.loss_type = c.value("loss_type", config.loss_type);
    if (config.loss_type != "nce" && config.loss_type != "sigmoid") {
      fail("{}: loss_type '{}' is not supported (supported: nce, sigmoid)", where, config.loss_type);
    }
    read_loss_gathering(c, where, config);
    config.logit_scale_init = c.value("logit_scale_init", config.logit_scale_init);  // m3d key; M3D: ln(1/0.07)
    config.t_prime_init = c.value("t_prime", config.t_prime_init);
    config.bias_init = c.value("bias", config.bias_init);
    json text = c.value("text_config", json::object());
    if (!text.contains("model_type")) text["model_type"] = "bert";
    if (!text.contains("vocab_size") && c.contains("vocab_size")) text["vocab_size"] = c["vocab_size"];
    config.text = BertConfig::from_json(text, where + " (text_config)");
  } catch (const json::exception& e) { fail("{}: malformed CLIP config: {}", where, e.what()); }
  return config;
}

json ClipConfig::to_json() const {
  if (model_type == "dec_clip") return dec_clip_config_to_json(*this);
  json text = this->text.to_json();
  text.erase("architectures");
  return {{"architectures", {"M3DCLIP"}},
          {"model_type", "m3d_clip"},
          {"language_model_name_or_path", language_model_name_or_path},
          {"in_channels", vision.in_channels},
          {"img_size", vision.img_size},
          {"patch_size", vision.patch_size},
          {"hidden_size", vision.hidden_size},
          {"mlp_dim", vision.mlp_dim},
          {"num_layers", vision.num_layers},
          {"num_heads", vision.num_heads},
          {"pos_embed", "perceptron"},
          {"dropout_rate", 0},
          {"spatial_dims", 3},
          {"max_text_len", 128},
          {"vocab_size", text.at("vocab_size")},
          {"local_loss", local_loss},
          {"gather_loss", gather_loss},
          {"loss_type", loss_type},
          {"text_config", text}};
}

int64_t ClipConfig::image_channels() const { return model_type == "dec_clip" ? dcformer.in_channels : vision.in_channels; }

std::array<int64_t, 3> ClipConfig::image_size() const { return model_type == "dec_clip" ? dcformer.image_size : vision.img_size; }

ClipModelImpl::ClipModelImpl(const ClipConfig& c) : config_(c) {
  if (c.model_type == "dec_clip") {
    dcformer_encoder = register_module("vision_encoder", Dcformer(c.dcformer));
    language_encoder = register_module("language_encoder", BertModel(c.text, false));  // AutoModel: DistilBertModel
    mm_vision_proj = register_module("mm_vision_proj", Linear(c.dcformer.channels[4], c.hidden_size));
    mm_language_proj = register_module("mm_language_proj", Linear(c.text.hidden_size, c.hidden_size));
    t_prime = register_parameter("t_prime", torch::full({}, c.t_prime_init));
    bias = register_parameter("bias", torch::full({}, c.bias_init));
    return;
  }
  if (c.text.hidden_size != c.hidden_size && c.vision.hidden_size != c.hidden_size) { fail("clip: projection width {} matches neither tower", c.hidden_size); }
  vision_encoder = register_module("vision_encoder", Vit3d(c.vision));
  language_encoder = register_module("language_encoder", BertModel(c.text, true));
  mm_vision_proj = register_module("mm_vision_proj", Linear(c.vision.hidden_size, c.hidden_size));
  mm_language_proj = register_module("mm_language_proj", Linear(c.text.hidden_size, c.hidden_size));
  if (c.loss_type == "sigmoid") {
    t_prime = register_parameter("t_prime", torch::full({}, c.t_prime_init));
    bias = register_parameter("bias", torch::full({}, c.bias_init));
  } else {
    logit_scale = register_parameter("logit_scale", torch::full({}, c.logit_scale_init));
  }
}

torch::Tensor ClipModelImpl::encode_image(const torch::Tensor& image) {
  if (dcformer_encoder) {
    const auto last = dcformer_encoder->forward(image).back();  // (B, N, C) of stage s4
    return l2_normalize(mm_vision_proj(last.mean(1)));  // (B, E)
  }
  const auto cls = vision_encoder->forward_cls(image);  // (B, E_v) after the final norm
  return l2_normalize(mm_vision_proj(cls));
}

torch::Tensor ClipModelImpl::encode_text(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  const auto cls = language_encoder->forward_first(input_ids, attention_mask);  // (B, E_t)
  return l2_normalize(mm_language_proj(cls));
}

torch::Tensor ClipModelImpl::loss(const torch::Tensor& image_features, const torch::Tensor& text_features) const {
  if (config_.loss_type == "sigmoid") return siglip_loss(image_features, text_features, t_prime, bias);
  return clip_loss(image_features, text_features, logit_scale);
}

torch::Tensor clip_loss(const torch::Tensor& image_features, const torch::Tensor& text_features, const torch::Tensor& logit_scale) {
  if (image_features.sizes() != text_features.sizes() || image_features.dim() != 2) { fail("clip loss: image and text features must both be (N, E)"); }
  const auto logits = logit_scale * torch::matmul(image_features, text_features.t());  // (N, N)
  const auto labels = torch::arange(logits.size(0), torch::TensorOptions().dtype(torch::kLong).device(logits.device()));
  return (at::cross_entropy_loss(logits, labels) + at::cross_entropy_loss(logits.t(), labels)) / 2;
}

torch::Tensor siglip_loss(const torch::Tensor& image_features, const torch::Tensor& text_features, const torch::Tensor& t_prime, const torch::Tensor& bias) {
  if (image_features.sizes() != text_features.sizes() || image_features.dim() != 2) { fail("sigmoid loss: image and text features must both be (N, E)"); }
  const int64_t N = image_features.size(0);
  auto logits = t_prime.exp() * torch::matmul(image_features, text_features.t()) + bias;
  logits = (logits + logits.t()) / 2;
  const auto labels = 2 * torch::eye(N, logits.options()) - 1;
  return -at::log_sigmoid(labels * logits).sum() / static_cast<double>(N);
}

ClipConfig clip_config_from_checkpoint(const io::Checkpoint& ckpt) {
  const std::string config_path = ckpt.directory + "/config.json";
  const json raw = io::json_read_file(config_path);
  ClipConfig config = ClipConfig::from_json(raw, config_path);
  // The towers' widths and depths from the tensors (the official code takes the text
  // tower's from language_model_name_or_path, DEC_CLIP's DCFormer from decomp_small).
  if (config.model_type == "dec_clip") {
    config.dcformer = dcformer_config_from_checkpoint(ckpt, "vision_encoder.", config.dcformer);
  } else {
    const auto& patch = ckpt.tensor("vision_encoder.patch_embedding.patch_embeddings.1.weight");
    config.vision.hidden_size = patch.shape.at(0);
    config.vision.mlp_dim = ckpt.tensor("vision_encoder.blocks.0.mlp.linear1.weight").shape.at(0);
    config.vision.num_layers = 0;
    while (ckpt.tensors.count(fmt::format("vision_encoder.blocks.{}.norm1.weight", config.vision.num_layers))) ++config.vision.num_layers;
  }
  BertConfig& t = config.text;
  const bool distil = t.distilbert();  // DistilBERT: transformer.layer.{i}.ffn.lin{1,2}, no token types
  const std::string layer = distil ? "language_encoder.transformer.layer." : "language_encoder.encoder.layer.";
  const auto& words = ckpt.tensor("language_encoder.embeddings.word_embeddings.weight");
  t.vocab_size = words.shape.at(0);
  t.hidden_size = words.shape.at(1);
  t.max_position_embeddings = ckpt.tensor("language_encoder.embeddings.position_embeddings.weight").shape.at(0);
  if (!distil) t.type_vocab_size = ckpt.tensor("language_encoder.embeddings.token_type_embeddings.weight").shape.at(0);
  t.intermediate_size = ckpt.tensor(layer + (distil ? "0.ffn.lin1.weight" : "0.intermediate.dense.weight")).shape.at(0);
  t.num_hidden_layers = 0;
  while (ckpt.tensors.count(fmt::format("{}{}.{}", layer, t.num_hidden_layers, distil ? "ffn.lin2.weight" : "output.dense.weight"))) ++t.num_hidden_layers;
  if (t.hidden_size % t.num_attention_heads != 0) {
    fail("{}: {} width {} is not divisible by {} heads; give text_config.{}", config_path, distil ? "DistilBERT" : "BERT", t.hidden_size, t.num_attention_heads,
         distil ? "n_heads" : "num_attention_heads");
  }
  config.hidden_size = ckpt.tensor("mm_vision_proj.weight").shape.at(0);
  if (ckpt.tensors.count("t_prime")) config.loss_type = "sigmoid";
  return config;
}

ClipModel clip_load(const std::string& dir, c10::ScalarType dtype, c10::Device device) {
  const io::Checkpoint ckpt = io::checkpoint_open(dir);
  const ClipConfig config = clip_config_from_checkpoint(ckpt);
  ClipModel model = [&] {
    DefaultDtypeGuard guard(dtype);
    return ClipModel(config);
  }();
  model->eval();
  io::LoadOptions options;
  options.ignore = {"language_encoder.embeddings.position_ids"};
  io::state_dict_load(*model, ckpt, options);
  model->to(device);
  return model;
}

}  // namespace m3d::models
