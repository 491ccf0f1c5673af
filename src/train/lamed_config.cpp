// LaMed training's configuration: the prompt templates, the config keys and the named
// presets (see lamed_train.h).
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "data/m3d_data.h"
#include "data/sample.h"
#include "m3d/error.h"
#include "models/dcformer.h"
#include "train/lamed_train.h"

namespace m3d::train {

using json = nlohmann::json;

LamedTemplates LamedTemplates::builtin() {
  LamedTemplates t;
  t.caption = data::caption_templates();
  t.rec_questions = {"Where is {} in this image? Please output the box.", "Can you find the {} in this image? Give coordinates."};
  t.rec_answers = {"Coordinates are {}.", "Sure, the bounding box is {}."};
  t.rec_no_answers = {"Sorry, there is no {}.", "This is {}, but not here."};
  t.reg_questions = {"What target is present within the coordinates {} ?"};
  t.reg_answers = {"The target is {}."};
  return t;
}

LamedTemplates LamedTemplates::from_json(const json& root, const std::string& where) {
  LamedTemplates t = builtin();
  auto list = [&](const json& node, const std::string& key, std::vector<std::string>& out) {
    if (!node.is_object() || !node.contains(key)) return;
    try {
      out = node[key].get<std::vector<std::string>>();
    } catch (const json::exception&) { fail("{}: \"{}\" must be a list of strings", where, key); }
    if (out.empty()) fail("{}: \"{}\" is empty", where, key);
  };
  if (root.contains("Caption_templates")) {
    if (!root["Caption_templates"].is_array()) fail("{}: \"Caption_templates\" must be a list of strings", where);
    list(json{{"c", root["Caption_templates"]}}, "c", t.caption);
  }
  const json rec = root.value("PosREC_templates", json::object()), reg = root.value("PosREG_templates", json::object());
  list(rec, "cls_questions", t.rec_questions);
  list(rec, "cls_answers", t.rec_answers);
  list(rec, "cls_no_answers", t.rec_no_answers);
  list(reg, "cls_questions", t.reg_questions);
  list(reg, "cls_answers", t.reg_answers);
  return t;
}

LamedTrainConfig LamedTrainConfig::from_json(const json& c, const std::string& where) {
  LamedTrainConfig t;
  static const std::set<std::string> known = {"init",    "vision_init",  "tokenizer",       "model",         "stage",      "lora",      "freeze",
                                              "data",    "mixture",      "train_split",     "eval_split",    "eval_limit", "templates", "max_length",
                                              "augment", "cache_images", "shuffle_choices", "group_by_task", "description"};
  for (const auto& [key, value] : c.items()) {
    const auto& schedule = schedule_keys();
    if (!known.count(key) && std::find(schedule.begin(), schedule.end(), key) == schedule.end()) fail("{}: unknown training option '{}'", where, key);
  }
  try {
    t.init = c.value("init", t.init);
    t.vision_init = c.value("vision_init", t.vision_init);
    t.tokenizer = c.value("tokenizer", t.tokenizer);
    t.model = c.value("model", json());
    t.stage = c.value("stage", t.stage);
    t.freeze = c.value("freeze", t.freeze);
    if (c.contains("lora")) t.lora = models::LoraConfig::from_peft_json(c["lora"], where + " \"lora\"");
    t.data = c.value("data", t.data);
    t.mixture = c.value("mixture", std::map<std::string, double>{{"cap", 1}, {"vqa_closed", 1}, {"vqa_open", 1}, {"rec", 1}, {"reg", 1}});
    t.train_split = c.value("train_split", t.train_split);
    t.eval_split = c.value("eval_split", t.eval_split);
    t.eval_limit = c.value("eval_limit", t.eval_limit);
    t.templates = c.value("templates", t.templates);
    t.max_length = c.value("max_length", t.max_length);
    t.augment = c.value("augment", t.augment);
    t.cache_images = c.value("cache_images", t.cache_images);
    t.shuffle_choices = c.value("shuffle_choices", t.shuffle_choices);
    t.group_by_task = c.value("group_by_task", t.group_by_task);
    t.read_schedule(c, where);
  } catch (const json::exception& e) { fail("{}: malformed training config: {}", where, e.what()); }
  if (t.init.empty() && t.model.is_null()) fail("{}: give \"init\" (a LaMed checkpoint) or \"model\" (a LaMed config)", where);
  if (t.stage != "pretrain" && t.stage != "finetune" && t.stage != "full") fail("{}: stage must be pretrain, finetune or full, not '{}'", where, t.stage);
  const std::vector<std::string> tasks = data::task_names(data::TaskUser::Train);
  std::map<std::string, std::string> seen;  // canonical task -> the key that named it
  for (const auto& [task, weight] : t.mixture) {
    const std::string canonical = data::task_canonical(task);
    if (std::find(tasks.begin(), tasks.end(), canonical) == tasks.end()) {
      std::string names;
      for (const auto& n : tasks) names += (names.empty() ? "" : ", ") + n;
      fail("{}: unknown mixture task '{}' (tasks: {}; vqa_closed and vqa_open are read as vqa-closed and vqa-open)", where, task, names);
    }
    if (!seen.emplace(canonical, task).second) fail("{}: mixture names task {} twice ('{}' and '{}')", where, canonical, seen[canonical], task);
    if (weight < 0 || !std::isfinite(weight)) fail("{}: mixture weight of '{}' must be a non-negative number", where, task);
  }
  if (t.max_length < 8) fail("{}: max_length must be at least 8", where);
  return t;
}

json LamedTrainConfig::to_json() const {
  json out = {{"init", init},
              {"vision_init", vision_init},
              {"tokenizer", tokenizer},
              {"model", model},
              {"stage", stage},
              {"freeze", freeze},
              {"lora", {{"r", lora.r}, {"lora_alpha", lora.alpha}, {"lora_dropout", lora.dropout}, {"target_modules", lora.target_modules}}},
              {"data", data},
              {"mixture", mixture},
              {"train_split", train_split},
              {"eval_split", eval_split},
              {"eval_limit", eval_limit},
              {"templates", templates},
              {"max_length", max_length},
              {"augment", augment},
              {"cache_images", cache_images},
              {"shuffle_choices", shuffle_choices},
              {"group_by_task", group_by_task}};
  out.update(schedule_json());
  return out;
}

std::vector<std::string> lamed_train_presets() { return {"stage1", "stage2", "tiny", "med3dvlm-stage1", "med3dvlm-stage2", "med3dvlm-tiny"}; }

namespace {

// Med3DVLM's training presets (scripts/pretrain_mm_projector.sh, scripts/finetune_lora.sh;
// med3dvlm_spec.md §4.8) and the quickstart's tiny one.
json med3dvlm_preset(const std::string& name) {
  // pretrain_mm_projector.sh and finetune_lora.sh run M3D's stage settings; stage 2 without
  // positioning (Med3DVLM has none).
  if (name == "med3dvlm-stage1") {
    json preset = lamed_train_preset("stage1");
    preset["description"] =
        "Med3DVLM stage 1 as pretrain_mm_projector.sh: the mixer projector and input embeddings, Cap + closed/open VQA, 3 epochs, batch 16, "
        "lr 1e-4, wd 0; init: a VLMQwen built on Qwen2.5-7B-Instruct, with the DCFormer from DCFormer_SigLIP (vision_init)";
    return preset;
  }
  if (name == "med3dvlm-stage2") {
    json preset = lamed_train_preset("stage2");
    preset["description"] =
        "Med3DVLM stage 2 as finetune_lora.sh: LoRA r 16 / alpha 32 / dropout 0.05 on every LLM Linear, the DCFormer, projector, embeddings "
        "and lm_head in full; Cap + closed/open VQA (its yes/no VQA set is not in M3D-Data); 5 epochs, batch 8, lr 5e-5";
    preset["mixture"] = {{"cap", 1}, {"vqa_closed", 1}, {"vqa_open", 1}};
    return preset;
  }
  // A Qwen2-shaped decoder (GQA, q/k/v biases, tied embeddings) over the real Qwen2.5
  // tokenizer, the DCFormer of `m3d train clip --preset med3dvlm-tiny` (its dims and grid,
  // so that vision_init loads strictly) and a two-layer mixer: 16 + 4 DCFormer tokens -> 8 + 8.
  const json clip = clip_train_preset("med3dvlm-tiny").at("model");
  const json channels = clip.at("dcformer_channels");
  const json model = {{"architectures", "VLMQwenForCausalLM"},
                      {"model_type", "vlm_qwen"},
                      {"hidden_size", 256},
                      {"intermediate_size", 688},
                      {"num_hidden_layers", 4},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"max_position_embeddings", 1024},
                      {"rms_norm_eps", 1e-6},
                      {"rope_theta", 1000000.0},
                      {"tie_word_embeddings", true},
                      {"bos_token_id", 151643},
                      {"eos_token_id", 151645},
                      {"hidden_act", "silu"},
                      {"use_sliding_window", false},
                      {"vision_tower", "dcformer"},
                      {"vision_select_layer", -2},
                      {"vision_select_feature", "cls_patch"},
                      {"image_size", models::dcformer_image_size_from_input_size(clip, "the med3dvlm-tiny CLIP preset", {128, 256, 256})},
                      {"dcformer_num_blocks", clip.at("dcformer_num_blocks")},
                      {"dcformer_channels", channels},
                      {"mm_projector_type", "mixer"},
                      {"mm_mlp_depth", 2},
                      {"low_input_size", {16, channels[3]}},
                      {"high_input_size", {4, channels[4]}},
                      {"low_output_size", {16, 8}},
                      {"high_output_size", {8, 8}},
                      {"proj_out_num", 16},
                      {"mm_hidden_size", channels[4]}};
  // The tiny run's stage, freeze list, mixture (less REC/REG: Med3DVLM has no positioning)
  // and schedule.
  json preset = lamed_train_preset("tiny");
  preset["description"] =
      "one CPU: a 4-layer, 256-wide Qwen2-style decoder from scratch (Qwen2.5 tokenizer) on 16x128x128 volumes, its DCFormer "
      "from the tiny DCFormer_SigLIP and frozen, everything else trained on Cap and VQA (choices shuffled), batches grouped by task";
  preset["model"] = model;
  preset["tokenizer"] = "third_party/tokenizers/qwen2_5";
  preset["mixture"].erase("rec");
  preset["mixture"].erase("reg");
  return preset;
}

}  // namespace

