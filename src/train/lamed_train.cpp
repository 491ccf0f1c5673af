// LaMed instruction tuning (see lamed_train.h): the loss, the trainable parameters and
// the run; the data side is lamed_data.cpp, the configuration lamed_config.cpp.
#include "train/lamed_train.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/state_dict.h"
#include "imaging/preprocess.h"
#include "m3d/error.h"
#include "models/causal_lm.h"
#include "models/layers.h"
#include "models/registry.h"
#include "models/segvol.h"
#include "text/box.h"
#include "text/tokenizer.h"
#include "train/distributed.h"
#include "train/lamed_data.h"
#include "train/optim.h"

namespace m3d::train {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The tokens the training scripts add (initialize_vision_tokenizer): LaMed's train.py
// <im_patch>, <bx_start>, <bx_end> special and [SEG] not; Med3DVLM's train_vlm.py
// <im_patch> only (vocabulary 151666 on Qwen2.5).
const std::vector<std::pair<std::string, bool>>& added_tokens(models::ModelKind kind) {
  static const std::vector<std::pair<std::string, bool>> lamed = {
      {text::kImagePatch, true}, {text::kBoxStart, true}, {text::kBoxEnd, true}, {text::kSegToken, false}};
  static const std::vector<std::pair<std::string, bool>> med3dvlm = {{text::kImagePatch, true}};
  return kind == models::ModelKind::Med3dvlm ? med3dvlm : lamed;
}

// The tokenizer of a run with the family's tokens added when missing, and their ids.
struct LamedTokenizer {
  std::string dir;
  text::Tokenizer tokenizer;
  std::map<std::string, int64_t> added;
  SequenceTokens sequence;  // pad and EOS of the training sequences
  models::ModelKind kind;
};

LamedTokenizer tokenizer_prepare(const LamedTrainConfig& config, models::ModelKind kind) {
  const std::string dir = config.tokenizer.empty() ? config.init : config.tokenizer;
  if (dir.empty()) fail("training: no tokenizer (give \"tokenizer\" or \"init\")");
  LamedTokenizer t{dir, text::Tokenizer::load(dir), {}, {}, kind};
  for (const auto& [token, special] : added_tokens(kind)) {
    if (t.tokenizer.token_to_id(token) < 0) {
      if (special) t.tokenizer.add_special_tokens({token});
      else t.tokenizer.add_tokens({token});
    }
    t.added[token] = t.tokenizer.token_to_id(token);
  }
  t.sequence = kind == models::ModelKind::Med3dvlm ? med3dvlm_sequence_tokens(t.tokenizer, dir) : lamed_sequence_tokens(t.tokenizer);
  return t;
}

// The tokenizer files of a checkpoint folder: the source's, added_tokens.json, and LaMed's
// special tokens kept special.
void tokenizer_write(const LamedTokenizer& t, const std::string& dir) {
  copy_tokenizer_files(t.dir, dir);
  json tokens = json::object();
  for (const auto& [token, id] : t.added) tokens[token] = id;
  io::write_file_atomic(dir + "/added_tokens.json", tokens.dump(2) + "\n");
  // The special ones must stay special when the folder is loaded (session_open reads this).
  json map = fs::exists(dir + "/special_tokens_map.json") ? io::json_read_file(dir + "/special_tokens_map.json") : json::object();
  // Entries are strings or AddedToken objects ({"content": ...}); both are kept as written.
  json specials = map.value("additional_special_tokens", json::array());
  if (!specials.is_array()) fail("{}/special_tokens_map.json: additional_special_tokens must be a list", t.dir);
  auto listed = [&](const std::string& token) {
    return std::any_of(specials.begin(), specials.end(), [&](const json& e) { return (e.is_object() ? e.value("content", json()) : e) == token; });
  };
  for (const auto& [token, special] : added_tokens(t.kind)) {
    if (special && !listed(token)) specials.push_back(token);
  }
  map["additional_special_tokens"] = specials;
  io::write_file_atomic(dir + "/special_tokens_map.json", map.dump(2) + "\n");
}

// resize_token_embeddings(len(tokenizer)) (initialize_vision_tokenizer): rows beyond
// the old vocabulary start at the mean of the old rows, in embed_tokens and lm_head.
// (train.py overwrites the last 4 rows with the mean whether or not they are new; a
// LaMed checkpoint's trained token rows are kept here.)
void embeddings_resize(models::CausalLmImpl& lm, int64_t vocab) {
  torch::NoGradGuard no_grad;
  auto resize = [&](torch::Tensor& weight) {
    const auto old = weight.detach();
    const int64_t keep = std::min(vocab, old.size(0));
    auto fresh = torch::empty({vocab, old.size(1)}, old.options());
    fresh.slice(0, 0, keep).copy_(old.slice(0, 0, keep));
    if (vocab > keep) fresh.slice(0, keep).copy_(old.mean(0, true).expand({vocab - keep, old.size(1)}));
    weight.set_data(fresh);
  };
  resize(lm.model->embed_tokens->weight);
  if (lm.lm_head) resize(lm.lm_head->weight);
}

// The config.json of a run's model: `init`'s, or `model` (from scratch).
json model_config_of(const LamedTrainConfig& config) {
  if (!config.init.empty()) return io::json_read_file(config.init + "/config.json");
  if (config.model.is_null()) fail("training: give \"init\" (a checkpoint) or \"model\" (a config.json to build from scratch)");
  return config.model;
}

// LaMed (ViT3D + spp projector) or Med3DVLM (DCFormer + mixer): what the tokens, the
// tokenizer's pad/EOS and the vision init follow. Anything else is refused.
models::ModelKind model_kind_of(const LamedTrainConfig& config) {
  const std::string where = config.init.empty() ? "training config \"model\"" : config.init + "/config.json";
  const models::Architecture& arch = models::architecture_of(io::hf_config_from_json(model_config_of(config), where), where);
  if (arch.kind != models::ModelKind::Lamed && arch.kind != models::ModelKind::Med3dvlm) {
    fail("{}: '{}' is {}; m3d train lamed trains vision-language models (LaMed, Med3DVLM)", where, arch.name, arch.description);
  }
  return arch.kind;
}

// The model of a run and its config.json: a checkpoint (`init`) or `model` from scratch
// (HF's init), the vocabulary resized for the added tokens, the vision tower from a CLIP
// (`vision_init`: M3D-CLIP's ViT for LaMed, DCFormer_SigLIP's DCFormer for Med3DVLM, as
// train.py's pretrain_vision_model / train_vlm.py's pretrain_clip_model).
struct LamedModel {
  models::CausalLm lm{nullptr};
  json config;
};

LamedModel model_prepare(const LamedTrainConfig& config, const text::Tokenizer& tokenizer, bool log) {
  LamedModel m;
  std::unique_ptr<io::Checkpoint> checkpoint;
  m.config = model_config_of(config);
  if (!config.init.empty()) {
    checkpoint = std::make_unique<io::Checkpoint>(io::checkpoint_open(config.init));
  } else {
    m.config["vocab_size"] = tokenizer.vocab_size();
  }
  const std::string config_path = config.output_dir + "/config.json";
  io::write_file_atomic(config_path, m.config.dump(2) + "\n");
  m.lm = models::model_build(io::hf_config_read(config_path), config_path, checkpoint.get());
  if (m.lm->multimodal() == nullptr)
    fail("{}: '{}' is not a vision-language architecture (it has no vision tower)", config_path, m.config.value("architectures", json()).dump());
  if (checkpoint) {
    io::LoadOptions load;
    load.ignore = {models::kSegModulePrefix, models::kSegProjectorPrefix};
    io::state_dict_load(*m.lm, *checkpoint, load);
  } else {
    torch::NoGradGuard no_grad;  // HF's init for a model from scratch
    for (const auto& item : m.lm->named_parameters()) {
      const std::string& name = item.key();
      auto t = item.value();
      if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) t.zero_();
      else if (name.find("norm") != std::string::npos) t.fill_(1);
      else t.normal_(0, 0.02);
    }
  }
  const int64_t vocab = tokenizer.vocab_size(), old_vocab = m.lm->model->embed_tokens->weight.size(0);
  if (vocab != old_vocab) {
    embeddings_resize(*m.lm, vocab);
    m.config["vocab_size"] = vocab;
    if (log) spdlog::info("vocabulary resized from {} to {} for the added tokens", old_vocab, vocab);
  }
  if (!config.vision_init.empty()) {
    const io::Checkpoint clip = io::checkpoint_open(config.vision_init);
    io::LoadOptions load;
    load.prefix = "vision_encoder.";
    load.whole_checkpoint = false;
    io::state_dict_load(m.lm->multimodal()->clip_vision_tower(), clip, load);
  }
  return m;
}

