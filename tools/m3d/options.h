// Options shared by several subcommands, declared once.
#pragma once

#include <CLI/CLI.hpp>
#include <c10/core/ScalarType.h>

#include <string>

#include "m3d/error.h"

namespace m3d::cli {

inline void add_dtype_option(CLI::App* cmd, std::string& dtype) {
  cmd->add_option("--dtype", dtype, "Compute precision: f32 (reference), bf16, f16 (GPU)")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
}

inline c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "f32") return c10::kFloat;
  if (name == "bf16") return c10::kBFloat16;
  if (name == "f16") return c10::kHalf;
  fail("unknown dtype '{}' (supported: f32, bf16, f16)", name);
}

}  // namespace m3d::cli
