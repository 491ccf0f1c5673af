// LaMed instruction tuning (see lamed_train.h).
#include "train/lamed_train.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/csv.h"
#include "io/json_util.h"
#include "io/npy.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "data/synth.h"
#include "m3d/error.h"
#include "models/causal_lm.h"
#include "models/clip.h"
#include "models/layers.h"
#include "text/box.h"
#include "text/tokenizer.h"
#include "train/distributed.h"
#include "train/optim.h"

namespace m3d::train {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The tokens train.py adds (initialize_vision_tokenizer): <im_patch>, <bx_start>,
// <bx_end> special, [SEG] not.
const std::vector<std::pair<std::string, bool>>& lamed_added_tokens() {
  static const std::vector<std::pair<std::string, bool>> tokens = {{"<im_patch>", true}, {"<bx_start>", true}, {"<bx_end>", true}, {"[SEG]", false}};
  return tokens;
}

std::string format_one(const std::string& pattern, const std::string& value) {
  const size_t at = pattern.find("{}");
  if (at == std::string::npos) return pattern;
  return pattern.substr(0, at) + value + pattern.substr(at + 2);
}

template <class T>
const T& pick(const std::vector<T>& items, std::mt19937_64& rng) {
  return items[static_cast<size_t>(rng() % items.size())];
}

// One training item: the task and what its question and answer are made from.
struct Item {
  std::string task;  // cap, vqa_closed, vqa_open, rec, reg
  std::string image;
  std::string text;  // cap: the report file; vqa: the question
  std::string answer;  // vqa
  std::vector<std::string> choices;  // closed vqa: A-D
  int answer_choice = 0;  // closed vqa: index of the right choice
  std::string labels;  // rec/reg: the organ label map (.npy)
  int64_t label = 0;  // rec/reg: its value for the organ
  std::string name;  // rec/reg: the class name
};

std::string resolve_in(const std::string& root, const std::string& path) { return !path.empty() && path[0] == '/' ? path : root + "/" + path; }

std::vector<Item> read_tasks(const std::string& root, const std::string& task, const std::string& split, int64_t limit) {
  std::vector<Item> out;
  const std::string cap_path = root + "/M3D_Cap_npy/M3D_Cap.json";
  if (task == "cap" || task == "rec" || task == "reg") {
    if (!fs::exists(cap_path)) fail("{}: no M3D_Cap_npy/M3D_Cap.json (the M3D-Cap layout; `m3d synth` writes one)", root);
    const json cap = io::json_read_file(cap_path);
    if (!cap.contains(split) || !cap[split].is_array()) fail("{}: no \"{}\" split", cap_path, split);
    for (const auto& entry : cap[split]) {
      if (limit >= 0 && static_cast<int64_t>(out.size()) >= limit) break;
      if (!entry.contains("image") || !entry.contains("text")) fail("{}: every item needs \"image\" and \"text\"", cap_path);
      const std::string image = resolve_in(root, entry["image"].get<std::string>());
      if (task == "cap") {
        Item item;
        item.task = "cap";
        item.image = image;
        item.text = resolve_in(root, entry["text"].get<std::string>());
        out.push_back(std::move(item));
        continue;
      }
      // Positioning from the m3d synth label maps beside the image (organs.npy + truth.json).
      const std::string folder = fs::path(image).parent_path().string();
      if (!fs::exists(folder + "/truth.json") || !fs::exists(folder + "/organs.npy")) {
        fail("{}: no organs.npy / truth.json beside the image: rec/reg training reads the m3d synth label maps", folder);
      }
      const json truth = io::json_read_file(folder + "/truth.json");
      const auto& names = data::organ_names();
      for (const auto& organ : truth.at("organs")) {
        const auto it = std::find(names.begin(), names.end(), organ.get<std::string>());
        if (it == names.end()) continue;
        Item item;
        item.task = task;
        item.image = image;
        item.labels = folder + "/organs.npy";
        item.label = static_cast<int64_t>(it - names.begin()) + 1;
        item.name = *it;
        out.push_back(std::move(item));
      }
    }
  } else if (task == "vqa_closed" || task == "vqa_open") {
    const std::string csv_split = split == "validation" ? "val" : split;
    const std::string path = root + "/M3D-VQA/M3D_VQA_" + csv_split + ".csv";
    if (!fs::exists(path)) fail("{}: missing (the M3D-VQA layout)", path);
    const io::CsvTable table = io::csv_read(path);
    std::map<std::string, int> col;
    for (const char* name : {"Image Path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer Choice"}) {
      col[name] = table.column(name);
      if (col[name] < 0) fail("{}: missing column '{}'", path, name);
    }
    for (const auto& row : table.rows) {
      if (limit >= 0 && static_cast<int64_t>(out.size()) >= limit) break;
      Item item;
      item.task = task;
      item.image = resolve_in(root, row[col["Image Path"]]);
      item.text = row[col["Question"]];
      item.answer = row[col["Answer"]];
      if (task == "vqa_closed") {
        item.choices = {row[col["Choice A"]], row[col["Choice B"]], row[col["Choice C"]], row[col["Choice D"]]};
        const std::string& letter = row[col["Answer Choice"]];
        if (letter.size() != 1 || letter[0] < 'A' || letter[0] > 'D') fail("{}: Answer Choice '{}' is not A-D", path, letter);
        item.answer_choice = letter[0] - 'A';
      }
      out.push_back(std::move(item));
    }
  } else if (task == "refseg") {  // RefSegDataset's text: the question, the answer with its [SEG]
    const std::string path = root + "/M3D_RefSeg_npy/M3D_RefSeg_" + (split == "train" ? std::string("train") : std::string("test")) + ".csv";
    if (!fs::exists(path)) fail("{}: missing (the M3D-RefSeg layout)", path);
    const io::CsvTable table = io::csv_read(path);
    const int image = table.column("Image"), question = table.column("Question"), answer = table.column("Answer");
    if (image < 0 || question < 0 || answer < 0) fail("{}: needs the columns Image, Question and Answer", path);
    for (const auto& row : table.rows) {
      if (limit >= 0 && static_cast<int64_t>(out.size()) >= limit) break;
      Item item;
      item.task = task;
      item.image = resolve_in(root, row[static_cast<size_t>(image)]);
      item.text = row[static_cast<size_t>(question)];
      item.answer = row[static_cast<size_t>(answer)];
      out.push_back(std::move(item));
    }
  } else {
    fail("unknown training task '{}' (tasks: cap, vqa_closed, vqa_open, rec, reg, refseg)", task);
  }
  return out;
}

// Loads, augments and builds the sequences of a micro-batch.
class LamedLoader {
 public:
  LamedLoader(std::vector<Item> items, const text::Tokenizer& tokenizer, const LamedTemplates& templates, const LamedTrainConfig& config,
              int64_t image_tokens, int64_t channels, std::vector<int64_t> size, bool train)
      : items_(std::move(items)), tokenizer_(tokenizer), templates_(templates), config_(config), channels_(channels), size_(std::move(size)),
        train_(train) {
    for (int64_t i = 0; i < image_tokens; ++i) image_tokens_ += "<im_patch>";
    pad_ = tokenizer.token_to_id("<unk>");
    eos_ = tokenizer.token_to_id("</s>");
    if (eos_ < 0) eos_ = tokenizer.token_to_id("<|endoftext|>");
    if (eos_ < 0) fail("the tokenizer has no </s> or <|endoftext|> (the EOS the answers end with)");
    if (pad_ < 0) pad_ = eos_;  // train.py: pad = unk when there is one, else eos
  }

