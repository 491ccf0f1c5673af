// LaMed training's data side (see lamed_data.h): items from the M3D-Data readers,
// samples as M3D's multi_dataset.py builds them.
#include "train/lamed_data.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include "data/m3d_data.h"
#include "io/hf_config.h"
#include "io/npy.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "text/box.h"
#include "text/tokenizer.h"

namespace m3d::train {
namespace {

std::string format_one(const std::string& pattern, const std::string& value) {
  const size_t at = pattern.find("{}");
  if (at == std::string::npos) return pattern;
  return pattern.substr(0, at) + value + pattern.substr(at + 2);
}

template <class T>
const T& pick(const std::vector<T>& items, std::mt19937_64& rng) {
  return items[static_cast<size_t>(rng() % items.size())];
}

}  // namespace

std::vector<LamedItem> lamed_items_read(const std::string& root, const std::string& task, const std::string& split, int64_t limit) {
  std::vector<LamedItem> out;
  if (task == "cap" || task == "rec" || task == "reg") {
    const data::CapFile cap = data::cap_find(root);
    for (const auto& pair : data::cap_read(cap, split, task == "cap" ? limit : -1)) {
      if (task == "cap") {
        LamedItem item;
        item.task = task;
        item.image = pair.image;
        item.text = pair.text;
        out.push_back(std::move(item));
        continue;
      }
      if (limit >= 0 && static_cast<int64_t>(out.size()) >= limit) break;
      for (const auto& organ : data::synth_organ_targets(pair.image)) {  // positioning from the m3d synth label maps
        LamedItem item;
        item.task = task;
        item.image = pair.image;
        item.labels = organ.label_map;
        item.label = organ.label;
        item.name = organ.name;
        out.push_back(std::move(item));
      }
    }
  } else if (task == "vqa-closed" || task == "vqa-open") {  // VQADataset
    const std::string path = data::vqa_csv_find(root, split);
    for (const auto& row : data::vqa_read(path, root, task == "vqa-closed", false, limit)) {
      LamedItem item;
      item.task = task;
      item.image = row.image;
      item.text = row.question;
      item.answer = row.answer;
      if (task == "vqa-closed") {
        item.choices.assign(row.choices.begin(), row.choices.end());
        const std::string& letter = row.answer_choice;
        if (letter.size() != 1 || letter[0] < 'A' || letter[0] > 'D') fail("{}: row {}: Answer Choice '{}' is not A-D", path, row.row, letter);
        item.answer_choice = letter[0] - 'A';
      }
      out.push_back(std::move(item));
    }
  } else if (task == "refseg") {  // RefSegDataset's text: the question, the answer with its [SEG]
    for (const auto& row : data::refseg_read(data::refseg_csv_find(root, split), root, limit)) {
      LamedItem item;
      item.task = task;
      item.image = row.image;
      item.text = row.question;
      item.answer = row.answer;
      out.push_back(std::move(item));
    }
  } else {
    std::string names;
    for (const auto& n : data::task_names(data::TaskUser::Train)) names += (names.empty() ? "" : ", ") + n;
    fail("unknown training task '{}' (tasks: {})", task, names);
  }
  return out;
}

std::vector<LamedItem> lamed_mixture_items(const LamedTrainConfig& config) {
  std::vector<LamedItem> items;
  for (const auto& [task, weight] : config.mixture) {
    if (weight <= 0) continue;
    const auto all = lamed_items_read(config.data, data::task_canonical(task), config.train_split, -1);
    const auto count = static_cast<size_t>(std::llround(weight * static_cast<double>(all.size())));
    for (size_t i = 0; i < count; ++i) items.push_back(all[i * all.size() / std::max<size_t>(count, 1) % all.size()]);
  }
  if (items.empty()) fail("training: the mixture selects no sample");
  return items;
}

SequenceTokens lamed_sequence_tokens(const text::Tokenizer& tokenizer) {
  SequenceTokens t;
  t.eos = tokenizer.token_to_id("</s>");
  if (t.eos < 0) t.eos = tokenizer.token_to_id("<|endoftext|>");
  if (t.eos < 0) fail("the tokenizer has no </s> or <|endoftext|> (the EOS the answers end with)");
  t.pad = tokenizer.token_to_id("<unk>");
  if (t.pad < 0) t.pad = t.eos;
  return t;
}

SequenceTokens med3dvlm_sequence_tokens(const text::Tokenizer& tokenizer, const std::string& dir) {
  const std::string path = dir + "/tokenizer_config.json";
  const io::TokenizerConfig config = std::filesystem::exists(path) ? io::tokenizer_config_read(path) : io::TokenizerConfig{};
  auto id_of = [&](const std::optional<std::string>& token, const char* what) -> int64_t {
    if (!token) return -1;
    const int64_t id = tokenizer.token_to_id(*token);
    if (id < 0) fail("{}: {} '{}' is not in the vocabulary", path, what, *token);
    return id;
  };
  SequenceTokens t;
  t.eos = id_of(config.eos_token, "eos_token");
  if (t.eos < 0) t.eos = tokenizer.token_to_id("<|endoftext|>");
  if (t.eos < 0) fail("{}: no eos_token, and the vocabulary has no <|endoftext|> (the EOS the answers end with)", path);
  t.pad = id_of(config.pad_token, "pad_token");
  if (t.pad < 0) t.pad = id_of(config.unk_token, "unk_token");
  if (t.pad < 0) fail("{}: neither pad_token nor unk_token is set (train_vlm.py pads with one of them)", path);
  return t;
}

LamedLoader::LamedLoader(std::vector<LamedItem> items, const text::Tokenizer& tokenizer, const LamedTemplates& templates, const LamedTrainConfig& config,
                         SequenceTokens tokens, int64_t image_tokens, int64_t channels, std::vector<int64_t> size, bool train)
    : items_(std::move(items)),
      tokenizer_(tokenizer),
      templates_(templates),
      config_(config),
      channels_(channels),
      size_(std::move(size)),
      train_(train),
      tokens_(tokens) {
  image_tokens_ = text::image_placeholders(image_tokens);
}

Batch LamedLoader::batch(const std::vector<int64_t>& indices, int64_t epoch) {
  std::vector<torch::Tensor> images, ids, labels, masks;
  for (int64_t index : indices) {
    const LamedItem& item = items_[static_cast<size_t>(index)];
    auto rng = sample_rng(config_.seed, 3, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index));
    torch::Tensor image = volume(item.image);
    torch::Tensor mask;
    if (!item.labels.empty()) mask = organ_mask(item);
    if (train_ && config_.augment) image = augment(image, rng, mask.defined() ? &mask : nullptr);
    const auto [question, answer] = text_of(item, mask, rng);
    const LamedSample s = lamed_build_sample(tokenizer_, question, answer, config_.max_length, tokens_.pad, tokens_.eos);
    images.push_back(image);
    ids.push_back(torch::tensor(s.input_ids, torch::kLong));
    labels.push_back(torch::tensor(s.labels, torch::kLong));
    masks.push_back(torch::tensor(s.attention_mask, torch::kLong));
  }
  // Padded to max_length as the official collator gets them; the columns no row
  // uses are cut (all pad, mask 0, label -100: the loss is the same).
  auto input_ids = torch::stack(ids), attention_mask = torch::stack(masks), label = torch::stack(labels);
  const int64_t used =
      std::max((attention_mask.sum(0) > 0).nonzero().max().item<int64_t>() + 2, (label != -100).nonzero().select(1, 1).max().item<int64_t>() + 1);
  const int64_t keep = std::min(used, input_ids.size(1));
  return {torch::stack(images), input_ids.slice(1, 0, keep).contiguous(), attention_mask.slice(1, 0, keep).contiguous(), label.slice(1, 0, keep).contiguous()};
}

