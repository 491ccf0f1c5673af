#include "io/state_dict.h"

#include <algorithm>

#include <torch/nn/module.h>

#include <map>
#include <set>

#include "io/tensor.h"
#include "m3d/error.h"

namespace m3d::io {
namespace {

bool starts_with(const std::string& text, const std::string& prefix) { return text.compare(0, prefix.size(), prefix) == 0; }

bool compatible(c10::ScalarType want, c10::ScalarType have) {
  // Floating weights convert on load; integer buffers (e.g. num_batches_tracked) must match.
  return want == have || (c10::isFloatingType(want) && c10::isFloatingType(have));
}

}  // namespace

void module_cast_floating(torch::nn::Module& module, c10::ScalarType type) {
  at::NoGradGuard no_grad;
  for (auto& p : module.parameters(true)) {
    if (p.is_floating_point()) p.set_data(p.to(type));
  }
  for (auto& b : module.buffers(true)) {
    if (b.is_floating_point()) b.set_data(b.to(type));
  }
}

LoadReport state_dict_load(torch::nn::Module& module, const Checkpoint& checkpoint, const LoadOptions& options) {
  std::map<std::string, at::Tensor> targets;
  for (const auto& item : module.named_parameters(true)) targets[item.key()] = item.value();
  for (const auto& item : module.named_buffers(true)) targets[item.key()] = item.value();

  LoadReport report;
  std::vector<std::string> problems;
  std::set<std::string> seen, seen_quantized;
  for (const auto& [key, record] : checkpoint.tensors) {
    if (!starts_with(key, options.prefix)) {
      if (options.whole_checkpoint) problems.push_back(fmt::format("unexpected key '{}'", key));
      continue;
    }
    const std::string name = key.substr(options.prefix.size());
    bool ignored = false;
    for (const auto& pattern : options.ignore) ignored = ignored || starts_with(name, pattern);
    if (ignored) {
      report.ignored.push_back(key);
      continue;
    }
    auto it = targets.find(name);
    if (it == targets.end()) {
      problems.push_back(fmt::format("unexpected key '{}' ({} {})", key, dtype_name(record.dtype), shape_string(record.shape)));
      continue;
    }
    seen.insert(name);
    at::Tensor& target = it->second;
    const c10::ScalarType have = dtype_to_scalar(record.dtype);
    if (target.sizes().vec() != record.shape) {
      problems.push_back(
          fmt::format("key '{}': shape {} in the checkpoint, {} in the model", key, shape_string(record.shape), shape_string(target.sizes().vec())));
      continue;
    }
    if (!compatible(target.scalar_type(), have)) {
      problems.push_back(
          fmt::format("key '{}': dtype {} in the checkpoint, {} in the model", key, dtype_name(record.dtype), c10::toString(target.scalar_type())));
      continue;
    }
    ++report.loaded;
  }
  // Block-quantized tensors (a model.gguf) were attached to their layers beforehand
  // (models::attach_quantized), which left the layer's weight empty.
  for (const auto& [key, block] : checkpoint.blocks) {
    if (!starts_with(key, options.prefix)) continue;
    const std::string name = key.substr(options.prefix.size());
    if (std::any_of(options.ignore.begin(), options.ignore.end(), [&](const std::string& p) { return starts_with(name, p); })) continue;
    auto it = targets.find(name);
    if (it == targets.end() || it->second.numel() != 0) {
      problems.push_back(fmt::format("key '{}' ({}) is block-quantized but the model's parameter is no quantized layer", key, ggml_type_name(block.type)));
      continue;
    }
    seen_quantized.insert(name);
  }
  for (const auto& [name, target] : targets) {
    if (!seen.count(name) && !seen_quantized.count(name)) {
      problems.push_back(
          fmt::format("missing key '{}{}' ({} {})", options.prefix, name, c10::toString(target.scalar_type()), shape_string(target.sizes().vec())));
    }
  }
  if (!problems.empty()) {
    std::string message = fmt::format("{}: {} problem(s) loading into the model:", checkpoint.path, problems.size());
    for (const auto& problem : problems) message += "\n  " + problem;
    throw Error(message);
  }
  // Only now load, so a failed load leaves the module untouched. A CPU tensor of
  // the checkpoint's dtype is used in place (zero-copy over the private mapping);
  // others are converted by a copy, after which the file pages are let go.
  at::NoGradGuard no_grad;
  for (const auto& name : seen) {
    const TensorRecord& record = checkpoint.tensors.at(options.prefix + name);
    at::Tensor& target = targets[name];
    at::Tensor source = tensor_from_record(record);
    const bool in_place = target.device().is_cpu() && target.scalar_type() == source.scalar_type() && source.is_contiguous() &&
                          source.data_ptr() == static_cast<const void*>(record.data);
    if (in_place) {
      target.set_data(source);
      ++report.zero_copy;
    } else {
      target.copy_(source);
      record.file->release(record.data, record.nbytes());
    }
  }
  return report;
}

LoadReport state_dict_load_part(torch::nn::Module& module, const Checkpoint& checkpoint, const std::string& prefix) {
  LoadOptions options;
  options.prefix = prefix;
  options.whole_checkpoint = false;
  return state_dict_load(module, checkpoint, options);
}

}  // namespace m3d::io