  size_t size() const { return items_.size(); }
  const Item& item(size_t i) const { return items_[i]; }

  Batch batch(const std::vector<int64_t>& indices, int64_t epoch) {
    std::vector<torch::Tensor> images, ids, labels, masks;
    for (int64_t index : indices) {
      const Item& item = items_[static_cast<size_t>(index)];
      auto rng = sample_rng(config_.seed, 3, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index));
      torch::Tensor image = volume(item.image);
      torch::Tensor mask;
      if (!item.labels.empty()) mask = organ_mask(item);
      if (train_ && config_.augment) image = augment(image, rng, mask.defined() ? &mask : nullptr);
      const auto [question, answer] = text_of(item, mask, rng);
      const LamedSample s = lamed_build_sample(tokenizer_, question, answer, config_.max_length, pad_, eos_);
      images.push_back(image);
      ids.push_back(torch::tensor(s.input_ids, torch::kLong));
      labels.push_back(torch::tensor(s.labels, torch::kLong));
      masks.push_back(torch::tensor(s.attention_mask, torch::kLong));
    }
    // Padded to max_length as the official collator gets them; the columns no row
    // uses are cut (all pad, mask 0, label -100: the loss is the same).
    auto input_ids = torch::stack(ids), attention_mask = torch::stack(masks), label = torch::stack(labels);
    const int64_t used = std::max((attention_mask.sum(0) > 0).nonzero().max().item<int64_t>() + 2, (label != -100).nonzero().select(1, 1).max().item<int64_t>() + 1);
    const int64_t keep = std::min(used, input_ids.size(1));
    return {torch::stack(images), input_ids.slice(1, 0, keep).contiguous(), attention_mask.slice(1, 0, keep).contiguous(),
            label.slice(1, 0, keep).contiguous()};
  }

