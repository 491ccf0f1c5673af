// Decoder-only transformer family: Llama (Touvron et al. 2023), Phi-3 (Abdin et
// al. 2024), Qwen2 (Yang et al. 2024), matching transformers' modeling_llama.py,
// modeling_phi3.py and modeling_qwen2.py in eager mode: RMSNorm in fp32 then cast
// before the weight, rotate-half RoPE on all head dims with cos/sin from fp32,
// softmax in fp32. RoPE scaling (Phi-3 128k longrope, Llama-3.1) and sliding
// windows are not implemented: configs that need them are refused.
// Letters: B batch, L new tokens, T cached + new tokens, D hidden, h heads, k kv heads, d head dim.
#include "models/llama.h"

#include "models/quant_linear.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/activation.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>

#include "io/json_util.h"
#include "m3d/error.h"
#include "models/autocast.h"

namespace m3d::models {
namespace {

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

// The most negative value of `type`, used as "masked" like torch.finfo(dtype).min in HF.
double dtype_lowest(c10::ScalarType type) {
  switch (type) {
    case torch::kHalf:
      return -65504.0;
    case torch::kBFloat16:
      return -3.3895313892515355e38;
    case torch::kDouble:
      return std::numeric_limits<double>::lowest();
    default:
      return std::numeric_limits<float>::lowest();
  }
}

// M3D_DECODE_FUSED=0 starts a process with the general path (benchmarks compare both).
bool fused_step_default() {
  const char* env = std::getenv("M3D_DECODE_FUSED");
  return env == nullptr || std::string(env) != "0";
}

std::atomic<bool> fused_step_enabled{fused_step_default()};

// Whether DecoderModelImpl::forward may take the fused single-token step (llama.h).
bool fused_step_applies(const torch::Tensor& embeds, const KvCache* cache, const torch::Tensor& mask) {
  if (!fused_step_enabled.load() || cache == nullptr || mask.defined() || embeds.size(1) != 1) return false;
  if (!embeds.device().is_cpu() || embeds.scalar_type() != torch::kFloat || at::GradMode::is_enabled()) return false;
  if (autocast_enabled(c10::DeviceType::CPU)) return false;
  for (size_t i = 0; i < cache->k.size(); ++i) {
    for (const auto* t : {&cache->k[i], &cache->v[i]}) {
      if (t->scalar_type() != torch::kFloat || !t->is_contiguous() || !t->device().is_cpu()) return false;
    }
  }
  return true;
}

// RmsNormImpl::forward on f32 rows (B, 1, D) with the same float operations: the squares
// summed by libtorch's own reduction (its cascade order), then one rounding each for the
// mean, + eps, 1 / sqrt and the two products.
torch::Tensor rms_norm_step(const RmsNormImpl& norm, const torch::Tensor& x) {
  const int64_t D = x.size(-1), rows = x.numel() / D;
  const float* in = x.data_ptr<float>();
  auto squares = at::empty_like(x);
  float* sq = squares.data_ptr<float>();
  for (int64_t i = 0; i < rows * D; ++i) sq[i] = in[i] * in[i];
  const auto sums = at::sum(squares, -1);  // (B, 1)
  const auto weight = norm.weight.to(torch::kFloat).contiguous();
  const float* w = weight.data_ptr<float>();
  const float* sum = sums.data_ptr<float>();
  const float eps = static_cast<float>(norm.eps());
  auto out = at::empty_like(x);
  float* o = out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / std::sqrt(sum[r] / static_cast<float>(D) + eps);
    for (int64_t i = 0; i < D; ++i) o[r * D + i] = w[i] * (in[r * D + i] * inv);
  }
  return out;
}

// Rotate-half RoPE of one head: out = x * cos + rotate_half(x) * sin, each product rounded.
void rope_head(const float* x, const float* cos, const float* sin, int64_t d, float* out) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) out[i] = x[i] * cos[i] + -x[i + half] * sin[i];
  for (int64_t i = half; i < d; ++i) out[i] = x[i] * cos[i] + x[i - half] * sin[i];
}

