// An answer from the public Session API as the programs show it: the text, the box
// in model voxels, scan voxels and LPS mm, usage; as text lines or JSON. Shared by
// m3d generate, m3d chat and m3d serve; the ids behind it (--show-ids).
#pragma once

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include "m3d/session.h"

namespace m3d::cli {

inline nlohmann::json box_json(const ScanBox& box) {
  return {{"normalized", box.normalized},
          {"model_voxels_ijk", {box.model_min, box.model_max}},
          {"scan_voxels_ijk", {box.scan_min, box.scan_max}},
          {"lps_mm", {box.mm_min, box.mm_max}},
          {"on_scan", box.on_scan}};
}

inline nlohmann::json answer_json(const Answer& answer) {
  nlohmann::json out = {{"text", answer.text},
                        {"finish_reason", answer.finish_reason},
                        {"usage", {{"prompt_tokens", answer.prompt_tokens}, {"completion_tokens", answer.completion_tokens}}}};
  out["box"] = answer.box ? box_json(*answer.box) : nlohmann::json(nullptr);
  if (answer.seg_tokens > 0 || !answer.model_mask.empty()) { out["mask"] = {{"seg_tokens", answer.seg_tokens}, {"model_voxels", answer.mask_voxels}}; }
  return out;
}

// "box: model voxels (i, j, k) [...] to [...]; scan voxels ...; LPS mm ..." (one line).
inline std::string box_line(const ScanBox& box) {
  auto triple = [](const std::array<double, 3>& v, int digits) { return fmt::format("[{:.{}f}, {:.{}f}, {:.{}f}]", v[0], digits, v[1], digits, v[2], digits); };
  std::string line = fmt::format("box: model voxels (i, j, k) {} to {}", triple(box.model_min, 1), triple(box.model_max, 1));
  if (box.on_scan) {
    line +=
        fmt::format("; scan voxels {} to {}; LPS mm {} to {}", triple(box.scan_min, 1), triple(box.scan_max, 1), triple(box.mm_min, 1), triple(box.mm_max, 1));
  }
  return line;
}

// A TextCallback that streams the answer to stdout as it grows.
inline bool print_piece(const std::string& piece) {
  std::fputs(piece.c_str(), stdout);
  std::fflush(stdout);
  return true;
}

// --show-ids: the prompt's ids, then the generated ids with their vocabulary entries,
// on stderr, one line each.
inline void print_ids(const Model& model, const Answer& answer) {
  nlohmann::json pieces = nlohmann::json::array();
  for (int64_t id : answer.token_ids) pieces.push_back(model.token_text(id));
  auto dump = [](const nlohmann::json& v) { return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  std::fprintf(stderr, "prompt ids (%zu, %lld from the cache): %s\n", answer.prompt_ids.size(), static_cast<long long>(answer.cached_tokens),
               dump(answer.prompt_ids).c_str());
  std::fprintf(stderr, "generated ids (%zu): %s %s\n", answer.token_ids.size(), dump(answer.token_ids).c_str(), dump(pieces).c_str());
}

}  // namespace m3d::cli