 private:
  std::pair<std::string, std::string> text_of(const Item& item, const torch::Tensor& mask, std::mt19937_64& rng) const {
    if (item.task == "cap") return {image_tokens_ + pick(templates_.caption, rng), read_text_file(item.text)};
    if (item.task == "vqa_closed") {  // VQADataset(close_ended=True)
      std::vector<int> order = {0, 1, 2, 3};
      if (train_ && config_.shuffle_choices) std::shuffle(order.begin(), order.end(), rng);
      std::string question = item.text + " Choices:";
      char letter = 'A';
      for (int k = 0; k < 4; ++k) {
        question += fmt::format(" {}. {}", static_cast<char>('A' + k), item.choices[static_cast<size_t>(order[static_cast<size_t>(k)])]);
        if (order[static_cast<size_t>(k)] == item.answer_choice) letter = static_cast<char>('A' + k);
      }
      return {image_tokens_ + " " + question, fmt::format("{}. {}", letter, item.answer)};
    }
    if (item.task == "vqa_open" || item.task == "refseg") return {image_tokens_ + " " + item.text, item.answer};
    const auto m = mask.to(torch::kUInt8).contiguous();
    const std::vector<uint8_t> bits(m.data_ptr<uint8_t>(), m.data_ptr<uint8_t>() + m.numel());
    const auto box = text::mask_to_box(bits, m.size(-3), m.size(-2), m.size(-1));
    const std::string box_text = box ? "<bx_start>" + text::box_text(*box) + "<bx_end>" : "";
    if (item.task == "rec") {
      const std::string question = image_tokens_ + " " + format_one(pick(templates_.rec_questions, rng), item.name);
      return {question, box ? format_one(pick(templates_.rec_answers, rng), box_text) : format_one(pick(templates_.rec_no_answers, rng), item.name)};
    }
    if (!box) return {image_tokens_ + " " + format_one(pick(templates_.rec_questions, rng), item.name), format_one(pick(templates_.rec_no_answers, rng), item.name)};
    return {image_tokens_ + " " + format_one(pick(templates_.reg_questions, rng), box_text), format_one(pick(templates_.reg_answers, rng), item.name)};
  }

