// Single-token decode products with bf16 weights at LaMed-Phi-3-4B's shapes: GB/s of weight
// read by libtorch's bf16 GEMV (at::linear, 1 row, what dense_linear ran before bf16_gemv.h),
// by bf16_matmul with f32 x on every ISA this CPU has, and by a plain threaded sum of a
// buffer of the same size (the read roofline), all in one process. Weights rotate through
// copies of at least 128 MB so that no product finds its weight in the L3 cache, as in a
// real decode, which reads every layer once per token. Prints every repeat, then a table of
// medians; --sweep adds milliseconds per product for 1..128 rows (the crossover dense_linear uses).
//   bench_gemv [--repeat R] [--threads T] [--sweep]
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "m3d/runtime.h"
#include "models/bf16_gemv.h"

namespace {

using m3d::models::QuantIsa;

struct Shape {
  const char* name;
  int64_t k, n;
};

// Copies of one random (n, k) bf16 weight, enough to hold at least 128 MB together.
std::vector<torch::Tensor> weight_copies(const Shape& shape) {
  const int64_t bytes = shape.n * shape.k * 2, copies = std::max<int64_t>(1, ((128 << 20) + bytes - 1) / bytes);
  const auto weight = (torch::randn({shape.n, shape.k}) * 0.02).to(torch::kBFloat16);
  std::vector<torch::Tensor> out{weight};
  for (int64_t c = 1; c < copies; ++c) out.push_back(weight.clone());
  return out;
}

// A measured thing: a label and one product (or read) of a weight.
struct Method {
  std::string label;
  std::function<void(const torch::Tensor&)> pass;
};

// Seconds per pass over one weight for each method, repeats of them interleaved (method 0,
// 1, ... then again) so that other load on the machine hits every method alike; a run is one
// pass over every copy, and a first run of each warms up.
std::vector<std::vector<double>> time_interleaved(const std::vector<torch::Tensor>& weights, int64_t repeats, const std::vector<Method>& methods) {
  std::vector<std::vector<double>> seconds(methods.size());
  for (int64_t r = 0; r <= repeats; ++r) {
    for (size_t i = 0; i < methods.size(); ++i) {
      const auto start = std::chrono::steady_clock::now();
      for (const auto& w : weights) methods[i].pass(w);
      if (r > 0) seconds[i].push_back(m3d::bench::seconds_since(start) / static_cast<double>(weights.size()));
    }
  }
  return seconds;
}

// Prints one method's repeats in GB/s of weight read and returns the median.
double report(const std::string& label, const std::vector<double>& seconds, double bytes) {
  std::printf("%-32s", label.c_str());
  for (double s : seconds) std::printf(" %6.1f", bytes / s / 1e9);
  const double median = bytes / m3d::bench::median(seconds) / 1e9;
  std::printf("  | median %.1f GB/s\n", median);
  return median;
}

// The median over repeats of a method's speed relative to the read in the same repeat.
double median_ratio(const std::vector<double>& read_s, const std::vector<double>& method_s) {
  std::vector<double> ratios;
  for (size_t r = 0; r < read_s.size(); ++r) ratios.push_back(read_s[r] / method_s[r]);
  return m3d::bench::median(ratios);
}

std::vector<QuantIsa> available_isas() {
  std::vector<QuantIsa> isas;
  for (QuantIsa isa : {QuantIsa::kScalar, QuantIsa::kAvx2, QuantIsa::kAvx512}) {
    if (m3d::models::bf16_gemv_isa_available(isa)) isas.push_back(isa);
  }
  return isas;
}

std::string isa_label(QuantIsa isa) {
  m3d::models::bf16_gemv_isa_force(isa);
  const std::string name = m3d::models::bf16_gemv_description();
  m3d::models::bf16_gemv_isa_force(QuantIsa::kAuto);
  return name;
}

// bf16_matmul on one ISA, x (m, k) f32 into y (m, n).
Method bf16_method(QuantIsa isa, const torch::Tensor& x, torch::Tensor& y) {
  return {"bf16_matmul " + isa_label(isa), [isa, x, &y](const torch::Tensor& w) {
            m3d::models::bf16_gemv_isa_force(isa);
            m3d::models::bf16_matmul(static_cast<const uint16_t*>(w.data_ptr()), w.size(0), w.size(1), x.data_ptr<float>(), x.size(0), y.data_ptr<float>());
            m3d::models::bf16_gemv_isa_force(QuantIsa::kAuto);
          }};
}

// Milliseconds per product with m rows: at::linear with the weight upcast to f32 (dense_linear's
// many-row f32 path), at::linear in bf16 (its bf16-activation path) and bf16_matmul.
void sweep(const Shape& shape, int64_t repeats) {
  const auto weights = weight_copies(shape);
  std::printf("\n%s (k %lld, n %lld): ms per product, median\n%4s %12s %12s %12s\n", shape.name, static_cast<long long>(shape.k),
              static_cast<long long>(shape.n), "rows", "f32 linear", "bf16 linear", "bf16_matmul");
  for (int64_t m : {1, 2, 4, 6, 8, 12, 16, 32, 64, 128}) {
    const auto x = torch::randn({m, shape.k}), xh = x.to(torch::kBFloat16);
    auto y = torch::empty({m, shape.n});
    const std::vector<Method> methods = {{"f32", [&](const torch::Tensor& w) { at::linear(x, w.to(torch::kFloat)); }},
                                         {"bf16", [&](const torch::Tensor& w) { at::linear(xh, w); }},
                                         bf16_method(QuantIsa::kAuto, x, y)};
    const auto seconds = time_interleaved(weights, repeats, methods);
    std::printf("%4lld", static_cast<long long>(m));
    for (const auto& s : seconds) std::printf(" %12.3f", m3d::bench::median(s) * 1e3);
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t repeats = 5, threads = 2;
  bool with_sweep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--sweep") with_sweep = true;
    else if (i + 1 >= argc) return std::fprintf(stderr, "%s needs a value\n", flag.c_str()), 2;
    else if (flag == "--repeat") repeats = std::stoll(argv[++i]);
    else if (flag == "--threads") threads = std::stoll(argv[++i]);
    else return std::fprintf(stderr, "unknown flag %s\n", flag.c_str()), 2;
  }
  m3d::runtime_set_threads(static_cast<int>(threads));
  torch::manual_seed(0);
  const Shape shapes[] = {{"qkv_proj", 3072, 9216}, {"o_proj", 3072, 3072}, {"gate_up_proj", 3072, 16384}, {"down_proj", 8192, 3072}, {"lm_head", 3072, 32064}};
  std::printf("threads %d; GB/s of weight read per repeat\n", at::get_num_threads());
  std::vector<std::string> labels;
  std::vector<std::vector<std::pair<double, double>>> table;  // per shape, per method: (median GB/s, ratio to read)
  for (const Shape& shape : shapes) {
    const auto weights = weight_copies(shape);
    const auto x = torch::randn({1, shape.k}), xh = x.to(torch::kBFloat16);
    auto y = torch::empty({1, shape.n});
    std::vector<Method> methods = {{"read", [](const torch::Tensor& w) { m3d::bench::sum_words(w.data_ptr(), static_cast<int64_t>(w.nbytes())); }},
                                   {"at::linear bf16", [&](const torch::Tensor& w) { at::linear(xh, w); }}};
    for (QuantIsa isa : available_isas()) methods.push_back(bf16_method(isa, x, y));
    const auto seconds = time_interleaved(weights, repeats, methods);
    std::vector<std::pair<double, double>> row;
    labels.clear();
    for (size_t i = 0; i < methods.size(); ++i) {
      labels.push_back(methods[i].label);
      const double gbs = report(std::string(shape.name) + " " + methods[i].label, seconds[i], static_cast<double>(shape.n * shape.k * 2));
      row.emplace_back(gbs, median_ratio(seconds[0], seconds[i]));
    }
    table.push_back(row);
  }
  std::printf("\n%-14s", "shape");
  for (const auto& label : labels) std::printf(" %24s", label.c_str());
  std::printf("\n");
  for (size_t s = 0; s < table.size(); ++s) {
    std::printf("%-14s", shapes[s].name);
    for (const auto& [gbs, ratio] : table[s]) std::printf(" %16.1f (%.2f)", gbs, ratio);
    std::printf("\n");
  }
  std::printf("(GB/s of weight read, median; in parentheses the median per-repeat ratio to the read)\n");
  if (with_sweep) sweep(shapes[0], repeats);
  return 0;
}