// What trains: LoRA applied for "finetune", the stage's requires_grad (every parameter for
// "full"), then `freeze`. Returns the LoRA target names (empty without LoRA).
std::vector<std::string> trainable_prepare(const LamedTrainConfig& config, models::CausalLmImpl& lm) {
  const LamedStage stage = config.stage == "pretrain" ? LamedStage::Pretrain : LamedStage::Finetune;
  std::vector<std::string> lora_targets;
  if (config.stage == "finetune") lora_targets = models::lora_apply(lm, config.lora);
  lm.train();
  if (auto* lamed = lm.lamed()) {
    lamed->vision_tower->vision_tower->set_gradient_checkpointing(config.gradient_checkpointing);
  } else if (config.gradient_checkpointing) {
    fail("training: gradient_checkpointing is built for the ViT3D tower only, not this model's DCFormer");
  }
  if (config.stage == "full") {
    for (auto& p : lm.parameters()) p.requires_grad_(true);
  } else {
    lamed_set_trainable(lm, stage);
  }
  for (const auto& prefix : config.freeze) {
    size_t matched = 0;
    for (auto& item : lm.named_parameters()) {
      if (item.key().rfind(prefix, 0) == 0) item.value().requires_grad_(false), ++matched;
    }
    if (matched == 0) fail("training: \"freeze\" prefix '{}' matches no parameter", prefix);
  }
  return lora_targets;
}