  torch::Tensor organ_mask(const Item& item) const {
    auto labels = io::tensor_from_record(io::npy_read(item.labels).array);
    if (labels.dim() == 3) labels = labels.unsqueeze(0);
    if (labels.dim() != 4) fail("{}: expected a (1, D, H, W) label map", item.labels);
    return (labels == item.label).to(torch::kUInt8).clone();
  }

  torch::Tensor volume(const std::string& path) {
    if (config_.cache_images) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (auto it = cache_.find(path); it != cache_.end()) return it->second;
    }
    torch::Tensor image = load_model_volume(path, channels_, size_);
    if (config_.cache_images) {
      std::lock_guard<std::mutex> lock(mutex_);
      cache_[path] = image;
    }
    return image;
  }

  std::vector<Item> items_;
  const text::Tokenizer& tokenizer_;
  const LamedTemplates& templates_;
  const LamedTrainConfig& config_;
  std::string image_tokens_;
  int64_t channels_;
  std::vector<int64_t> size_;
  bool train_;
  int64_t pad_ = 0, eos_ = 2;
  std::mutex mutex_;
  std::map<std::string, torch::Tensor> cache_;
};

}  // namespace

LamedSample lamed_build_sample(const text::Tokenizer& tokenizer, const std::string& question, const std::string& answer,
                               int64_t max_length, int64_t pad_id, int64_t eos_id) {
  if (max_length < 2) fail("max_length must be at least 2, not {}", max_length);
  const auto n = static_cast<size_t>(max_length);
  // Truncation keeps the first max_length ids: the Llama/Phi-3/Qwen2 post-processors
  // add at most a leading BOS, so HF's truncate-then-add-specials gives the same.
  auto ids = tokenizer.encode(question + " " + answer);
  if (ids.size() > n) ids.resize(n);
  const size_t valid = ids.size();
  const size_t question_len = std::min(tokenizer.encode(question).size(), n);

  LamedSample s;
  s.input_ids = ids;
  s.input_ids.resize(n, pad_id);
  s.attention_mask.assign(n, 0);
  std::fill(s.attention_mask.begin(), s.attention_mask.begin() + static_cast<std::ptrdiff_t>(valid), 1);
  if (valid < n) s.input_ids[valid] = eos_id;
  s.labels = s.input_ids;
  std::fill(s.labels.begin(), s.labels.begin() + static_cast<std::ptrdiff_t>(question_len), -100);
  for (auto& label : s.labels) {
    if (label == pad_id) label = -100;
  }
  if (pad_id == eos_id && valid < n) s.labels[valid] = eos_id;
  return s;
}

torch::Tensor lamed_lm_loss(models::CausalLmImpl& lm, const torch::Tensor& images, const torch::Tensor& input_ids,
                            const torch::Tensor& attention_mask, const torch::Tensor& labels) {
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


LamedTemplates LamedTemplates::builtin() {
  LamedTemplates t;
  t.caption = {"Can you provide a caption consists of findings for this medical image?", "Please generate a medical report based on this image.",
               "Describe the findings of the medical image you see."};
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
    } catch (const json::exception&) {
      fail("{}: \"{}\" must be a list of strings", where, key);
    }
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
  static const std::set<std::string> known = {
      "init", "vision_init", "tokenizer", "model", "stage", "lora", "freeze", "data", "mixture", "train_split", "eval_split", "eval_limit", "templates",
      "max_length", "augment", "cache_images", "shuffle_choices", "group_by_task", "description"};
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
  } catch (const json::exception& e) {
    fail("{}: malformed training config: {}", where, e.what());
  }
  if (t.init.empty() && t.model.is_null()) fail("{}: give \"init\" (a LaMed checkpoint) or \"model\" (a LaMed config)", where);
  if (t.stage != "pretrain" && t.stage != "finetune" && t.stage != "full") fail("{}: stage must be pretrain, finetune or full, not '{}'", where, t.stage);
  for (const auto& [task, weight] : t.mixture) {
    if (task != "cap" && task != "vqa_closed" && task != "vqa_open" && task != "rec" && task != "reg" && task != "refseg") {
      fail("{}: unknown mixture task '{}' (tasks: cap, vqa_closed, vqa_open, rec, reg, refseg)", where, task);
    }
    if (weight < 0 || !std::isfinite(weight)) fail("{}: mixture weight of '{}' must be a non-negative number", where, task);
  }
  if (t.max_length < 8) fail("{}: max_length must be at least 8", where);
  return t;
}