// q . k over d elements in 8 interleaved partial sums (vectorisable, no serial chain).
float dot_row(const float* q, const float* k, int64_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int u = 0; u < 8; ++u) acc[u] += q[j + u] * k[j + u];
  }
  float total = 0;
  for (; j < d; ++j) total += q[j] * k[j];
  for (float a : acc) total += a;
  return total;
}

}  // namespace

void decoder_fused_step_set(bool enabled) { fused_step_enabled.store(enabled); }
bool decoder_fused_step_enabled() { return fused_step_enabled.load(); }

DecoderConfig DecoderConfig::from_hf(const io::HfConfig& hf, const std::string& family, const std::string& where) {
  if (family != "llama" && family != "phi3" && family != "qwen2") { fail("{}: unknown decoder family '{}' (supported: llama, phi3, qwen2)", where, family); }
  auto require = [&](const std::optional<int64_t>& value, const char* key) {
    if (!value || *value <= 0) fail("{}: '{}' is required and must be positive", where, key);
    return *value;
  };
  DecoderConfig c;
  c.model_type = family;
  c.hidden_size = require(hf.hidden_size, "hidden_size");
  c.intermediate_size = require(hf.intermediate_size, "intermediate_size");
  c.num_hidden_layers = require(hf.num_hidden_layers, "num_hidden_layers");
  c.num_attention_heads = require(hf.num_attention_heads, "num_attention_heads");
  c.num_key_value_heads = hf.num_key_value_heads.value_or(c.num_attention_heads);
  c.vocab_size = require(hf.vocab_size, "vocab_size");
  c.max_position_embeddings = hf.max_position_embeddings.value_or(c.max_position_embeddings);
  c.rms_norm_eps = hf.rms_norm_eps.value_or(family == "phi3" ? 1e-5 : 1e-6);
  c.rope_theta = hf.rope_theta.value_or(family == "qwen2" ? 1e6 : 1e4);
  c.tie_word_embeddings = hf.tie_word_embeddings.value_or(false);
  c.hidden_act = io::json_string(hf.raw, "hidden_act", where).value_or("silu");
  c.attention_bias = family == "llama" && io::json_bool(hf.raw, "attention_bias", where).value_or(false);
  c.qkv_bias = family == "qwen2";
  c.head_dim = io::json_int(hf.raw, "head_dim", where).value_or(c.hidden_size / c.num_attention_heads);
  if (c.head_dim * c.num_attention_heads != c.hidden_size && family != "qwen2" && family != "llama") {
    fail("{}: hidden_size {} is not num_attention_heads {} x head_dim {}", where, c.hidden_size, c.num_attention_heads, c.head_dim);
  }
  if (c.head_dim % 2 != 0) fail("{}: head_dim {} must be even for RoPE", where, c.head_dim);
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", where, c.num_attention_heads, c.num_key_value_heads);
  }
  if (auto it = hf.raw.find("rope_scaling"); it != hf.raw.end() && !it->is_null()) {
    fail("{}: rope_scaling {} is not supported yet (plain RoPE only; M3D's Phi-3-mini-4k and Llama-2 use none)", where, it->dump());
  }
  if (io::json_bool(hf.raw, "use_sliding_window", where).value_or(false)) { fail("{}: use_sliding_window is not supported", where); }
  return c;
}

