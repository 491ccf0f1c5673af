// The decoder-only LLM family behind M3D-LaMed and Med3DVLM: Llama-2/3, Phi-3
// (fused qkv_proj and gate_up_proj) and Qwen2 (q/k/v bias), one implementation
// switched by config. Module names are the HF ones, so checkpoints load as they are.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <optional>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "models/layers.h"

namespace m3d::models {

// Field names are the HF config.json keys.
struct DecoderConfig {
  std::string model_type;  // "llama" | "phi3" | "qwen2"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless set
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 4096;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Llama: bias on q, k, v, o
  bool qkv_bias = false;  // Qwen2: bias on q, k, v only
  std::string hidden_act = "silu";

  bool fused() const { return model_type == "phi3"; }
  // Reads the decoder keys of any config whose LLM is of this family;
  // `family` is "llama", "phi3" or "qwen2".
  static DecoderConfig from_hf(const io::HfConfig& config, const std::string& family, const std::string& where);
};

// Per-layer key/value cache, preallocated to `capacity` positions.
struct KvCache {
  std::vector<torch::Tensor> k, v;  // (B, kv_heads, capacity, head_dim) per layer
  int64_t length = 0;  // positions filled
  int64_t capacity = 0;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const DecoderConfig& config);
  // x (B, L, hidden); cos/sin (B, L, head_dim); mask (B, 1, L, T) additive or undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& mask, KvCache* cache, size_t layer);
  // The single-token step (see decoder_fused_step_set): x (B, 1, hidden) f32, cos/sin
  // (B, 1, head_dim) contiguous f32; writes position cache.length. Returns (B, 1, hidden).
  torch::Tensor forward_step(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, KvCache& cache, size_t layer);

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, qkv_proj{nullptr}, o_proj{nullptr};

 private:
  DecoderConfig config_;
};
TORCH_MODULE(Attention);

class GatedMlpImpl : public torch::nn::Module {
 public:
  explicit GatedMlpImpl(const DecoderConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor forward_step(const torch::Tensor& x);  // the single-token step: f32, no autograd

  Linear gate_proj{nullptr}, up_proj{nullptr}, gate_up_proj{nullptr}, down_proj{nullptr};

 private:
  bool fused_;
};
TORCH_MODULE(GatedMlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const DecoderConfig& config);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& mask, KvCache* cache, size_t layer);
  // The single-token step on x (B, 1, hidden), a contiguous f32 tensor updated in place.
  void forward_step(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, KvCache& cache, size_t layer);

  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  GatedMlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// HF `model`: embed_tokens, layers, norm. LaMed's model adds vision modules to it.
class DecoderModelImpl : public torch::nn::Module {
 public:
  explicit DecoderModelImpl(const DecoderConfig& config);
  // embeds (B, L, hidden) following the cache->length cached positions (none
  // without a cache). position_ids (B, L): default cache->length + 0..L-1.
  // attention_mask (B, T) of 1/0 over cached + new positions: default all ones.
  // Returns the final-normed hidden states (B, L, hidden); advances the cache.
  torch::Tensor forward(const torch::Tensor& embeds, KvCache* cache = nullptr, const torch::Tensor& position_ids = {},
                        const torch::Tensor& attention_mask = {});
  const DecoderConfig& config() const { return config_; }
  KvCache make_cache(int64_t batch, int64_t capacity, const torch::TensorOptions& options) const;

  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RmsNorm norm{nullptr};

 private:
  DecoderConfig config_;
  torch::Tensor inv_freq_;  // (head_dim / 2) fp32, not a checkpoint key
};
TORCH_MODULE(DecoderModel);

// Decoding one token (L == 1) with a KV cache, f32 activations on the CPU, no autograd,
// no autocast and no padding mask runs a fused step: RMSNorm, RoPE, attention over the
// cache (GQA reads the shared kv head, no repeat_kv copy), SiLU * up and the residual
// adds as plain loops on the rows, the projections as before. It performs the general
// path's float operations (libtorch's own sum, softmax and SiLU kernels where their
// rounding is not plain IEEE), except that the attention dot products sum in another
// order than libtorch's BLAS. On by default (M3D_DECODE_FUSED=0 in the environment: off);
// off runs the general path (tests, benchmarks).
void decoder_fused_step_set(bool enabled);
bool decoder_fused_step_enabled();

// Logits from final hidden states, with lm_head or, when tied, the embedding matrix.
torch::Tensor decoder_logits(const DecoderModelImpl& model, const Linear& lm_head, const torch::Tensor& hidden);

}  // namespace m3d::models
