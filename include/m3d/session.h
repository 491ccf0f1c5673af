// Public API: ask a model about a scan. A Session encodes its scan once; the image
// prompt prefix stays in the KV cache and every question continues from it,
// answered exactly as if asked alone (the same text as `m3d generate`). Answers
// carry text and structure: the box the model gave on the model grid, the scan's
// voxels and LPS millimetres; a mask on the scan's grid for models with a [SEG] head,
// from the answer's [SEG] tokens and/or SegVol's own point and box prompts.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "m3d/model.h"
#include "m3d/recipe.h"
#include "m3d/volume.h"

namespace m3d {

// Decoding settings; unset ones keep the model's (generation_config.json, else
// greedy with 256 new tokens).
struct AskOptions {
  std::optional<int64_t> max_new_tokens;
  std::optional<bool> sample;  // false: greedy (what M3D-Bench uses)
  std::optional<double> temperature, top_p, repetition_penalty;
  std::optional<int64_t> top_k;
  uint64_t seed = 0;
  bool mask = true;  // compute the [SEG] mask (models with a [SEG] head, a scan set)
  bool logits = false;  // keep each step's logits in Answer::logits
  // Asked before each new token; returning true stops the answer there (finish_reason
  // "cancelled"), e.g. when the client is gone.
  std::function<bool()> should_stop;
};

struct Answer {
  std::string text;
  std::optional<ScanBox> box;  // the first box in the text (M3D box text), on the scan when it has a map
  std::optional<RawVolume> mask;  // [SEG] models: U8 on the scan's grid (PreparedScan::mask_to_scan); unset when no [SEG] and no point / box prompt
  std::vector<uint8_t> model_mask;  // the same on the model grid, D * H * W row-major (empty when `mask` is unset)
  int64_t mask_voxels = 0;  // foreground voxels on the model grid
  int64_t seg_tokens = 0;  // [SEG] tokens behind the mask
  int64_t prompt_tokens = 0, completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt positions reused from the KV cache (a scan's prefix, a conversation's earlier turns)
  std::string finish_reason;  // stop, length or cancelled; "" when nothing was generated (Session::segment without a question)
  std::vector<int64_t> prompt_ids;  // the prompt's token ids, image placeholders included
  std::vector<int64_t> token_ids;  // the generated ids, a stop token included
  // With AskOptions::logits: (completion_tokens, vocab_size) float32 row-major, the
  // model's logits each generated token was chosen from (before repetition penalty,
  // temperature, top-k / top-p).
  std::vector<float> logits;
  int64_t vocab_size = 0;
};

// SegVol's own prompts (segvol_spec.md §1.3) in model voxels: indices (d, h, w) on the
// model grid PreparedScan::model_size(), as `m3d segment --point / --box` takes them.
struct SegPoint {
  std::array<double, 3> dhw{};
  int64_t label = 1;  // 1 positive, 0 negative
};
struct SegBox {
  std::array<double, 6> corners{};  // min corner (d1, h1, w1), then max corner (d2, h2, w2), both on the grid
};
struct SpatialPrompts {
  std::vector<SegPoint> points;
  std::optional<SegBox> box;  // SegVol takes one box per mask
};

// Receives the answer as it grows; return false to stop generating (a client gone).
using TextCallback = std::function<bool(const std::string& piece)>;

class Session {
 public:
  explicit Session(Model model);
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  // Encodes `scan` (on the model's grid, else m3d::Error naming the grids and the
  // recipe to use) and caches its prompt prefix for the questions that follow.
  void set_scan(PreparedScan scan);
  void clear_scan();  // text-only questions from now on
  const std::optional<PreparedScan>& scan() const;

  Answer ask(const std::string& question, const AskOptions& options = {}, const TextCallback& on_text = {});

  // A mask of the scan from SegVol's point / box `prompts` and/or a question: with a
  // question the model answers it and its [SEG] state joins the prompts (points, box,
  // then the text in one sparse sequence, as `m3d segment --prompt ... --box ... --point ...`);
  // with "" nothing is generated and the prompts alone make the mask. Answer::mask is set
  // whenever prompts are given (else as `ask`). m3d::Error without a scan or a [SEG] head,
  // and for a prompt off the model grid, an inverted box or a label other than 0 / 1,
  // naming it as the request's fields ('points'[1], 'box').
  Answer segment(const std::string& question, const SpatialPrompts& prompts, const AskOptions& options = {}, const TextCallback& on_text = {});

  // Text conversations (no scan set): `turns` rendered with the model's chat template,
  // the assistant's turn opened, and answered. Call it again with the answer and a new
  // user turn appended: the KV cache of the previous call is reused as far as the new
  // rendering's tokens agree with it, and the answer equals a fresh Session's. Throws
  // when the model has no chat template or a scan is set.
  Answer chat(const std::vector<ChatTurn>& turns, const AskOptions& options = {}, const TextCallback& on_text = {});

  const Model& model() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Writes `mask` (an Answer::mask of a scan read from the DICOM series folder `series_dir`)
// to `path` as a binary DICOM Segmentation referencing that series' slices, labelled with
// the question (else after the prompts), as `m3d segment --dicom-seg` writes it; atomically.
// m3d::Error when `series_dir` holds no DICOM series or the mask is not on its grid.
void mask_write_dicom_seg(const std::string& path, const std::string& series_dir, const RawVolume& mask, const std::string& question,
                          const SpatialPrompts& prompts = {});

}  // namespace m3d