AttentionImpl::AttentionImpl(const DecoderConfig& c) : config_(c) {
  const int64_t q_out = c.num_attention_heads * c.head_dim, kv_out = c.num_key_value_heads * c.head_dim;
  if (c.fused()) {
    qkv_proj = register_module("qkv_proj", Linear(c.hidden_size, q_out + 2 * kv_out, false));
  } else {
    const bool bias = c.attention_bias || c.qkv_bias;
    q_proj = register_module("q_proj", Linear(c.hidden_size, q_out, bias));
    k_proj = register_module("k_proj", Linear(c.hidden_size, kv_out, bias));
    v_proj = register_module("v_proj", Linear(c.hidden_size, kv_out, bias));
  }
  o_proj = register_module("o_proj", Linear(q_out, c.hidden_size, c.attention_bias));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& mask, KvCache* cache,
                                     size_t layer) {
  const auto& c = config_;
  const int64_t B = x.size(0), L = x.size(1), h = c.num_attention_heads, k_heads = c.num_key_value_heads, d = c.head_dim;
  torch::Tensor q, k, v;
  if (c.fused()) {
    // Phi-3: q | k | v along the output features (modeling_phi3.py).
    auto qkv = qkv_proj(x);  // (B, L, (h + 2k) d)
    q = qkv.slice(-1, 0, h * d);
    k = qkv.slice(-1, h * d, (h + k_heads) * d);
    v = qkv.slice(-1, (h + k_heads) * d);
  } else {
    q = q_proj(x), k = k_proj(x), v = v_proj(x);
  }
  q = q.view({B, L, h, d}).transpose(1, 2);  // (B, h, L, d)
  k = k.view({B, L, k_heads, d}).transpose(1, 2);  // (B, k, L, d)
  v = v.view({B, L, k_heads, d}).transpose(1, 2);  // (B, k, L, d)
  const auto cos_h = cos.unsqueeze(1).to(q.scalar_type()), sin_h = sin.unsqueeze(1).to(q.scalar_type());  // (B, 1, L, d)
  q = q * cos_h + rotate_half(q) * sin_h;
  k = k * cos_h + rotate_half(k) * sin_h;
  if (cache != nullptr) {
    cache->k[layer].narrow(2, cache->length, L).copy_(k);
    cache->v[layer].narrow(2, cache->length, L).copy_(v);
    k = cache->k[layer].narrow(2, 0, cache->length + L);  // (B, k, T, d)
    v = cache->v[layer].narrow(2, 0, cache->length + L);
  }
  const int64_t T = k.size(2), groups = h / k_heads;
  if (groups > 1) {  // grouped-query attention: each kv head serves `groups` query heads (repeat_kv)
    k = k.unsqueeze(2).expand({B, k_heads, groups, T, d}).reshape({B, h, T, d});
    v = v.unsqueeze(2).expand({B, k_heads, groups, T, d}).reshape({B, h, T, d});
  }
  auto scores = torch::matmul(q, k.transpose(2, 3)) / std::sqrt(static_cast<double>(d));  // (B, h, L, T)
  if (mask.defined()) scores = scores + mask;
  auto weights = scores.softmax(-1, torch::kFloat).to(q.scalar_type());
  auto out = torch::matmul(weights, v);  // (B, h, L, d)
  return o_proj(out.transpose(1, 2).reshape({B, L, h * d}));  // (B, L, D)
}

torch::Tensor AttentionImpl::forward_step(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, KvCache& cache, size_t layer) {
  const auto& c = config_;
  const int64_t B = x.size(0), h = c.num_attention_heads, k_heads = c.num_key_value_heads, d = c.head_dim, groups = h / k_heads;
  const int64_t pos = cache.length, T = pos + 1, capacity = cache.capacity;
  // Rows of q, k and v per batch item: one fused row (Phi-3) or three separate ones.
  torch::Tensor qkv, q_out, k_out, v_out;
  const float *q, *k, *v;
  int64_t q_stride, kv_stride;
  if (c.fused()) {
    qkv = qkv_proj(x).contiguous();  // (B, 1, (h + 2k) d)
    q = qkv.data_ptr<float>(), k = q + h * d, v = k + k_heads * d;
    q_stride = kv_stride = (h + 2 * k_heads) * d;
  } else {
    q_out = q_proj(x).contiguous(), k_out = k_proj(x).contiguous(), v_out = v_proj(x).contiguous();  // (B, 1, h d), (B, 1, k d)
    q = q_out.data_ptr<float>(), k = k_out.data_ptr<float>(), v = v_out.data_ptr<float>();
    q_stride = h * d, kv_stride = k_heads * d;
  }
  float* k_cache = cache.k[layer].data_ptr<float>();  // (B, k, capacity, d)
  float* v_cache = cache.v[layer].data_ptr<float>();
  const float* cos_p = cos.data_ptr<float>();  // (B, 1, d)
  const float* sin_p = sin.data_ptr<float>();
  auto rotated = at::empty({B, h, d}, x.options());
  float* q_rot = rotated.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    const float *cb = cos_p + b * d, *sb = sin_p + b * d;
    for (int64_t i = 0; i < h; ++i) rope_head(q + b * q_stride + i * d, cb, sb, d, q_rot + (b * h + i) * d);
    for (int64_t j = 0; j < k_heads; ++j) {
      const int64_t slot = ((b * k_heads + j) * capacity + pos) * d;
      rope_head(k + b * kv_stride + j * d, cb, sb, d, k_cache + slot);
      std::copy_n(v + b * kv_stride + j * d, d, v_cache + slot);
    }
  }
  // Scores of each query head against its kv head's T cached keys (repeat_kv without the copy).
  auto scores = at::empty({B, h, T}, x.options());
  float* s = scores.data_ptr<float>();
  const float scale = static_cast<float>(std::sqrt(static_cast<double>(d)));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < h; ++i) {
      const float* qi = q_rot + (b * h + i) * d;
      const float* keys = k_cache + (b * k_heads + i / groups) * capacity * d;
      for (int64_t t = 0; t < T; ++t) s[(b * h + i) * T + t] = dot_row(qi, keys + t * d, d) / scale;
    }
  }
  const auto weights = at::_softmax(scores, -1, false);  // (B, h, T)
  const float* p = weights.data_ptr<float>();
  auto out = at::zeros({B, 1, h * d}, x.options());
  float* o = out.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < h; ++i) {
      const float* values = v_cache + (b * k_heads + i / groups) * capacity * d;
      const float* pi = p + (b * h + i) * T;
      float* oi = o + (b * h + i) * d;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t j = 0; j < d; ++j) oi[j] += pi[t] * values[t * d + j];
      }
    }
  }
  return o_proj(out);  // (B, 1, D)
}