// The periodic evaluation: the mean loss over the caption batches of the evaluation split.
json caption_loss(models::CausalLmImpl& lm, LamedLoader& data, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  lm.eval();
  double sum = 0;
  int64_t batches = 0;
  for (size_t start = 0; start < data.size(); start += static_cast<size_t>(batch_size), ++batches) {
    std::vector<int64_t> indices;
    for (size_t i = start; i < std::min(data.size(), start + static_cast<size_t>(batch_size)); ++i) indices.push_back(static_cast<int64_t>(i));
    const Batch b = data.batch(indices, 0);
    sum += lamed_lm_loss(lm, b.images, b.input_ids, b.attention_mask, b.labels).item<double>();
  }
  lm.train();
  return {{"caption_loss", sum / static_cast<double>(std::max<int64_t>(batches, 1))}, {"samples", data.size()}};
}

// The final model, loadable by m3d generate / bench / the official code: adapters merged,
// written to output_dir/final through a .partial folder. Returns that folder.
std::string final_model_write(const LamedTrainConfig& config, models::CausalLmImpl& lm, const json& model_config, const LamedTokenizer& tokenizer,
                              const std::string& recipe, bool lora) {
  const std::string final_dir = config.output_dir + "/final", partial = final_dir + ".partial";
  fs::remove_all(partial);
  fs::create_directories(partial);
  if (lora) models::lora_save_adapter(lm, config.lora, partial + "/adapter");
  models::lora_merge(lm);
  save_model_weights(lm, partial + "/model.safetensors");
  io::write_file_atomic(partial + "/config.json", model_config.dump(2) + "\n");
  tokenizer_write(tokenizer, partial);
  if (!recipe.empty()) io::write_file_atomic(partial + "/m3d_recipe.json", recipe);
  fs::remove_all(final_dir);
  fs::rename(partial, final_dir);
  return final_dir;
}

}  // namespace

