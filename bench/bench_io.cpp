// Checkpoint I/O: opening a safetensors file (header parse + validation +
// mapping) and loading it into f32 and bf16 tensors. Results: docs/performance.md.
#include <benchmark/benchmark.h>
#include <ATen/ATen.h>

#include <filesystem>

#include "io/checkpoint.h"
#include "io/tensor.h"
#include "m3d/runtime.h"

namespace {

// A checkpoint of `layers` 1024x1024 f32 matrices (4 MiB each), written once.
std::string make_checkpoint(int layers) {
  const std::string path = (std::filesystem::temp_directory_path() / ("m3d_bench_" + std::to_string(layers) + ".safetensors")).string();
  if (!std::filesystem::exists(path)) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (int i = 0; i < layers; ++i) tensors.emplace_back("model.layers." + std::to_string(i) + ".weight", at::randn({1024, 1024}));
    m3d::io::safetensors_save(path, tensors);
  }
  return path;
}

void BM_CheckpointOpen(benchmark::State& state) {
  const std::string path = make_checkpoint(64);
  for (auto _ : state) benchmark::DoNotOptimize(m3d::io::checkpoint_open(path).tensors.size());
}
BENCHMARK(BM_CheckpointOpen)->Unit(benchmark::kMicrosecond);

void BM_LoadTo(benchmark::State& state, c10::ScalarType type) {
  const std::string path = make_checkpoint(64);
  const auto ckpt = m3d::io::checkpoint_open(path);
  std::vector<at::Tensor> targets;
  for (const auto& [name, record] : ckpt.tensors) targets.push_back(at::empty(record.shape, at::dtype(type)));
  for (auto _ : state) {
    size_t i = 0;
    for (const auto& [name, record] : ckpt.tensors) targets[i++].copy_(m3d::io::tensor_from_record(record));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * ckpt.total_bytes()));
}
BENCHMARK_CAPTURE(BM_LoadTo, f32, c10::kFloat)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LoadTo, bf16, c10::kBFloat16)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  m3d::runtime_set_threads();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