json lamed_train_preset(const std::string& name) {
  if (name == "med3dvlm-stage1" || name == "med3dvlm-stage2" || name == "med3dvlm-tiny") return med3dvlm_preset(name);
  if (name == "stage1") {  // LaMed/script/pretrain_phi3.sh
    return {{"description",
             "stage 1 (alignment) as pretrain_phi3.sh: projector and input embeddings, Cap + closed/open VQA, 3 epochs, "
             "batch 16, lr 1e-4, wd 0"},
            {"stage", "pretrain"},
            {"mixture", {{"cap", 1}, {"vqa_closed", 1}, {"vqa_open", 1}}},
            {"epochs", 3},
            {"batch_size", 16},
            {"lr", 1e-4},
            {"weight_decay", 0.0},
            {"warmup_ratio", 0.03},
            {"max_length", 512},
            {"save_steps", 1000}};
  }
  if (name == "stage2") {  // LaMed/script/finetune_lora_phi3.sh
    return {{"description",
             "stage 2 (instruction tuning) as finetune_lora_phi3.sh: LoRA r 16 / alpha 32 / dropout 0.05 on the LLM, vision "
             "tower, projector, embeddings and lm_head in full; Cap, VQA, REC, REG; 5 epochs, batch 8, lr 5e-5"},
            {"stage", "finetune"},
            {"lora", {{"r", 16}, {"lora_alpha", 32}, {"lora_dropout", 0.05}}},
            {"mixture", {{"cap", 1}, {"vqa_closed", 1}, {"vqa_open", 1}, {"rec", 1}, {"reg", 1}}},
            {"epochs", 5},
            {"batch_size", 8},
            {"lr", 5e-5},
            {"weight_decay", 0.0},
            {"warmup_ratio", 0.03},
            {"max_length", 512},
            {"save_steps", 1000}};
  }
  if (name == "tiny") {
    const json model = {{"architectures", {"LamedLlamaForCausalLM"}},
                        {"model_type", "lamed_llama"},
                        {"hidden_size", 256},
                        {"intermediate_size", 688},
                        {"num_hidden_layers", 4},
                        {"num_attention_heads", 4},
                        {"num_key_value_heads", 4},
                        {"max_position_embeddings", 1024},
                        {"rms_norm_eps", 1e-5},
                        {"rope_theta", 10000.0},
                        {"tie_word_embeddings", false},
                        {"bos_token_id", 1},
                        {"eos_token_id", 2},
                        {"hidden_act", "silu"},
                        {"image_channel", 1},
                        {"image_size", {16, 64, 64}},
                        {"patch_size", {4, 16, 16}},
                        {"vision_tower", "vit3d"},
                        {"vision_select_layer", -1},
                        {"vision_select_feature", "patch"},
                        {"mm_projector_type", "spp"},
                        {"proj_layer_type", "mlp"},
                        {"proj_layer_num", 2},
                        {"proj_pooling_type", "spatial"},
                        {"proj_pooling_size", 2},
                        {"mm_hidden_size", 192},
                        {"proj_out_num", 8},
                        {"vision_hidden_size", 192},
                        {"vision_mlp_dim", 384},
                        {"vision_num_layers", 4},
                        {"vision_num_heads", 4}};
    return {{"description",
             "one CPU: a 4-layer, 256-wide Llama-style LaMed from scratch (Llama-2 tokenizer) on 16x64x64 volumes, its ViT "
             "from the tiny M3D-CLIP and frozen, everything else trained on Cap, VQA (choices shuffled) and REC, batches grouped by task"},
            {"model", model},
            {"tokenizer", "third_party/tokenizers/llama2"},
            {"stage", "full"},
            {"freeze", {"model.vision_tower."}},
            {"shuffle_choices", true},
            {"group_by_task", true},
            {"mixture", {{"cap", 3}, {"vqa_closed", 5}, {"vqa_open", 0.5}, {"rec", 2}, {"reg", 0}}},
            {"epochs", 2},
            {"batch_size", 16},
            {"lr", 1e-3},
            {"weight_decay", 0.0},
            {"warmup_ratio", 0.05},
            {"max_length", 256},
            {"cache_images", true},
            {"save_steps", 200},
            {"eval_split", ""}};
  }
  std::string names;
  for (const auto& n : lamed_train_presets()) names += (names.empty() ? "" : ", ") + n;
  fail("unknown training preset '{}' (presets: {})", name, names);
}
}  // namespace m3d::train
