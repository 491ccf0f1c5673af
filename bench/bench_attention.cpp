// The ViT3D's self-attention alone at M3D's size (B 2, 2,049 tokens, 12 heads of 64),
// forward and backward: m3d's blocked attention (attention.h) beside the plain
// matmul / softmax / matmul formulation that MONAI's SABlock runs, in one process.
// Prints one JSON line with the median seconds of each.
//   bench_attention [--batch B] [--tokens N] [--repeat R] [--bf16]   (--bf16: bf16 inputs, as under autocast)
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "m3d/runtime.h"
#include "models/attention.h"

int main(int argc, char** argv) {
  int64_t batch = 2, tokens = 2049, repeat = 3;
  bool bf16 = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--bf16") bf16 = true;
    else if (i + 1 >= argc) return std::fprintf(stderr, "%s needs a value\n", flag.c_str()), 2;
    else if (flag == "--batch") batch = std::stoll(argv[++i]);
    else if (flag == "--tokens") tokens = std::stoll(argv[++i]);
    else if (flag == "--repeat") repeat = std::stoll(argv[++i]);
    else return std::fprintf(stderr, "unknown flag %s\n", flag.c_str()), 2;
  }
  m3d::runtime_set_threads();
  const int64_t heads = 12, head_dim = 64;
  const double scale = 0.125;
  torch::manual_seed(0);
  const auto dtype = bf16 ? torch::kBFloat16 : torch::kFloat;
  const auto qkv = torch::randn({batch, tokens, 3 * heads * head_dim}).to(dtype).requires_grad_();
  const auto upstream = torch::randn({batch, tokens, heads * head_dim}).to(dtype);
  nlohmann::json result{{"batch", batch}, {"tokens", tokens}, {"bf16", bf16}, {"threads", at::get_num_threads()}};
  for (const bool blocked : {false, true}) {
    std::vector<double> forward_s, backward_s;
    for (int64_t r = 0; r < repeat + 1; ++r) {
      auto start = std::chrono::steady_clock::now();
      const auto out = blocked ? m3d::models::fused_qkv_attention(qkv, heads, scale) : m3d::models::plain_qkv_attention(qkv, heads, scale);
      const double f = m3d::bench::seconds_since(start);
      start = std::chrono::steady_clock::now();
      out.backward(upstream);
      const double b = m3d::bench::seconds_since(start);
      qkv.mutable_grad() = torch::Tensor();
      if (r > 0) forward_s.push_back(f), backward_s.push_back(b);
    }
    result[blocked ? "blocked" : "plain"] = {{"forward_s", m3d::bench::median(forward_s)}, {"backward_s", m3d::bench::median(backward_s)}};
  }
  std::printf("%s\n", result.dump().c_str());
  return 0;
}
