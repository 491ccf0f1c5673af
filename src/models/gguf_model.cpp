// GGUF -> CausalLm (models/gguf_model.h).
#include "models/gguf_model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "io/gguf.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "models/layers.h"
#include "models/quant_linear.h"
#include "models/quant_matmul.h"
#include "models/registry.h"

namespace m3d::models {
namespace {

// The rotary heads of an HF q_proj / k_proj weight, 0 for other tensors.
int64_t rope_heads(const std::string& hf_name, const DecoderConfig& c) {
  if (hf_name.find("self_attn.q_proj.") != std::string::npos) return c.num_attention_heads;
  if (hf_name.find("self_attn.k_proj.") != std::string::npos) return c.num_key_value_heads;
  return 0;
}

// The tensor's blocks as a QuantWeight; with `heads`, rows reordered into HF's
// rotate-half layout (an owned copy; whole byte rows move, nothing is dequantized).
std::shared_ptr<const QuantWeight> quant_weight(const io::GgufFile& gguf, const io::GgufTensor& t, int64_t heads) {
  auto w = std::make_shared<QuantWeight>();
  w->type = t.type;
  w->rows = t.rows();
  w->cols = t.shape.back();
  if (heads == 0) {
    w->data = t.data;
    w->owner = gguf.file;
    return w;
  }
  const size_t row = t.row_bytes();
  auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(w->rows) * row);
  const std::vector<int64_t> source = io::gguf_rope_unpermute_rows(w->rows, heads);
  for (int64_t r = 0; r < w->rows; ++r) std::memcpy(bytes->data() + r * row, t.data + source[r] * row, row);
  w->data = bytes->data();
  w->owner = bytes;
  return w;
}

// The tensor as a float tensor of its shape (plain types as they are, blocks dequantized),
// rows un-permuted for Q/K.
at::Tensor dense_tensor(const io::GgufFile& gguf, const io::GgufTensor& t, int64_t heads) {
  at::Tensor dense;
  if (auto record = io::gguf_tensor_record(gguf, t)) {
    dense = io::tensor_from_record(*record);
  } else {
    const std::vector<float> values = io::gguf_dequantize(t);
    dense = at::from_blob(const_cast<float*>(values.data()), t.shape, at::kFloat).clone();
  }
  if (heads == 0) return dense;
  const std::vector<int64_t> source = io::gguf_rope_unpermute_rows(dense.size(0), heads);
  return dense.index_select(0, at::tensor(source, at::kLong));
}

struct Target {
  LinearImpl* linear = nullptr;
  EmbeddingImpl* embedding = nullptr;
};

// The Linear / Embedding owning each "<module>.weight" parameter.
std::map<std::string, Target> weight_owners(torch::nn::Module& root) {
  std::map<std::string, Target> owners;
  for (const auto& item : root.named_modules()) {
    const std::string name = item.key().empty() ? "weight" : item.key() + ".weight";
    if (auto* linear = dynamic_cast<LinearImpl*>(item.value().get())) owners[name].linear = linear;
    if (auto* embedding = dynamic_cast<EmbeddingImpl*>(item.value().get())) owners[name].embedding = embedding;
  }
  return owners;
}

// Moves one GGUF tensor into the model: quantized into its Linear/Embedding when
// allowed, else as a dense `dtype` copy into the parameter.
void load_tensor(const io::GgufFile& gguf, const io::GgufTensor& t, const std::string& hf, at::Tensor& param, const Target* owner, const DecoderConfig& c,
                 const GgufLoadOptions& options) {
  const std::string& path = gguf.file->path();
  const int64_t heads = rope_heads(hf, c) * (io::gguf_arch_permutes_qk(gguf.architecture()) ? 1 : 0);
  const bool blocks = !io::gguf_tensor_record(gguf, t).has_value();
  if (blocks && options.keep_quantized && owner != nullptr && quant_matmul_supported(t.type) && t.shape.size() == 2) {
    auto w = quant_weight(gguf, t, heads);
    if (owner->linear != nullptr) owner->linear->set_quantized(std::move(w));
    if (owner->embedding != nullptr) owner->embedding->set_quantized(std::move(w));
    return;
  }
  const at::Tensor dense = dense_tensor(gguf, t, heads);
  if (dense.sizes() != param.sizes()) {
    fail("gguf: {}: tensor '{}' ({}) has shape ({}), the model's '{}' is ({})", path, t.name, io::ggml_type_name(t.type), fmt::join(dense.sizes(), ", "), hf,
         fmt::join(param.sizes(), ", "));
  }
  at::NoGradGuard no_grad;
  param.set_data(dense.to(param.scalar_type()).contiguous());
}

}  // namespace

void attach_quantized(torch::nn::Module& root, const io::Checkpoint& checkpoint, const std::string& prefix) {
  if (checkpoint.blocks.empty()) return;
  const std::map<std::string, Target> owners = weight_owners(root);
  for (const auto& [key, t] : checkpoint.blocks) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    auto owner = owners.find(key.substr(prefix.size()));
    if (owner == owners.end()) continue;  // state_dict_load reports it
    if (!quant_matmul_supported(t.type) || t.shape.size() != 2) {
      fail("{}: tensor '{}' is {}, which has no quantized kernel (supported: Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)", checkpoint.path, key, io::ggml_type_name(t.type));
    }
    auto w = quant_weight(*checkpoint.gguf, t, 0);
    if (owner->second.linear != nullptr) owner->second.linear->set_quantized(std::move(w));
    if (owner->second.embedding != nullptr) owner->second.embedding->set_quantized(std::move(w));
  }
}

bool is_gguf_model(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec) && io::gguf_has_magic(path);
}

LoadedModel model_load_gguf(const std::string& path, const GgufLoadOptions& options) {
  const io::GgufFile gguf = io::gguf_read(path);
  LoadedModel out;
  out.config = io::gguf_hf_config(gguf);
  out.architecture = out.config.architecture();
  if (out.config.raw.contains("rope_scaling")) { fail("gguf: {}: rope scaling ({}) is not supported", path, out.config.raw["rope_scaling"].dump()); }
  {
    const DefaultDtypeGuard guard(options.dtype);
    out.lm = model_build(out.config, path);
  }
  const DecoderConfig& c = out.lm->model->config();
  std::map<std::string, at::Tensor> params;
  for (const auto& item : out.lm->named_parameters()) params[item.key()] = item.value();
  const std::map<std::string, Target> owners = weight_owners(*out.lm);
  std::set<std::string> loaded;
  for (const io::GgufTensor& t : gguf.tensors) {
    const std::optional<std::string> hf = io::gguf_name_to_hf(t.name);
    if (!hf) fail("gguf: {}: tensor '{}' has no counterpart in a {} model", path, t.name, out.architecture);
    auto param = params.find(*hf);
    if (param == params.end()) fail("gguf: {}: tensor '{}' ({}) has no parameter in the model", path, t.name, *hf);
    if (!loaded.insert(*hf).second) fail("gguf: {}: two tensors map to '{}'", path, *hf);
    auto owner = owners.find(*hf);
    load_tensor(gguf, t, *hf, param->second, owner == owners.end() ? nullptr : &owner->second, c, options);
  }
  for (const auto& [name, tensor] : params) {
    if (loaded.count(name) == 0) fail("gguf: {}: no tensor for the model's '{}' ('{}')", path, name, io::gguf_name_from_hf(name).value_or("?"));
  }
  return out;
}

}  // namespace m3d::models
