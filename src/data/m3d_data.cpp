// See m3d_data.h. Formats: m3d_bench_spec.md §4 (M3D's Data/process scripts and the
// datasets of LaMed/src/dataset/multi_dataset.py).
#include "data/m3d_data.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <map>

#include "data/synth.h"
#include "io/csv.h"
#include "io/json_util.h"
#include "io/npy.h"
#include "m3d/dtype.h"
#include "m3d/error.h"

namespace m3d::data {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool limit_reached(int64_t limit, size_t count) { return limit >= 0 && static_cast<int64_t>(count) >= limit; }

// The column indices of `names` in `table`; a missing one is an error naming the file.
std::vector<size_t> csv_columns(const io::CsvTable& table, const std::string& path, const std::vector<std::string>& names) {
  std::vector<size_t> out;
  for (const auto& name : names) {
    const int c = table.column(name);
    if (c < 0) fail("{}: missing column '{}'", path, name);
    out.push_back(static_cast<size_t>(c));
  }
  return out;
}

// A string member of a list entry, with the entry's place in errors.
std::string entry_string(const json& entry, const char* key, const std::string& path, const std::string& list, size_t index) {
  if (!entry.is_object() || !entry.contains(key)) fail("{}: \"{}\" item {}: every item needs \"{}\"", path, list, index, key);
  if (!entry[key].is_string()) fail("{}: \"{}\" item {}: \"{}\" must be a string, not {}", path, list, index, key, entry[key].dump());
  return entry[key].get<std::string>();
}

// The one list of the task names, in their canonical spelling, and who runs each.
struct TaskInfo {
  std::string name;
  bool train;  // a task of `m3d train lamed`'s mixture
  bool bench;  // a task `m3d bench` runs
};

const std::vector<TaskInfo>& task_list() {
  static const std::vector<TaskInfo> tasks = {{"itr", false, true},       {"report", false, true},  {"cap", true, false},
                                              {"vqa-closed", true, true}, {"vqa-open", true, true}, {"rec", true, true},
                                              {"reg", true, true},        {"seg", false, true},     {"refseg", true, false}};
  return tasks;
}

}  // namespace

std::vector<std::string> task_names(TaskUser user) {
  std::vector<std::string> out;
  for (const auto& t : task_list()) {
    if (user == TaskUser::Train ? t.train : t.bench) out.push_back(t.name);
  }
  return out;
}

std::string task_canonical(const std::string& typed) {
  const std::string name = typed == "vqa_closed" ? "vqa-closed" : typed == "vqa_open" ? "vqa-open" : typed;
  for (const auto& t : task_list()) {
    if (t.name == name) return name;
  }
  return "";
}

std::string data_path_resolve(const std::string& root, const std::string& path, const std::string& list_file) {
  if (!path.empty() && path[0] == '/') return path;
  const std::string usual = root + "/" + path;
  if (fs::exists(usual)) return usual;
  for (const std::string& base : {fs::path(list_file).parent_path().string(), std::string(".")}) {
    if (!base.empty() && fs::exists(base + "/" + path)) return base + "/" + path;
  }
  return usual;
}

std::string data_file_find(const std::string& given, const std::string& root, const std::vector<std::string>& usual, const std::string& what) {
  if (!given.empty()) {
    if (!fs::exists(given)) fail("{}: no such file (the {})", given, what);
    return given;
  }
  for (const auto& name : usual) {
    if (fs::exists(root + "/" + name)) return root + "/" + name;
  }
  std::string list;
  for (const auto& name : usual) list += (list.empty() ? "" : " or ") + name;
  fail("no {} found: {} has no {} (the M3D-Data layout, which `m3d synth` writes)", what, root, list);
}

CapFile cap_find(const std::string& data, const std::string& given) {
  if (given.empty() && !data.empty() && !fs::is_directory(data) && fs::exists(data)) {
    // The json itself, in its usual place <root>/M3D_Cap_npy/M3D_Cap.json.
    return {data, fs::path(data).parent_path().parent_path().string()};
  }
  return {data_file_find(given, data, {"M3D_Cap_npy/M3D_Cap.json", "M3D_Cap.json"}, "M3D-Cap json"), data};
}

std::vector<CapPair> cap_read(const CapFile& file, const std::string& split, int64_t limit) {
  const json root = io::json_read_file(file.json);
  if (!root.contains(split) || !root[split].is_array()) fail("{}: no \"{}\" split (a list of {{\"image\", \"text\"}})", file.json, split);
  std::vector<CapPair> out;
  for (size_t i = 0; i < root[split].size() && !limit_reached(limit, out.size()); ++i) {
    CapPair p;
    p.image_entry = entry_string(root[split][i], "image", file.json, split, i);
    p.text_entry = entry_string(root[split][i], "text", file.json, split, i);
    p.image = data_path_resolve(file.root, p.image_entry, file.json);
    p.text = data_path_resolve(file.root, p.text_entry, file.json);
    out.push_back(std::move(p));
  }
  return out;
}

std::string vqa_csv_find(const std::string& root, const std::string& split, const std::string& given) {
  const std::string s = split == "validation" ? "val" : split;
  return data_file_find(given, root, {"M3D-VQA/M3D_VQA_" + s + ".csv", "M3D_VQA_" + s + ".csv"}, "M3D-VQA " + s + " csv");
}

