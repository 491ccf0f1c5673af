// Checkpoint records as libtorch tensors, and strict state-dict loading into
// modules, against files written by Python (tools/reference/make_io_fixtures.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/state_dict.h"
#include "io/tensor.h"
#include "m3d/error.h"
#include "test_support.h"

namespace m3d::io {
namespace {

std::vector<double> values(const at::Tensor& t) {
  at::Tensor flat = t.to(at::kDouble).contiguous().flatten();
  return {flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel()};
}

void expect_tensors_match(const std::string& file, const std::string& key) {
  const Checkpoint ckpt = checkpoint_open(test::fixture(file));
  const auto expected = test::read_json(test::fixture("io/expected.json"))[key];
  for (const auto& [name, want] : expected.items()) {
    if (name == "__metadata__") continue;
    SCOPED_TRACE(name);
    const at::Tensor t = tensor_from_record(ckpt.tensor(name));
    EXPECT_EQ(t.sizes().vec(), want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(dtype_from_scalar(t.scalar_type()), dtype_parse(want["dtype"].get<std::string>()).value());
    EXPECT_EQ(values(t), want["values"].get<std::vector<double>>());
  }
}

TEST(TensorLoad, SafetensorsEveryDtype) { expect_tensors_match("io/st_dtypes.safetensors", "st_dtypes"); }
TEST(TensorLoad, TorchStateDict) { expect_tensors_match("io/torch_state.bin", "torch_state"); }
TEST(TensorLoad, Bf16SharedStorageViews) { expect_tensors_match("io/torch_bf16_views.bin", "torch_bf16_views"); }

TEST(TensorLoad, AlignedDataIsNotCopied) {
  const Checkpoint ckpt = checkpoint_open(test::fixture("io/st_sharded"));
  const TensorRecord& r = ckpt.tensor("lm_head.weight");
  const at::Tensor t = tensor_from_record(r);
  EXPECT_EQ(t.data_ptr(), static_cast<const void*>(r.data));
  // Writing through the view is private: the file and other readers are unaffected.
  t.mul_(2);
  const Checkpoint again = checkpoint_open(test::fixture("io/st_sharded"));
  EXPECT_TRUE(tensor_from_record(again.tensor("lm_head.weight")).mul(2).equal(t));
}

TEST(TensorLoad, SaveThenLoadRoundTripsNonContiguousAndBf16) {
  const std::string path = test::temp_dir() + "/t.safetensors";
  at::manual_seed(0);
  const at::Tensor a = at::randn({3, 5}).t();  // non-contiguous
  const at::Tensor b = at::randn({4}).to(at::kBFloat16);
  const at::Tensor c = at::arange(6, at::kLong).view({2, 3});
  safetensors_save(path, {{"a", a}, {"b", b}, {"c", c}}, {{"format", "pt"}});
  const Checkpoint ckpt = checkpoint_open(path);
  EXPECT_TRUE(tensor_from_record(ckpt.tensor("a")).equal(a));
  EXPECT_TRUE(tensor_from_record(ckpt.tensor("b")).equal(b));
  EXPECT_TRUE(tensor_from_record(ckpt.tensor("c")).equal(c));
  EXPECT_EQ(ckpt.metadata.at("format"), "pt");
}

// The module torch_state.bin was saved from: Linear(3,4) "lin", BatchNorm1d(4) "bn", f16 buffer "scale".
struct SmallNetImpl : torch::nn::Module {
  SmallNetImpl() {
    lin = register_module("lin", torch::nn::Linear(3, 4));
    bn = register_module("bn", torch::nn::BatchNorm1d(4));
    scale = register_buffer("scale", torch::zeros({4}, torch::kHalf));
  }
  torch::nn::Linear lin{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::Tensor scale;
};
TORCH_MODULE(SmallNet);

TEST(StateDict, LoadsTorchSaveFileStrictly) {
  SmallNet net;
  const Checkpoint ckpt = checkpoint_open(test::fixture("io/torch_state.bin"));
  const LoadReport report = state_dict_load(*net, ckpt);
  EXPECT_EQ(report.loaded, 8u);
  EXPECT_EQ(report.zero_copy, 8u) << "same dtype on CPU: every tensor used in place";
  const auto expected = test::read_json(test::fixture("io/expected.json"))["torch_state"];
  EXPECT_EQ(values(net->lin->weight), expected["lin.weight"]["values"].get<std::vector<double>>());
  EXPECT_EQ(values(net->bn->running_var), expected["bn.running_var"]["values"].get<std::vector<double>>());
  EXPECT_EQ(values(net->scale), expected["scale"]["values"].get<std::vector<double>>());
  EXPECT_EQ(net->bn->num_batches_tracked.item<int64_t>(), static_cast<int64_t>(expected["bn.num_batches_tracked"]["values"][0].get<double>()));
}

TEST(StateDict, ZeroCopyParametersAreCopyOnWrite) {
  const std::string path = test::temp_dir() + "/w.safetensors";
  SmallNet source;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : source->named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : source->named_buffers()) tensors.emplace_back(b.key(), b.value());
  safetensors_save(path, tensors);
  SmallNet net;
  const LoadReport report = state_dict_load(*net, checkpoint_open(path));
  EXPECT_GT(report.zero_copy, 0u);
  torch::NoGradGuard no_grad;
  net->lin->weight.add_(1);  // writes a private copy of the page, never the file
  SmallNet again;
  state_dict_load(*again, checkpoint_open(path));
  EXPECT_TRUE(again->lin->weight.equal(source->lin->weight));
  EXPECT_TRUE(net->lin->weight.equal(source->lin->weight + 1));
}

TEST(StateDict, ConvertsF32CheckpointIntoBf16Module) {
  SmallNet net;
  module_cast_floating(*net, torch::kBFloat16);
  EXPECT_EQ(net->bn->num_batches_tracked.scalar_type(), torch::kLong);
  state_dict_load(*net, checkpoint_open(test::fixture("io/torch_state.bin")));
  const auto expected = test::read_json(test::fixture("io/expected.json"))["torch_state"];
  const at::Tensor want = at::tensor(expected["lin.weight"]["values"].get<std::vector<double>>()).view({4, 3});
  EXPECT_EQ(net->lin->weight.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(net->lin->weight.equal(want.to(torch::kBFloat16)));
}

TEST(StateDict, AllProblemsAreReportedTogetherAndNothingIsLoaded) {
  const std::string path = test::temp_dir() + "/bad.safetensors";
  safetensors_save(path, {{"lin.weight", at::ones({4, 2})},  // wrong shape
                          {"lin.bias", at::ones({4})},
                          {"bn.num_batches_tracked", at::ones({}, at::kFloat)},  // wrong dtype
                          {"extra.weight", at::ones({1})},  // unexpected
                          {"seg.weight", at::ones({1})}});  // ignored
  SmallNet net;
  const at::Tensor bias_before = net->lin->bias.clone();
  try {
    LoadOptions options;
    options.ignore = {"seg."};
    state_dict_load(*net, checkpoint_open(path), options);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find("key 'lin.weight': shape [4, 2] in the checkpoint, [4, 3] in the model"), std::string::npos) << m;
    EXPECT_NE(m.find("key 'bn.num_batches_tracked': dtype F32 in the checkpoint, Long in the model"), std::string::npos) << m;
    EXPECT_NE(m.find("unexpected key 'extra.weight'"), std::string::npos) << m;
    EXPECT_NE(m.find("missing key 'bn.running_mean'"), std::string::npos) << m;
    EXPECT_NE(m.find("missing key 'scale'"), std::string::npos) << m;
    EXPECT_EQ(m.find("seg.weight"), std::string::npos) << m;
  }
  EXPECT_TRUE(net->lin->bias.equal(bias_before)) << "a failed load must leave the module untouched";
}

TEST(StateDict, PrefixLoadsASubmodule) {
  const std::string path = test::temp_dir() + "/prefixed.safetensors";
  SmallNet source;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : source->named_parameters()) tensors.emplace_back("model.net." + p.key(), p.value());
  for (const auto& b : source->named_buffers()) tensors.emplace_back("model.net." + b.key(), b.value());
  tensors.emplace_back("lm_head.weight", at::ones({2}));
  safetensors_save(path, tensors);
  SmallNet net;
  LoadOptions options;
  options.prefix = "model.net.";
  options.whole_checkpoint = false;
  EXPECT_EQ(state_dict_load(*net, checkpoint_open(path), options).loaded, 8u);
  EXPECT_TRUE(net->lin->weight.equal(source->lin->weight));
}

}  // namespace
}  // namespace m3d::io
