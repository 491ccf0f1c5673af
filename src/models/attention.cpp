// See attention.h. Per (batch, head) the CPU path walks the query rows in blocks of
// kBlockRows: scores = q_blk k^T * scale into a small scratch, softmax into the kept
// probabilities (or a second scratch when no backward follows), out_blk = p_blk v.
// The backward walks the same blocks: dv += p_blk^T dout_blk, dp = dout_blk v^T,
// ds = softmax_backward(dp, p_blk) * scale, dq_blk = ds k, dk += ds^T q_blk. Every
// (rows x N) intermediate but the probabilities lives in cache; the plain ops would
// write and reread four (B, H, N, N) tensors. The operations per element are the
// plain ones in the same order (the matmul, then the scale), so results agree to rounding.
#include "models/attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include <fmt/ranges.h>

#include "m3d/error.h"
#include "models/autocast.h"

// OpenBLAS reports its threading: 0 sequential, 1 pthreads, 2 OpenMP. Weak: absent with other BLAS.
extern "C" int openblas_get_parallel() __attribute__((weak));
extern "C" int openblas_get_num_threads() __attribute__((weak));
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace m3d::models {
namespace {

constexpr int64_t kBlockRows = 128;

struct Shape {
  int64_t batch, tokens, heads, head_dim;
};

Shape shape_of(const at::Tensor& qkv, int64_t num_heads) {
  if (qkv.dim() != 3 || num_heads <= 0 || qkv.size(2) % (3 * num_heads) != 0) {
    fail("attention: expected qkv of shape [B, N, 3 * heads * head_dim] with {} heads, got {}", num_heads, fmt::join(qkv.sizes(), "x"));
  }
  return {qkv.size(0), qkv.size(1), num_heads, qkv.size(2) / (3 * num_heads)};
}

// (N, d) view of part (0 q, 1 k, 2 v) of head h of batch b; rows are 3*H*d apart.
at::Tensor head_of(const at::Tensor& qkv5, int64_t b, int64_t part, int64_t h) { return qkv5.select(0, b).select(1, part).select(1, h); }

// OpenBLAS's pthread build keeps its own thread pool, which competes with the OpenMP workers for
// the cores; while the heads run on those workers it is set to one thread (the OpenMP build and
// other BLAS libraries use one thread inside an OpenMP region by themselves).
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() {
    if (openblas_get_parallel != nullptr && openblas_get_parallel() == 1 && openblas_set_num_threads != nullptr) {
      previous_ = openblas_get_num_threads();
      openblas_set_num_threads(1);
    }
  }
  ~SingleThreadedBlas() {
    if (previous_ > 0) openblas_set_num_threads(previous_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int previous_ = 0;
};

// Runs fn(b, h) for every batch and head spread over the intra-op threads, one BLAS thread inside
// each, below autograd and autocast (the caller has decided the dtypes).
template <typename Fn>
void for_each_head(const Shape& s, const Fn& fn) {
  SingleThreadedBlas one_blas_thread;
  at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
    at::NoGradGuard no_grad;
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    for (int64_t i = begin; i < end; ++i) fn(i / s.heads, i % s.heads);
  });
}

// probs: (B, H, N, N) to keep for the backward, or undefined.
at::Tensor blocked_forward(const at::Tensor& qkv, int64_t num_heads, double scale, const at::Tensor& probs) {
  const Shape s = shape_of(qkv, num_heads);
  const auto qkv5 = qkv.view({s.batch, s.tokens, 3, s.heads, s.head_dim});
  auto out = at::empty({s.batch, s.tokens, s.heads, s.head_dim}, qkv.options());
  for_each_head(s, [&](int64_t b, int64_t h) {
    const auto q = head_of(qkv5, b, 0, h), k = head_of(qkv5, b, 1, h), v = head_of(qkv5, b, 2, h);
    const auto o = out.select(0, b).select(1, h);
    const int64_t rows = std::min(kBlockRows, s.tokens);
    auto scores = at::empty({rows, s.tokens}, qkv.options());
    auto scratch = probs.defined() ? at::Tensor() : at::empty({rows, s.tokens}, qkv.options());
    for (int64_t r = 0; r < s.tokens; r += kBlockRows) {
      const int64_t n = std::min(kBlockRows, s.tokens - r);
      auto sc = scores.narrow(0, 0, n);
      at::mm_out(sc, q.narrow(0, r, n), k.t());
      sc.mul_(scale);
      auto p = probs.defined() ? probs.select(0, b).select(0, h).narrow(0, r, n) : scratch.narrow(0, 0, n);
      at::_softmax_out(p, sc, -1, false);
      auto ob = o.narrow(0, r, n);
      at::mm_out(ob, p, v);
    }
  });
  return out.view({s.batch, s.tokens, s.heads * s.head_dim});
}

at::Tensor blocked_backward(const at::Tensor& qkv, const at::Tensor& probs, const at::Tensor& grad_out, int64_t num_heads, double scale) {
  const Shape s = shape_of(qkv, num_heads);
  const auto qkv5 = qkv.view({s.batch, s.tokens, 3, s.heads, s.head_dim});
  const auto dout = grad_out.contiguous().view({s.batch, s.tokens, s.heads, s.head_dim});
  auto grad = at::zeros({s.batch, s.tokens, 3, s.heads, s.head_dim}, qkv.options());
  for_each_head(s, [&](int64_t b, int64_t h) {
    const auto q = head_of(qkv5, b, 0, h), k = head_of(qkv5, b, 1, h), v = head_of(qkv5, b, 2, h);
    auto dq = head_of(grad, b, 0, h), dk = head_of(grad, b, 1, h), dv = head_of(grad, b, 2, h);
    const auto p_all = probs.select(0, b).select(0, h), dout_bh = dout.select(0, b).select(1, h);
    const int64_t rows = std::min(kBlockRows, s.tokens);
    auto dp_scratch = at::empty({rows, s.tokens}, qkv.options()), ds_scratch = at::empty({rows, s.tokens}, qkv.options());
    for (int64_t r = 0; r < s.tokens; r += kBlockRows) {
      const int64_t n = std::min(kBlockRows, s.tokens - r);
      const auto p = p_all.narrow(0, r, n), dob = dout_bh.narrow(0, r, n);
      dv.addmm_(p.t(), dob);
      auto dp = dp_scratch.narrow(0, 0, n), ds = ds_scratch.narrow(0, 0, n);
      at::mm_out(dp, dob, v.t());
      at::_softmax_backward_data_out(ds, dp, p, -1, p.scalar_type());
      ds.mul_(scale);
      auto dqb = dq.narrow(0, r, n);
      at::mm_out(dqb, ds, k);
      dk.addmm_(ds.t(), q.narrow(0, r, n));
    }
  });
  return grad.view(qkv.sizes());
}

class QkvAttention : public torch::autograd::Function<QkvAttention> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& qkv, int64_t num_heads, double scale) {
    const Shape s = shape_of(qkv, num_heads);
    const auto input = qkv.contiguous();
    auto probs = at::empty({s.batch, s.heads, s.tokens, s.tokens}, input.options());
    auto out = blocked_forward(input, num_heads, scale, probs);
    ctx->save_for_backward({input, probs});
    ctx->saved_data["num_heads"] = num_heads;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto grad = blocked_backward(saved[0], saved[1], grads[0], ctx->saved_data["num_heads"].toInt(), ctx->saved_data["scale"].toDouble());
    return {grad, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor plain_qkv_attention(const at::Tensor& qkv, int64_t num_heads, double scale, int64_t first_queries) {
  const Shape s = shape_of(qkv, num_heads);
  const int64_t queries = first_queries > 0 ? std::min(first_queries, s.tokens) : s.tokens;
  // "b h (qkv l d) -> qkv b l h d": feature j is (j / E: q|k|v, head, dim), head-major.
  const auto parts = qkv.view({s.batch, s.tokens, 3, s.heads, s.head_dim}).permute({2, 0, 3, 1, 4});  // (3, B, H, N, d)
  const auto q = parts[0].narrow(2, 0, queries);  // (B, H, Nq, d)
  const auto scores = at::matmul(q, parts[1].transpose(-2, -1)) * scale;  // (B, H, Nq, N)
  const auto out = at::matmul(scores.softmax(-1), parts[2]);  // (B, H, Nq, d)
  return out.transpose(1, 2).reshape({s.batch, queries, s.heads * s.head_dim});  // "b h l d -> b l (h d)"
}

at::Tensor fused_qkv_attention(const at::Tensor& qkv, int64_t num_heads, double scale) {
  if (!qkv.device().is_cpu()) return plain_qkv_attention(qkv, num_heads, scale);
  // Autocast would have cast the inputs of the plain ops; do the same once for the whole block.
  const auto input = autocast_enabled(c10::DeviceType::CPU) ? qkv.to(autocast_dtype(c10::DeviceType::CPU)) : qkv;
  if (at::GradMode::is_enabled() && input.requires_grad()) return QkvAttention::apply(input, num_heads, scale);
  return blocked_forward(input.contiguous(), num_heads, scale, at::Tensor());
}

}  // namespace m3d::models
