// BERT-family text encoders with Hugging Face's module names (transformers 4.41
// modeling_bert.py / modeling_roberta.py / modeling_distilbert.py BertModel /
// RobertaModel / DistilBertModel): M3D-CLIP's text tower (bert-base-uncased),
// DCFormer_SigLIP's (ClinicalBERT, a DistilBERT) and the encoders BERTScore runs
// (RoBERTa, BERT, MiniLM). Post-norm layers, absolute positions; RoBERTa counts
// positions from padding_idx + 1 over the non-pad tokens; DistilBERT is the same
// layer math without token types or pooler, under other key names.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <string>
#include <utility>
#include <vector>

#include "io/checkpoint.h"
#include "models/layers.h"

namespace m3d::models {

struct BertConfig {
  std::string model_type = "bert";  // "bert" | "roberta" | "xlm-roberta" | "distilbert"
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";  // "gelu" (erf) | "gelu_new" (tanh) | "relu"
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  double layer_norm_eps = 1e-12;
  // Dropout in training mode (HF defaults 0.1), after the embeddings, on the attention
  // probabilities, and on each sub-layer's output before its residual.
  double hidden_dropout_prob = 0.1, attention_probs_dropout_prob = 0.1;

  bool roberta_positions() const { return model_type == "roberta" || model_type == "xlm-roberta"; }
  bool distilbert() const { return model_type == "distilbert"; }
  // From config.json contents (DistilBertConfig's keys dim, n_layers, n_heads,
  // hidden_dim, activation, dropout, attention_dropout for model_type distilbert);
  // `where` names the file in errors.
  static BertConfig from_json(const nlohmann::json& config, const std::string& where);
  nlohmann::json to_json() const;
};

class BertEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit BertEmbeddingsImpl(const BertConfig& config);
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids);

  Embedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};  // no token types in DistilBERT
  LayerNorm layer_norm{nullptr};

 private:
  BertConfig config_;
};
TORCH_MODULE(BertEmbeddings);

class BertLayerImpl : public torch::nn::Module {
 public:
  // BERT keys attention.self.{query,key,value}, attention.output.{dense,LayerNorm},
  // intermediate.dense, output.{dense,LayerNorm}; DistilBERT's TransformerBlock:
  // attention.{q_lin,k_lin,v_lin,out_lin}, sa_layer_norm, ffn.{lin1,lin2}, output_layer_norm.
  explicit BertLayerImpl(const BertConfig& config);
  // additive_mask (B, 1, 1, L): 0 where attended, a large negative number elsewhere.
  // first_only: token 0 is the only query, and only its output (B, 1, H) is computed.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& additive_mask, bool first_only = false);

  Linear query{nullptr}, key{nullptr}, value{nullptr}, attention_dense{nullptr}, intermediate{nullptr}, output_dense{nullptr};
  LayerNorm attention_norm{nullptr}, output_norm{nullptr};

 private:
  BertConfig config_;
};
TORCH_MODULE(BertLayer);

struct BertOutput {
  torch::Tensor last_hidden_state;  // (B, L, H)
  std::vector<torch::Tensor> hidden_states;  // embeddings output, then each layer's (when asked)
  torch::Tensor pooler_output;  // (B, H), tanh(dense(token 0)); undefined without a pooler
};

class BertModelImpl : public torch::nn::Module {
 public:
  BertModelImpl(const BertConfig& config, bool with_pooler);
  // input_ids (B, L) int64; attention_mask (B, L) 1/0 (undefined: all ones);
  // token_type_ids (B, L) (undefined: zeros). `num_layers` < 0: all layers; else
  // only the first num_layers run (bert_score's truncation).
  BertOutput forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {}, const torch::Tensor& token_type_ids = {},
                     bool output_hidden_states = false, int64_t num_layers = -1);
  // The last layer's token 0, (B, H) = forward(...).last_hidden_state[:, 0], computing in the
  // last layer only what that token needs (M3D-CLIP's text feature).
  torch::Tensor forward_first(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {});
  const BertConfig& config() const { return config_; }
  bool has_pooler() const { return !pooler.is_empty(); }

  BertEmbeddings embeddings{nullptr};
  torch::nn::ModuleList layers{nullptr};
  Linear pooler{nullptr};

 private:
  // Checks the inputs; the embeddings' output and the additive attention mask (undefined: none).
  std::pair<torch::Tensor, torch::Tensor> embed(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, const torch::Tensor& token_type_ids);
  BertConfig config_;
};
TORCH_MODULE(BertModel);

// The key prefix of a BertModel inside a checkpoint: "" (BertModel.save_pretrained),
// "bert." / "roberta." / "distilbert." (a *ForMaskedLM / *ForPreTraining checkpoint), or one given.
std::string bert_checkpoint_prefix(const io::Checkpoint& checkpoint);

// A BERT-family encoder from a checkpoint directory (config.json + weights), with the
// pooler when the checkpoint has one; keys outside the encoder (cls.*, lm_head.*) are ignored.
BertModel bert_load(const std::string& dir, c10::ScalarType dtype = torch::kFloat, c10::Device device = torch::kCPU);

}  // namespace m3d::models