GatedMlpImpl::GatedMlpImpl(const DecoderConfig& c) : fused_(c.fused()) {
  if (fused_) {
    gate_up_proj = register_module("gate_up_proj", Linear(c.hidden_size, 2 * c.intermediate_size, false));
  } else {
    gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, false));
    up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, false));
  }
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, false));
}

torch::Tensor GatedMlpImpl::forward(const torch::Tensor& x) {
  if (fused_) {
    auto gate_up = gate_up_proj(x);  // (B, L, 2I): gate first, then up (modeling_phi3.py)
    auto parts = gate_up.chunk(2, -1);
    return down_proj(parts[1] * torch::silu(parts[0]));
  }
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

torch::Tensor GatedMlpImpl::forward_step(const torch::Tensor& x) {
  torch::Tensor gate_up, gate, up;
  if (fused_) {
    gate_up = gate_up_proj(x);  // (B, 1, 2I)
    const int64_t I = gate_up.size(-1) / 2;
    gate = gate_up.narrow(-1, 0, I), up = gate_up.narrow(-1, I, I);
  } else {
    gate = gate_proj(x), up = up_proj(x);  // (B, 1, I)
  }
  at::silu_(gate);  // libtorch's kernel: its exp is not std::exp
  const int64_t B = gate.size(0), I = gate.size(-1), gate_stride = gate.stride(0), up_stride = up.stride(0);
  float* g = gate.data_ptr<float>();
  const float* u = up.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < I; ++i) g[b * gate_stride + i] *= u[b * up_stride + i];
  }
  return down_proj(gate);
}

DecoderLayerImpl::DecoderLayerImpl(const DecoderConfig& c) {
  self_attn = register_module("self_attn", Attention(c));
  mlp = register_module("mlp", GatedMlp(c));
  input_layernorm = register_module("input_layernorm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RmsNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& mask, KvCache* cache,
                                        size_t layer) {
  auto h = x + self_attn->forward(input_layernorm(x), cos, sin, mask, cache, layer);
  return h + mlp(post_attention_layernorm(h));
}

void DecoderLayerImpl::forward_step(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, KvCache& cache, size_t layer) {
  float* h = x.data_ptr<float>();
  const int64_t n = x.numel();
  const auto attn = self_attn->forward_step(rms_norm_step(*input_layernorm, x), cos, sin, cache, layer).contiguous();
  const float* a = attn.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) h[i] += a[i];
  const auto mlp_out = mlp->forward_step(rms_norm_step(*post_attention_layernorm, x)).contiguous();
  const float* m = mlp_out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) h[i] += m[i];
}