std::vector<VqaRow> vqa_read(const std::string& csv, const std::string& root, bool closed, bool question_type, int64_t limit) {
  const io::CsvTable table = io::csv_read(csv);
  std::vector<std::string> names = {"Image Path", "Question", "Answer"};
  if (question_type) names.push_back("Question Type");
  if (closed) names.insert(names.end(), {"Choice A", "Choice B", "Choice C", "Choice D", "Answer Choice"});
  const std::vector<size_t> col = csv_columns(table, csv, names);
  std::vector<VqaRow> out;
  for (size_t r = 0; r < table.rows.size() && !limit_reached(limit, out.size()); ++r) {
    const auto& row = table.rows[r];
    VqaRow v;
    v.row = r + 1;
    v.image = data_path_resolve(root, row[col[0]], csv);
    v.question = row[col[1]];
    v.answer = row[col[2]];
    size_t next = 3;
    if (question_type) v.question_type = row[col[next++]];
    if (closed) {
      for (auto& choice : v.choices) choice = row[col[next++]];
      v.answer_choice = row[col[next]];
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::string refseg_csv_find(const std::string& root, const std::string& split) {
  const std::string name = std::string("M3D_RefSeg_") + (split == "train" ? "train" : "test") + ".csv";
  return data_file_find("", root, {"M3D_RefSeg_npy/" + name, name}, "M3D-RefSeg csv");
}

std::vector<RefSegRow> refseg_read(const std::string& csv, const std::string& root, int64_t limit) {
  const io::CsvTable table = io::csv_read(csv);
  const std::vector<size_t> col = csv_columns(table, csv, {"Image", "Question", "Answer"});
  std::vector<RefSegRow> out;
  for (const auto& row : table.rows) {
    if (limit_reached(limit, out.size())) break;
    out.push_back({data_path_resolve(root, row[col[0]], csv), row[col[1]], row[col[2]]});
  }
  return out;
}

std::string seg_json_find(const std::string& root, const std::string& code, const std::string& given) {
  return data_file_find(given, root, {"M3D_Seg_npy/" + code + "/" + code + ".json", code + ".json"}, "M3D-Seg json");
}

SegList seg_read(const std::string& path, const std::string& root, const std::string& code, const std::vector<std::string>& labels, const std::string& split) {
  const json doc = io::json_read_file(path);
  SegList out;
  out.labels = labels;
  if (out.labels.empty() && doc.contains("labels") && doc["labels"].is_object()) {  // {"0": "background", "1": first class, ...}
    for (size_t c = 1; doc["labels"].contains(std::to_string(c)); ++c) out.labels.push_back(doc["labels"][std::to_string(c)].get<std::string>());
  }
  if (out.labels.empty()) {  // M3D's Data/process/dataset_info.py
    static const std::map<std::string, std::vector<std::string>> known = {{"0003", {"liver", "kidney", "spleen", "pancreas"}},
                                                                          {"0012", {"liver", "bladder", "lungs", "kidneys", "bone", "brain"}}};
    const auto it = known.find(code);
    if (it == known.end()) fail("M3D-Seg dataset {}: give the class names with --labels (m3d knows 0003 and 0012)", code);
    out.labels = it->second;
  }
  if (!doc.contains(split) || !doc[split].is_array()) fail("{}: no \"{}\" list", path, split);
  for (size_t i = 0; i < doc[split].size(); ++i) {
    SegItem item;
    item.mask = data_path_resolve(root, entry_string(doc[split][i], "label", path, split, i), path);
    item.image = data_path_resolve(root, entry_string(doc[split][i], "image", path, split, i), path);
    const std::string stem = fs::path(item.mask).stem().string();  // mask_<c>
    const size_t underscore = stem.rfind('_');
    int64_t c = -1;
    try {
      c = underscore == std::string::npos ? -1 : std::stoll(stem.substr(underscore + 1));
    } catch (const std::exception&) {}
    if (c < 0 || c >= static_cast<int64_t>(out.labels.size())) {
      fail("{}: \"{}\" item {}: mask file {} does not name a known class (mask_<index>.npy)", path, split, i, item.mask);
    }
    item.class_index = static_cast<size_t>(c);
    out.items.push_back(std::move(item));
  }
  return out;
}

std::vector<uint8_t> seg_mask_read(const std::string& path, std::vector<int64_t>* shape) {
  const io::NpyFile mask = io::npy_read(path);
  std::vector<uint8_t> bits(static_cast<size_t>(mask.array.numel()));
  const size_t bytes = dtype_size(mask.array.dtype);
  for (size_t i = 0; i < bits.size(); ++i) {
    for (size_t b = 0; b < bytes && !bits[i]; ++b) bits[i] = mask.array.data[i * bytes + b] != 0;
  }
  if (shape != nullptr) *shape = mask.array.shape;
  return bits;
}

std::vector<OrganTarget> synth_organ_targets(const std::string& image) {
  const std::string folder = fs::path(image).parent_path().string();
  if (!fs::exists(folder + "/truth.json") || !fs::exists(folder + "/organs.npy")) {
    fail("{}: no organs.npy / truth.json beside the image: rec/reg training reads the m3d synth label maps", folder);
  }
  const json truth = io::json_read_file(folder + "/truth.json");
  const auto& names = organ_names();
  std::vector<OrganTarget> out;
  for (const auto& organ : truth.at("organs")) {
    const auto it = std::find(names.begin(), names.end(), organ.get<std::string>());
    if (it == names.end()) continue;
    out.push_back({folder + "/organs.npy", static_cast<int64_t>(it - names.begin()) + 1, *it});
  }
  return out;
}

}  // namespace m3d::data
