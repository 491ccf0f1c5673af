// The library's side of m3d::Model (include/m3d/model.h): a loaded generate::Session
// (weights, tokenizer, generation defaults) and what the public handle reports.
#pragma once

#include "generate/session.h"
#include "m3d/model.h"

namespace m3d {

struct Model::Impl {
  generate::Session session;
  ModelInfo info;
};

}  // namespace m3d