DecoderModelImpl::DecoderModelImpl(const DecoderConfig& c) : config_(c) {
  if (c.hidden_act != "silu") fail("decoder: unsupported hidden_act '{}' (supported: silu)", c.hidden_act);
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(DecoderLayer(c));
  norm = register_module("norm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  // inv_freq[i] = theta^(-2i/d), computed as HF does: arange in int64, then fp32.
  inv_freq_ = 1.0 / torch::pow(c.rope_theta, torch::arange(0, c.head_dim, 2, torch::kLong).to(torch::kFloat) / c.head_dim);
}

KvCache DecoderModelImpl::make_cache(int64_t batch, int64_t capacity, const torch::TensorOptions& options) const {
  KvCache cache;
  cache.capacity = capacity;
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    cache.k.push_back(torch::empty({batch, config_.num_key_value_heads, capacity, config_.head_dim}, options));
    cache.v.push_back(torch::empty({batch, config_.num_key_value_heads, capacity, config_.head_dim}, options));
  }
  return cache;
}

torch::Tensor DecoderModelImpl::forward(const torch::Tensor& embeds, KvCache* cache, const torch::Tensor& position_ids, const torch::Tensor& attention_mask) {
  const int64_t B = embeds.size(0), L = embeds.size(1);
  const int64_t past = cache ? cache->length : 0, T = past + L;
  if (cache && T > cache->capacity) fail("decoder: {} positions exceed the KV cache capacity {}", T, cache->capacity);
  const auto device = embeds.device();
  torch::Tensor positions = position_ids.defined()
                                ? position_ids.to(device)
                                : torch::arange(past, T, torch::TensorOptions().dtype(torch::kLong).device(device)).unsqueeze(0).expand({B, L});  // (B, L)
  // cos/sin from fp32 angles, cat(freqs, freqs) for rotate-half.
  auto freqs = positions.to(torch::kFloat).unsqueeze(-1) * inv_freq_.to(device);  // (B, L, d/2)
  auto angles = torch::cat({freqs, freqs}, -1);  // (B, L, d)
  const auto cos = angles.cos(), sin = angles.sin();

  // Additive mask: causal over absolute cache positions, plus padding.
  torch::Tensor mask;
  const bool padded = attention_mask.defined() && !attention_mask.all().item<bool>();
  if (L > 1 || padded) {
    const auto opts = torch::TensorOptions().dtype(torch::kLong).device(device);
    auto allowed = torch::arange(T, opts).unsqueeze(0) <= torch::arange(past, T, opts).unsqueeze(1);  // (L, T)
    auto allowed4 = allowed.view({1, 1, L, T}).expand({B, 1, L, T});
    if (attention_mask.defined()) allowed4 = allowed4.logical_and(attention_mask.to(device).view({B, 1, 1, T}).to(torch::kBool));
    mask = torch::zeros({B, 1, L, T}, embeds.options()).masked_fill(allowed4.logical_not(), dtype_lowest(embeds.scalar_type()));
  }
  auto x = embeds;
  if (fused_step_applies(embeds, cache, mask)) {
    x = embeds.clone(at::MemoryFormat::Contiguous);  // the residual stream, updated in place
    const auto cos_c = cos.contiguous(), sin_c = sin.contiguous();
    for (size_t i = 0; i < layers->size(); ++i) layers[i]->as<DecoderLayer>()->forward_step(x, cos_c, sin_c, *cache, i);
  } else {
    for (size_t i = 0; i < layers->size(); ++i) x = layers[i]->as<DecoderLayer>()->forward(x, cos, sin, mask, cache, i);
  }
  if (cache) cache->length = T;
  return norm(x);
}

torch::Tensor decoder_logits(const DecoderModelImpl& model, const Linear& lm_head, const torch::Tensor& hidden) {
  if (lm_head) return lm_head->forward(hidden);
  if (const QuantWeight* table = model.embed_tokens->quantized()) return quant_linear(hidden, *table);  // tied, quantized (a GGUF model)
  return dense_linear(hidden, model.embed_tokens->weight);  // tied embeddings
}

}  // namespace m3d::models
