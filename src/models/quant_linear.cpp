// Glue between libtorch tensors and the torch-free kernels of models/quant_matmul.h.
#include "models/quant_linear.h"

#include <ATen/ATen.h>

#include "m3d/error.h"
#include "models/quant_matmul.h"

namespace m3d::models {

size_t QuantWeight::row_bytes() const {
  const io::GgmlTypeInfo& info = io::ggml_type_info(type);
  return static_cast<size_t>(cols / info.block_size) * info.type_size;
}

at::Tensor quant_linear(const at::Tensor& x, const QuantWeight& w, const at::Tensor& bias) {
  if (!x.device().is_cpu()) fail("{} weights run on the CPU only; the activations are on {}", io::ggml_type_name(w.type), x.device().str());
  if (x.size(-1) != w.cols) fail("quantized linear: input has {} features, the weight takes {}", x.size(-1), w.cols);
  const at::Tensor x32 = x.to(at::kFloat).contiguous();
  const int64_t m = x32.numel() / w.cols;
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = w.rows;
  at::Tensor y = at::empty(shape, x32.options());
  if (m > 0) quant_matmul(w.type, w.data, w.rows, w.cols, x32.data_ptr<float>(), m, y.data_ptr<float>());
  if (bias.defined()) y.add_(bias.to(at::kFloat));
  return y.to(x.scalar_type());
}

at::Tensor quant_rows(const QuantWeight& w, const at::Tensor& ids) {
  const at::Tensor flat = ids.to(at::kLong).contiguous().view(-1);
  at::Tensor out = at::empty({flat.numel(), w.cols}, at::kFloat);
  const int64_t* id = flat.data_ptr<int64_t>();
  for (int64_t i = 0; i < flat.numel(); ++i) {
    if (id[i] < 0 || id[i] >= w.rows) fail("embedding: token id {} is outside the vocabulary of {}", id[i], w.rows);
    io::ggml_dequantize(w.type, w.data + static_cast<size_t>(id[i]) * w.row_bytes(), out[i].data_ptr<float>(), w.cols);
  }
  std::vector<int64_t> shape = ids.sizes().vec();
  shape.push_back(w.cols);
  return out.view(shape);
}

at::Tensor quant_dequantize(const QuantWeight& w) {
  at::Tensor out = at::empty({w.rows, w.cols}, at::kFloat);
  io::ggml_dequantize(w.type, w.data, out.data_ptr<float>(), w.rows * w.cols);
  return out;
}

}  // namespace m3d::models