json LamedTrainConfig::to_json() const {
  json out = {{"init", init}, {"vision_init", vision_init}, {"tokenizer", tokenizer}, {"model", model}, {"stage", stage}, {"freeze", freeze},
              {"lora", {{"r", lora.r}, {"lora_alpha", lora.alpha}, {"lora_dropout", lora.dropout}, {"target_modules", lora.target_modules}}},
              {"data", data}, {"mixture", mixture}, {"train_split", train_split}, {"eval_split", eval_split}, {"eval_limit", eval_limit},
              {"templates", templates}, {"max_length", max_length}, {"augment", augment}, {"cache_images", cache_images},
              {"shuffle_choices", shuffle_choices}, {"group_by_task", group_by_task}};
  out.update(schedule_json());
  return out;
}

std::vector<std::string> lamed_train_presets() { return {"stage1", "stage2", "tiny"}; }

json lamed_train_preset(const std::string& name) {
  if (name == "stage1") {  // LaMed/script/pretrain_phi3.sh
    return {{"description", "stage 1 (alignment) as pretrain_phi3.sh: projector and input embeddings, Cap + closed/open VQA, 3 epochs, "
                            "batch 16, lr 1e-4, wd 0"},
            {"stage", "pretrain"}, {"mixture", {{"cap", 1}, {"vqa_closed", 1}, {"vqa_open", 1}}}, {"epochs", 3}, {"batch_size", 16},
            {"lr", 1e-4}, {"weight_decay", 0.0}, {"warmup_ratio", 0.03}, {"max_length", 512}, {"save_steps", 1000}};
  }
  if (name == "stage2") {  // LaMed/script/finetune_lora_phi3.sh
    return {{"description", "stage 2 (instruction tuning) as finetune_lora_phi3.sh: LoRA r 16 / alpha 32 / dropout 0.05 on the LLM, vision "
                            "tower, projector, embeddings and lm_head in full; Cap, VQA, REC, REG; 5 epochs, batch 8, lr 5e-5"},
            {"stage", "finetune"}, {"lora", {{"r", 16}, {"lora_alpha", 32}, {"lora_dropout", 0.05}}},
            {"mixture", {{"cap", 1}, {"vqa_closed", 1}, {"vqa_open", 1}, {"rec", 1}, {"reg", 1}}}, {"epochs", 5}, {"batch_size", 8},
            {"lr", 5e-5}, {"weight_decay", 0.0}, {"warmup_ratio", 0.03}, {"max_length", 512}, {"save_steps", 1000}};
  }
  if (name == "tiny") {
    const json model = {
        {"architectures", {"LamedLlamaForCausalLM"}}, {"model_type", "lamed_llama"}, {"hidden_size", 256}, {"intermediate_size", 688},
        {"num_hidden_layers", 4}, {"num_attention_heads", 4}, {"num_key_value_heads", 4}, {"max_position_embeddings", 1024},
        {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2},
        {"hidden_act", "silu"}, {"image_channel", 1}, {"image_size", {16, 64, 64}}, {"patch_size", {4, 16, 16}}, {"vision_tower", "vit3d"},
        {"vision_select_layer", -1}, {"vision_select_feature", "patch"}, {"mm_projector_type", "spp"}, {"proj_layer_type", "mlp"},
        {"proj_layer_num", 2}, {"proj_pooling_type", "spatial"}, {"proj_pooling_size", 2}, {"mm_hidden_size", 192}, {"proj_out_num", 8},
        {"vision_hidden_size", 192}, {"vision_mlp_dim", 384}, {"vision_num_layers", 4}, {"vision_num_heads", 4}};
    return {{"description", "one CPU: a 4-layer, 256-wide Llama-style LaMed from scratch (Llama-2 tokenizer) on 16x64x64 volumes, its ViT "
                            "from the tiny M3D-CLIP and frozen, everything else trained on Cap, VQA (choices shuffled) and REC, batches grouped by task"},
            {"model", model}, {"tokenizer", "third_party/tokenizers/llama2"}, {"stage", "full"}, {"freeze", {"model.vision_tower."}},
            {"shuffle_choices", true}, {"group_by_task", true},
            {"mixture", {{"cap", 3}, {"vqa_closed", 5}, {"vqa_open", 0.5}, {"rec", 2}, {"reg", 0}}},
            {"epochs", 2}, {"batch_size", 16},
            {"lr", 1e-3}, {"weight_decay", 0.0}, {"warmup_ratio", 0.05}, {"max_length", 256}, {"cache_images", true}, {"save_steps", 200},
            {"eval_split", ""}};
  }
  std::string names;
  for (const auto& n : lamed_train_presets()) names += (names.empty() ? "" : ", ") + n;
  fail("unknown training preset '{}' (presets: {})", name, names);
}