std::pair<std::string, std::string> LamedLoader::text_of(const LamedItem& item, const torch::Tensor& mask, std::mt19937_64& rng) const {
  if (item.task == "cap") return {image_tokens_ + pick(templates_.caption, rng), read_text_file(item.text)};
  if (item.task == "vqa-closed") {  // VQADataset(close_ended=True)
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
  if (item.task == "vqa-open" || item.task == "refseg") return {image_tokens_ + " " + item.text, item.answer};
  const auto m = mask.to(torch::kUInt8).contiguous();
  const std::vector<uint8_t> bits(m.data_ptr<uint8_t>(), m.data_ptr<uint8_t>() + m.numel());
  const auto box = text::mask_to_box(bits, m.size(-3), m.size(-2), m.size(-1));
  const std::string box_text = box ? text::box_tagged(*box) : "";
  if (item.task == "rec") {
    const std::string question = image_tokens_ + " " + format_one(pick(templates_.rec_questions, rng), item.name);
    return {question, box ? format_one(pick(templates_.rec_answers, rng), box_text) : format_one(pick(templates_.rec_no_answers, rng), item.name)};
  }
  if (!box)
    return {image_tokens_ + " " + format_one(pick(templates_.rec_questions, rng), item.name), format_one(pick(templates_.rec_no_answers, rng), item.name)};
  return {image_tokens_ + " " + format_one(pick(templates_.reg_questions, rng), box_text), format_one(pick(templates_.reg_answers, rng), item.name)};
}

torch::Tensor LamedLoader::organ_mask(const LamedItem& item) const {
  auto labels = io::tensor_from_record(io::npy_read(item.labels).array);
  if (labels.dim() == 3) labels = labels.unsqueeze(0);
  if (labels.dim() != 4) fail("{}: expected a (1, D, H, W) label map", item.labels);
  return (labels == item.label).to(torch::kUInt8).clone();
}

torch::Tensor LamedLoader::volume(const std::string& path) {
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

LamedSample lamed_build_sample(const text::Tokenizer& tokenizer, const std::string& question, const std::string& answer, int64_t max_length, int64_t pad_id,
                               int64_t eos_id) {
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

}  // namespace m3d::train
