// Readers of the M3D-Data files (m3d_bench_spec.md §4): M3D-Cap's split json, M3D-VQA's and
// M3D-RefSeg's csv, M3D-Seg's <code>.json and its masks, and the organ targets beside the
// volumes `m3d synth` writes; one rule for the paths inside them; the task names. Training
// (train/clip_train, train/lamed_data) and the benchmark (eval/bench) read through these.
// They return paths and text: loading and resizing the volumes is the caller's.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace m3d::data {

// ---- Task names ----

// Every task over M3D-Data has one canonical spelling (M3D-Bench's, with hyphens), listed
// once in m3d_data.cpp with who runs it: itr, report (bench), cap (training's caption task,
// the samples "report" scores), vqa-closed, vqa-open, rec, reg (both), seg (bench), refseg
// (training).
enum class TaskUser { Train, Bench };
// The tasks `user` runs, in the order `m3d bench --task all` runs them.
std::vector<std::string> task_names(TaskUser user);
// A task name as a user typed it, in its canonical spelling: "vqa_closed" / "vqa_open" (the
// spelling of training configs) read as "vqa-closed" / "vqa-open". Empty when unknown.
std::string task_canonical(const std::string& typed);

// ---- Paths ----

// The path of a file named inside an M3D-Data list (a json or csv) under the data root:
// - absolute: as is;
// - else relative to the data root, as M3D joins it with --data_root (CapDataset, VQADataset,
//   RefSegDataset in LaMed/src/dataset/multi_dataset.py; Bench/eval's eval_caption.py,
//   eval_vqa.py, eval_itr.py the same), the layout `m3d synth` writes;
// - when no file is there: relative to the folder of the list file, then to the working
//   directory: the M3D-Seg rule. Its json is read with MONAI's load_decathlon_datalist, which
//   joins relative entries with a base folder (the datalist's own unless given), and
//   m3d_seg_data_prepare.py writes the entries prefixed with its output root, a path that may
//   be relative to where it ran;
// - found nowhere: root/path, so that the error names the usual place.
std::string data_path_resolve(const std::string& root, const std::string& path, const std::string& list_file);

// A list file: `given` when not empty (it must exist), else the first of the `usual` places
// under `root` that exists. `what` names the file in errors (e.g. "M3D-VQA test csv").
std::string data_file_find(const std::string& given, const std::string& root, const std::vector<std::string>& usual, const std::string& what);

// ---- M3D-Cap: {"<split>": [{"image": <.npy>, "text": <.txt>}, ...], ...} ----

struct CapFile {
  std::string json, root;
};
// `data`: a data root (its M3D_Cap_npy/M3D_Cap.json, M3D's layout, or M3D_Cap.json), or the
// json itself (root: the folder above its M3D_Cap_npy/). `given`: an explicit json, the root
// staying `data`.
CapFile cap_find(const std::string& data, const std::string& given = "");

struct CapPair {
  std::string image, text;  // resolved: the volume (.npy) and the report file (.txt)
  std::string image_entry, text_entry;  // as the json writes them
};
// The `split` list, its first `limit` pairs (-1: all).
std::vector<CapPair> cap_read(const CapFile& file, const std::string& split, int64_t limit = -1);

// ---- M3D-VQA: M3D_VQA_{train,val,test}.csv ----

// `split` "validation" is the file "val". Usual places: M3D-VQA/M3D_VQA_<s>.csv, M3D_VQA_<s>.csv.
std::string vqa_csv_find(const std::string& root, const std::string& split, const std::string& given = "");

struct VqaRow {
  size_t row = 0;  // 1-based data row, for messages
  std::string image;  // resolved "Image Path"
  std::string question_type, question, answer, answer_choice;  // the columns as written (no NA mapping)
  std::array<std::string, 4> choices;  // "Choice A" .. "Choice D"
};
// Columns "Image Path", "Question", "Answer" always; the four choices and "Answer Choice" when
// `closed`; "Question Type" when `question_type` (the benchmark reports by it).
std::vector<VqaRow> vqa_read(const std::string& csv, const std::string& root, bool closed, bool question_type, int64_t limit = -1);

// ---- M3D-RefSeg: M3D_RefSeg_{train,test}.csv (Image, Mask, Mask_ID, Question_Type, Question, Answer) ----

// `split` "train" is the train file, any other the test file (the only two there are).
std::string refseg_csv_find(const std::string& root, const std::string& split);

struct RefSegRow {
  std::string image, question, answer;  // the answer holds its [SEG]
};
std::vector<RefSegRow> refseg_read(const std::string& csv, const std::string& root, int64_t limit = -1);

// ---- M3D-Seg: <code>.json {"labels": {"0": "background", ...}, "test": [{"image", "label"}, ...]} ----

// Usual places: M3D_Seg_npy/<code>/<code>.json, <code>.json.
std::string seg_json_find(const std::string& root, const std::string& code, const std::string& given = "");

struct SegItem {
  std::string image, mask;  // resolved; the mask is masks/mask_<c>.npy
  size_t class_index = 0;  // c: 0-based, background excluded
};
struct SegList {
  std::vector<std::string> labels;  // class names by mask index
  std::vector<SegItem> items;  // one per image x class, negatives included
};
// The `split` list of dataset `code`. Class names: `labels` when given, else the json's
// "labels", else M3D's dataset_info.py for 0003 (AbdomenCT-1k) and 0012 (CT-ORG).
SegList seg_read(const std::string& json, const std::string& root, const std::string& code, const std::vector<std::string>& labels,
                 const std::string& split = "test");

// An M3D-Seg mask (.npy of any dtype; an empty class is a (1, 1, 1, 1) zero array) as 0/1 per
// voxel; `shape` receives its shape.
std::vector<uint8_t> seg_mask_read(const std::string& path, std::vector<int64_t>* shape);

// ---- Organ targets of `m3d synth` studies (REC / REG training) ----

struct OrganTarget {
  std::string label_map;  // organs.npy beside the image
  int64_t label = 0;  // its value for the organ (organ_names() index + 1)
  std::string name;
};
// The organs truth.json lists for the study of `image`, in its order.
std::vector<OrganTarget> synth_organ_targets(const std::string& image);

}  // namespace m3d::data
