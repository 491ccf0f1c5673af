// The library's side of m3d::Model (include/m3d/model.h): a loaded generate::Session
// (weights, tokenizer, generation defaults) and what the public handle reports.
#pragma once

#include "generate/session.h"
#include "m3d/model.h"
#include "m3d/session.h"

namespace m3d {

struct Model::Impl {
  generate::Session session;
  ModelInfo info;
};

// `options` (the model's generation_config.json defaults) with what `ask` sets.
generate::GenerationOptions generation_options_from(const AskOptions& ask, generate::GenerationOptions options);

}  // namespace m3d