torch::Tensor lamed_lm_loss(models::CausalLmImpl& lm, const torch::Tensor& images, const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                            const torch::Tensor& labels) {
  const auto embeds = lm.embed(input_ids, images);
  const auto device = embeds.device();
  const auto hidden = lm.model->forward(embeds, nullptr, {}, attention_mask.to(device));
  // Only the positions that predict a label go through lm_head: the same loss and
  // gradients as HF's full logits, without the (B, L, vocab) tensor.
  const auto targets = labels.to(device).slice(1, 1).reshape({-1});
  const auto rows = (targets != -100).nonzero().squeeze(1);
  const auto h = hidden.slice(1, 0, -1).reshape({-1, hidden.size(-1)}).index_select(0, rows);
  const auto logits = lm.logits(h).to(torch::kFloat);
  return torch::nn::functional::cross_entropy(logits, targets.index_select(0, rows));
}

size_t lamed_set_trainable(models::CausalLmImpl& lm, LamedStage stage) {
  size_t trainable = 0;
  const auto& keywords = models::lora_excluded_keywords();
  for (auto& item : lm.named_parameters()) {
    const std::string& name = item.key();
    bool train;
    if (stage == LamedStage::Pretrain) {
      train = name.find("mm_projector") != std::string::npos || name.find("embed_tokens") != std::string::npos;
    } else {
      train = name.find(".lora_") != std::string::npos ||
              std::any_of(keywords.begin(), keywords.end(), [&](const std::string& k) { return name.find(k) != std::string::npos; });
    }
    item.value().requires_grad_(train);
    trainable += train ? 1 : 0;
  }
  return trainable;
}

TrainResult lamed_train(const LamedTrainConfig& config, const TrainRunOptions& options) {
  const DistEnv env = DistEnv::from_environment();
  std::unique_ptr<Communicator> comm;
  if (env.world_size > 1) comm = std::make_unique<Communicator>(env);
  const bool main_rank = env.is_main();
  if (config.output_dir.empty()) fail("training: no output_dir");
  if (config.data.empty()) fail("training: no data");
  fs::create_directories(config.output_dir);

  // The tokenizer, the model and what trains.
  const LamedTokenizer tokenizer = tokenizer_prepare(config, model_kind_of(config));
  torch::manual_seed(config.seed);
  LamedModel model = model_prepare(config, tokenizer.tokenizer, main_rank && options.progress);
  models::CausalLm lm = model.lm;
  const std::vector<std::string> lora_targets = trainable_prepare(config, *lm);
  if (comm) {
    for (auto& p : lm->parameters()) comm->broadcast(p, 0);
  }
  AdamWOptions adam;
  adam.lr = config.lr;
  adam.weight_decay = config.weight_decay;
  AdamW optimizer(trainable_parameters(*lm), adam);

  // The data.
  const LamedTemplates templates =
      config.templates.empty() ? LamedTemplates::builtin() : LamedTemplates::from_json(io::json_read_file(config.templates), config.templates);
  const models::MultimodalModelImpl& vlm = *lm->multimodal();
  const std::array<int64_t, 3> grid = vlm.image_grid();
  const std::vector<int64_t> size(grid.begin(), grid.end());
  const int64_t image_tokens = vlm.proj_out_num(), channels = vlm.image_channels();
  const std::string recipe = training_recipe_text(config.init, grid);
  LamedLoader train_data(lamed_mixture_items(config), tokenizer.tokenizer, templates, config, tokenizer.sequence, image_tokens, channels, size, true);
  std::unique_ptr<LamedLoader> eval_data;
  if (main_rank && !config.eval_split.empty()) {
    eval_data = std::make_unique<LamedLoader>(lamed_items_read(config.data, "cap", config.eval_split, config.eval_limit), tokenizer.tokenizer, templates,
                                              config, tokenizer.sequence, image_tokens, channels, size, false);
  }
  LoopSettings settings = config.loop_settings(train_data.size(), env.world_size, config.to_json());
  const int64_t B = config.batch_size, total = settings.total_steps;
  if (config.group_by_task) {
    std::map<std::string, int64_t> ids;
    for (size_t i = 0; i < train_data.size(); ++i) settings.groups.push_back(ids.emplace(train_data.item(i).task, ids.size()).first->second);
  }

  LoopHooks hooks;
  hooks.load = [&train_data](const std::vector<int64_t>& indices, int64_t epoch) { return train_data.batch(indices, epoch); };
  hooks.loss = [&](const Batch& b) { return lamed_lm_loss(*lm, b.images, b.input_ids, b.attention_mask, b.labels); };
  if (eval_data) hooks.evaluate = [&] { return caption_loss(*lm, *eval_data, B); };
  hooks.save_files = [&](const std::string& dir) {
    io::write_file_atomic(dir + "/config.json", model.config.dump(2) + "\n");
    tokenizer_write(tokenizer, dir);
    if (!recipe.empty()) io::write_file_atomic(dir + "/m3d_recipe.json", recipe);
    if (!lora_targets.empty()) models::lora_save_adapter(*lm, config.lora, dir + "/adapter");
  };
  TrainResult result = training_loop(settings, *lm, optimizer, comm.get(), env, hooks, options);
  if (main_rank && !result.stopped && result.steps == total) {
    result.checkpoint = final_model_write(config, *lm, model.config, tokenizer, recipe, !lora_targets.empty());
  }
  return result;
}

