// Public API: contrastive image-report models (M3D-CLIP, Med3DVLM's DCFormer_SigLIP)
// opened from their released checkpoint directory. A scan prepared for the model
// (PreparedScan, recipe "auto" with the checkpoint's directory) and report texts
// become L2-normalised vectors in one space, as the official encode_image /
// encode_text return them; their dot product is the cosine similarity.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "m3d/recipe.h"

namespace m3d {

struct EmbedderOptions {
  std::string dtype = "f32";  // compute precision: f32 (reference), bf16
  int64_t max_length = 512;  // report tokens kept, the last ([SEP]) included (M3D's train_CLIP.py: 512)
};

struct EmbedderInfo {
  std::string dir, architecture;  // M3DCLIP or DEC_CLIP
  std::array<int64_t, 3> image_grid{0, 0, 0};  // (D, H, W) a scan must be prepared to
  int64_t dim = 0;  // embedding length
  bool has_tokenizer = false;  // embed_text needs the checkpoint's tokenizer files
};

// A vector and the report tokens behind it (0 for a scan).
struct Embedding {
  std::vector<float> values;
  int64_t tokens = 0;
};

class Embedder {
 public:
  // Throws m3d::Error naming the missing file, a generative checkpoint with what opens
  // it (m3d::Model::open), an unknown architecture with the known ones, or every
  // weight that does not fit.
  static Embedder open(const std::string& dir, const EmbedderOptions& options = {});
  const EmbedderInfo& info() const;

  // A scan on the model's grid (else m3d::Error naming both grids).
  Embedding embed_scan(const PreparedScan& scan) const;
  // A report, tokenized with the checkpoint's tokenizer and cut to max_length tokens.
  Embedding embed_text(const std::string& report) const;

  struct Impl;  // the library's side (src/generate/embedder.cpp)

 private:
  std::shared_ptr<const Impl> impl_;
};

// Whether `dir`'s config.json names a contrastive architecture (Embedder::open opens
// it) rather than a generative one (Model::open); m3d::Error for an unknown one.
bool model_is_contrastive(const std::string& dir);

}  // namespace m3d