TrainResult lamed_train(const LamedTrainConfig& config, const TrainRunOptions& options) {
  const DistEnv env = DistEnv::from_environment();
  std::unique_ptr<Communicator> comm;
  if (env.world_size > 1) comm = std::make_unique<Communicator>(env);
  const bool main_rank = env.is_main();
  if (config.output_dir.empty()) fail("training: no output_dir");
  if (config.data.empty()) fail("training: no data");
  fs::create_directories(config.output_dir);

  // Tokenizer with LaMed's tokens.
  const std::string tokenizer_dir = config.tokenizer.empty() ? config.init : config.tokenizer;
  if (tokenizer_dir.empty()) fail("training: no tokenizer (give \"tokenizer\" or \"init\")");
  text::Tokenizer tokenizer = text::Tokenizer::load(tokenizer_dir);
  std::map<std::string, int64_t> added;
  for (const auto& [token, special] : lamed_added_tokens()) {
    if (tokenizer.token_to_id(token) < 0) {
      if (special) tokenizer.add_special_tokens({token});
      else tokenizer.add_tokens({token});
    }
    added[token] = tokenizer.token_to_id(token);
  }

  // The model.
  torch::manual_seed(config.seed);
  json model_config;
  std::unique_ptr<io::Checkpoint> checkpoint;
  if (!config.init.empty()) {
    model_config = io::json_read_file(config.init + "/config.json");
    checkpoint = std::make_unique<io::Checkpoint>(io::checkpoint_open(config.init));
  } else {
    model_config = config.model;
    model_config["vocab_size"] = tokenizer.vocab_size();
  }
  const std::string config_path = config.output_dir + "/config.json";
  io::write_file_atomic(config_path, model_config.dump(2) + "\n");
  models::CausalLm lm = models::model_build(io::hf_config_read(config_path), config_path, checkpoint.get());
  if (lm->lamed() == nullptr) fail("{}: '{}' is not a LaMed architecture (it has no vision tower)", config_path, model_config.value("architectures", json()).dump());
  if (checkpoint) {
    io::LoadOptions load;
    load.ignore = {"model.seg_module.", "model.seg_projector."};
    io::state_dict_load(*lm, *checkpoint, load);
  } else {
    torch::NoGradGuard no_grad;  // HF's init for a model from scratch
    for (const auto& item : lm->named_parameters()) {
      const std::string& name = item.key();
      auto t = item.value();
      if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) t.zero_();
      else if (name.find("norm") != std::string::npos) t.fill_(1);
      else t.normal_(0, 0.02);
    }
  }
  // resize_token_embeddings(len(tokenizer)) (initialize_vision_tokenizer): rows beyond
  // the old vocabulary start at the mean of the old rows, in embed_tokens and lm_head.
  // (train.py overwrites the last 4 rows with the mean whether or not they are new; a
  // LaMed checkpoint's trained token rows are kept here.)
  const int64_t vocab = tokenizer.vocab_size(), old_vocab = lm->model->embed_tokens->weight.size(0);
  if (vocab != old_vocab) {
    torch::NoGradGuard no_grad;
    auto resize = [&](torch::Tensor& weight) {
      const auto old = weight.detach();
      const int64_t keep = std::min(vocab, old.size(0));
      auto fresh = torch::empty({vocab, old.size(1)}, old.options());
      fresh.slice(0, 0, keep).copy_(old.slice(0, 0, keep));
      if (vocab > keep) fresh.slice(0, keep).copy_(old.mean(0, true).expand({vocab - keep, old.size(1)}));
      weight.set_data(fresh);
    };
    resize(lm->model->embed_tokens->weight);
    if (lm->lm_head) resize(lm->lm_head->weight);
    model_config["vocab_size"] = vocab;
    if (main_rank && options.progress) spdlog::info("vocabulary resized from {} to {} for LaMed's tokens", old_vocab, vocab);
  }
  auto* lamed = lm->lamed();
  if (!config.vision_init.empty()) {  // train.py pretrain_vision_model: the CLIP's ViT
    const io::Checkpoint clip = io::checkpoint_open(config.vision_init);
    io::LoadOptions load;
    load.prefix = "vision_encoder.";
    load.whole_checkpoint = false;
    io::state_dict_load(*lamed->vision_tower->vision_tower, clip, load);
  }
  LamedStage stage = config.stage == "pretrain" ? LamedStage::Pretrain : LamedStage::Finetune;
  std::vector<std::string> lora_targets;
  if (config.stage == "finetune") lora_targets = models::lora_apply(*lm, config.lora);
  lm->train();
  lamed->vision_tower->vision_tower->set_gradient_checkpointing(config.gradient_checkpointing);
  if (config.stage == "full") {
    for (auto& p : lm->parameters()) p.requires_grad_(true);
  } else {
    lamed_set_trainable(*lm, stage);
  }
  for (const auto& prefix : config.freeze) {
    size_t matched = 0;
    for (auto& item : lm->named_parameters()) {
      if (item.key().rfind(prefix, 0) == 0) item.value().requires_grad_(false), ++matched;
    }
    if (matched == 0) fail("training: \"freeze\" prefix '{}' matches no parameter", prefix);
  }
  if (comm) {
    for (auto& p : lm->parameters()) comm->broadcast(p, 0);
  }
  AdamWOptions adam;
  adam.lr = config.lr;
  adam.weight_decay = config.weight_decay;
  AdamW optimizer(trainable_parameters(*lm), adam);

  // Data.
  const LamedTemplates templates = config.templates.empty() ? LamedTemplates::builtin()
                                                            : LamedTemplates::from_json(io::json_read_file(config.templates), config.templates);
  std::vector<Item> items;
  for (const auto& [task, weight] : config.mixture) {
    if (weight <= 0) continue;
    const auto all = read_tasks(config.data, task, config.train_split, -1);
    const auto count = static_cast<size_t>(std::llround(weight * static_cast<double>(all.size())));
    for (size_t i = 0; i < count; ++i) items.push_back(all[i * all.size() / std::max<size_t>(count, 1) % all.size()]);
  }
  if (items.empty()) fail("training: the mixture selects no sample");
  const auto& lc = lamed->lamed_config();
  const std::vector<int64_t> size(lc.image_size.begin(), lc.image_size.end());
  const int64_t image_tokens = lc.proj_out_num;
  LamedLoader train_data(std::move(items), tokenizer, templates, config, image_tokens, lc.image_channel, size, true);
  std::unique_ptr<LamedLoader> eval_data;
  if (main_rank && !config.eval_split.empty()) {
    eval_data = std::make_unique<LamedLoader>(read_tasks(config.data, "cap", config.eval_split, config.eval_limit), tokenizer, templates, config,
                                              image_tokens, lc.image_channel, size, false);
  }
  LoopSettings settings = config.loop_settings(train_data.size(), env.world_size, config.to_json());
  const int64_t B = config.batch_size, total = settings.total_steps;
  if (config.group_by_task) {
    std::map<std::string, int64_t> ids;
    for (size_t i = 0; i < train_data.size(); ++i) settings.groups.push_back(ids.emplace(train_data.item(i).task, ids.size()).first->second);
  }

  auto write_tokenizer = [&](const std::string& dir) {
    copy_tokenizer_files(tokenizer_dir, dir);
    json tokens = json::object();
    for (const auto& [token, id] : added) tokens[token] = id;
    io::write_file_atomic(dir + "/added_tokens.json", tokens.dump(2) + "\n");
    // The special ones must stay special when the folder is loaded (session_open reads this).
    json map = fs::exists(dir + "/special_tokens_map.json") ? io::json_read_file(dir + "/special_tokens_map.json") : json::object();
    std::vector<std::string> specials = map.value("additional_special_tokens", std::vector<std::string>());
    for (const auto& [token, special] : lamed_added_tokens()) {
      if (special && std::find(specials.begin(), specials.end(), token) == specials.end()) specials.push_back(token);
    }
    map["additional_special_tokens"] = specials;
    io::write_file_atomic(dir + "/special_tokens_map.json", map.dump(2) + "\n");
  };
  LoopHooks hooks;
  hooks.load = [&train_data](const std::vector<int64_t>& indices, int64_t epoch) { return train_data.batch(indices, epoch); };
  hooks.loss = [&](const Batch& b) { return lamed_lm_loss(*lm, b.images, b.input_ids, b.attention_mask, b.labels); };
  if (eval_data) {
    hooks.evaluate = [&]() -> json {
      torch::NoGradGuard no_grad;
      lm->eval();
      double sum = 0;
      int64_t batches = 0;
      for (size_t start = 0; start < eval_data->size(); start += static_cast<size_t>(B), ++batches) {
        std::vector<int64_t> indices;
        for (size_t i = start; i < std::min(eval_data->size(), start + static_cast<size_t>(B)); ++i) indices.push_back(static_cast<int64_t>(i));
        const Batch b = eval_data->batch(indices, 0);
        sum += lamed_lm_loss(*lm, b.images, b.input_ids, b.attention_mask, b.labels).item<double>();
      }
      lm->train();
      return {{"caption_loss", sum / static_cast<double>(std::max<int64_t>(batches, 1))}, {"samples", eval_data->size()}};
    };
  }
  hooks.save_files = [&](const std::string& dir) {
    io::write_file_atomic(dir + "/config.json", model_config.dump(2) + "\n");
    write_tokenizer(dir);
    if (!lora_targets.empty()) models::lora_save_adapter(*lm, config.lora, dir + "/adapter");
  };
  TrainResult result = training_loop(settings, *lm, optimizer, comm.get(), env, hooks, options);

  // The final model, loadable by m3d generate / bench / the official code: adapters merged.
  if (main_rank && !result.stopped && result.steps == total) {
    const std::string final_dir = config.output_dir + "/final", partial = final_dir + ".partial";
    fs::remove_all(partial);
    fs::create_directories(partial);
    if (!lora_targets.empty()) models::lora_save_adapter(*lm, config.lora, partial + "/adapter");
    models::lora_merge(*lm);
    save_model_weights(*lm, partial + "/model.safetensors");
    io::write_file_atomic(partial + "/config.json", model_config.dump(2) + "\n");
    write_tokenizer(partial);
    fs::remove_all(final_dir);
    fs::rename(partial, final_dir);
    result.checkpoint = final_dir;
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
  load.ignore = {"model.seg_module.", "model.seg_projector."};
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