size_t lamed_export_merged(const std::string& checkpoint, const std::string& adapter, const std::string& out) {
  if (fs::exists(out + "/model.safetensors")) fail("{}: already holds a model; choose an empty folder", out);
  const std::string config_path = checkpoint + "/config.json";
  if (!fs::exists(config_path)) fail("{}: no config.json (not a model checkpoint)", checkpoint);
  const io::Checkpoint weights = io::checkpoint_open(checkpoint);
  const std::string adapter_dir = !adapter.empty() ? adapter : checkpoint + "/adapter";
  if (!fs::exists(adapter_dir + "/adapter_config.json")) {
    fail("{}: no LoRA adapter (adapter/adapter_config.json); give the peft adapter folder with --adapter", checkpoint);
  }
  models::CausalLm lm = models::model_build(io::hf_config_read(config_path), config_path, &weights);
  io::LoadOptions load;
  load.ignore = {models::kSegModulePrefix, models::kSegProjectorPrefix};
  if (adapter.empty()) {  // an m3d checkpoint: adapter weights are in model.safetensors
    const auto config = models::LoraConfig::from_peft_json(io::json_read_file(adapter_dir + "/adapter_config.json"), adapter_dir + "/adapter_config.json");
    models::lora_apply(*lm, config);
    io::state_dict_load(*lm, weights, load);
  } else {
    io::state_dict_load(*lm, weights, load);
    models::lora_load_adapter(*lm, adapter_dir);
  }
  const size_t merged = models::lora_merge(*lm);
  const std::string partial = out + ".partial";
  fs::remove_all(partial);
  fs::create_directories(partial);
  save_model_weights(*lm, partial + "/model.safetensors");
  fs::copy_file(config_path, partial + "/config.json");
  copy_tokenizer_files(checkpoint, partial);
  for (const char* name : {"added_tokens.json", "generation_config.json", "m3d_recipe.json"}) {
    if (fs::exists(checkpoint + "/" + name)) fs::copy_file(checkpoint + "/" + name, partial + "/" + name);
  }
  if (fs::exists(out)) fs::remove_all(out);  // an empty or half-written folder
  fs::rename(partial, out);
  return merged;
}

}  // namespace m3d::train
