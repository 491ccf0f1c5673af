// BERT / RoBERTa / DistilBERT encoders as transformers 4.41 computes them (dropout in
// training mode only, at HF's places): embeddings = LayerNorm(word + position + token
// type); each layer = LayerNorm(x + attn(x)), then LayerNorm(h + W2 act(W1 h)); masked
// softmax attention with the mask added as the dtype's lowest value (DistilBERT fills
// it in instead: the same probabilities).
// Letters: B batch, L tokens, H hidden, N heads, d head dim.
#include "models/bert.h"

#include <nlohmann/json.hpp>
#include <torch/nn/functional/activation.h>
#include <torch/types.h>

#include <cmath>
#include <limits>

#include "io/hf_config.h"
#include "io/json_util.h"
#include "io/state_dict.h"
#include "m3d/error.h"

namespace m3d::models {
namespace {

using json = nlohmann::json;

// An attribute-only module, so that checkpoint keys nest as in PyTorch
// (attention.self.query.weight).
std::shared_ptr<torch::nn::Module> group(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

torch::Tensor activation(const torch::Tensor& x, const std::string& name) {
  if (name == "gelu") return torch::gelu(x);
  if (name == "relu") return torch::relu(x);
  // gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  return 0.5 * x * (1.0 + torch::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * torch::pow(x, 3.0))));
}

}  // namespace

namespace {

// DistilBertConfig (transformers 4.41 configuration_distilbert.py) in BertConfig's terms.
BertConfig distilbert_config_from_json(const json& c, const std::string& where) {
  BertConfig config;
  config.model_type = "distilbert";
  config.vocab_size = c.value("vocab_size", 30522);
  config.hidden_size = c.value("dim", 768);
  config.num_hidden_layers = c.value("n_layers", 6);
  config.num_attention_heads = c.value("n_heads", 12);
  config.intermediate_size = c.value("hidden_dim", 3072);
  config.hidden_act = c.value("activation", std::string("gelu"));
  config.max_position_embeddings = c.value("max_position_embeddings", 512);
  config.type_vocab_size = 1;  // none; kept positive for the range checks
  config.pad_token_id = c.contains("pad_token_id") && c["pad_token_id"].is_number_integer() ? c["pad_token_id"].get<int64_t>() : 0;
  config.layer_norm_eps = 1e-12;  // fixed in modeling_distilbert.py
  config.hidden_dropout_prob = c.value("dropout", 0.1);
  config.attention_probs_dropout_prob = c.value("attention_dropout", 0.1);
  if (c.value("sinusoidal_pos_embds", false)) fail("{}: sinusoidal_pos_embds is not supported (ClinicalBERT learns its positions)", where);
  return config;
}

}  // namespace

BertConfig BertConfig::from_json(const json& c, const std::string& where) {
  BertConfig config;
  try {
    config.model_type = c.value("model_type", std::string("bert"));
    if (config.model_type == "distilbert") {
      config = distilbert_config_from_json(c, where);
    } else if (config.model_type != "bert" && config.model_type != "roberta" && config.model_type != "xlm-roberta") {
      fail("{}: model_type '{}' is not a BERT-family encoder (supported: bert, roberta, xlm-roberta, distilbert)", where, config.model_type);
    }
    // DistilBertConfig has none of the keys below but vocab_size / pad_token_id (read alike).
    config.vocab_size = c.value("vocab_size", config.vocab_size);
    config.hidden_size = c.value("hidden_size", config.hidden_size);
    config.num_hidden_layers = c.value("num_hidden_layers", config.num_hidden_layers);
    config.num_attention_heads = c.value("num_attention_heads", config.num_attention_heads);
    config.intermediate_size = c.value("intermediate_size", config.intermediate_size);
    config.hidden_act = c.value("hidden_act", config.hidden_act);
    config.max_position_embeddings = c.value("max_position_embeddings", config.max_position_embeddings);
    config.type_vocab_size = c.value("type_vocab_size", config.type_vocab_size);
    config.pad_token_id = c.contains("pad_token_id") && c["pad_token_id"].is_number_integer() ? c["pad_token_id"].get<int64_t>() : config.pad_token_id;
    config.layer_norm_eps = c.value("layer_norm_eps", config.layer_norm_eps);
    config.hidden_dropout_prob = c.value("hidden_dropout_prob", config.hidden_dropout_prob);
    config.attention_probs_dropout_prob = c.value("attention_probs_dropout_prob", config.attention_probs_dropout_prob);
    const std::string positions = c.value("position_embedding_type", std::string("absolute"));
    if (positions != "absolute") fail("{}: position_embedding_type '{}' is not supported (supported: absolute)", where, positions);
  } catch (const json::exception& e) { fail("{}: malformed BERT config: {}", where, e.what()); }
  if (config.hidden_act != "gelu" && config.hidden_act != "gelu_new" && config.hidden_act != "relu") {
    fail("{}: hidden_act '{}' is not supported (supported: gelu, gelu_new, relu)", where, config.hidden_act);
  }
  for (auto [name, value] : {std::pair<const char*, int64_t>{"vocab_size", config.vocab_size},
                             {"hidden_size", config.hidden_size},
                             {"num_hidden_layers", config.num_hidden_layers},
                             {"num_attention_heads", config.num_attention_heads},
                             {"intermediate_size", config.intermediate_size},
                             {"max_position_embeddings", config.max_position_embeddings},
                             {"type_vocab_size", config.type_vocab_size}}) {
    if (value <= 0 || value > (int64_t{1} << 24)) fail("{}: {} = {} is out of range", where, name, value);
  }
  for (double p : {config.hidden_dropout_prob, config.attention_probs_dropout_prob}) {
    if (!(p >= 0 && p < 1)) fail("{}: dropout probabilities must lie in [0, 1)", where);
  }
  if (config.hidden_size % config.num_attention_heads != 0) {
    fail("{}: hidden_size {} is not divisible by {} attention heads", where, config.hidden_size, config.num_attention_heads);
  }
  return config;
}

json BertConfig::to_json() const {
  if (distilbert()) {
    return {{"architectures", {"DistilBertModel"}},
            {"model_type", "distilbert"},
            {"vocab_size", vocab_size},
            {"dim", hidden_size},
            {"n_layers", num_hidden_layers},
            {"n_heads", num_attention_heads},
            {"hidden_dim", intermediate_size},
            {"activation", hidden_act},
            {"max_position_embeddings", max_position_embeddings},
            {"pad_token_id", pad_token_id},
            {"sinusoidal_pos_embds", false},
            {"dropout", hidden_dropout_prob},
            {"attention_dropout", attention_probs_dropout_prob}};
  }
  return {{"architectures", {model_type == "bert" ? "BertModel" : "RobertaModel"}},
          {"model_type", model_type},
          {"vocab_size", vocab_size},
          {"hidden_size", hidden_size},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", num_attention_heads},
          {"intermediate_size", intermediate_size},
          {"hidden_act", hidden_act},
          {"max_position_embeddings", max_position_embeddings},
          {"type_vocab_size", type_vocab_size},
          {"pad_token_id", pad_token_id},
          {"layer_norm_eps", layer_norm_eps},
          {"position_embedding_type", "absolute"},
          {"hidden_dropout_prob", hidden_dropout_prob},
          {"attention_probs_dropout_prob", attention_probs_dropout_prob}};
}

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& c) : config_(c) {
  word_embeddings = register_module("word_embeddings", Embedding(c.vocab_size, c.hidden_size));
  position_embeddings = register_module("position_embeddings", Embedding(c.max_position_embeddings, c.hidden_size));
  if (!c.distilbert()) token_type_embeddings = register_module("token_type_embeddings", Embedding(c.type_vocab_size, c.hidden_size));
  layer_norm = register_module("LayerNorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
}

torch::Tensor BertEmbeddingsImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids) {
  const int64_t L = input_ids.size(1);
  torch::Tensor positions;
  if (config_.roberta_positions()) {
    // create_position_ids_from_input_ids: padding_idx + running count of non-pad tokens; pads get padding_idx.
    const auto mask = input_ids.ne(config_.pad_token_id).to(torch::kLong);
    positions = torch::cumsum(mask, 1) * mask + config_.pad_token_id;
  } else {
    positions = torch::arange(L, input_ids.options()).unsqueeze(0);
  }
  if (positions.max().item<int64_t>() >= config_.max_position_embeddings) {
    fail("bert: {} tokens exceed the {} position embeddings", L, config_.max_position_embeddings);
  }
  auto x = word_embeddings(input_ids) + position_embeddings(positions);
  if (!config_.distilbert()) x = x + token_type_embeddings(token_type_ids);
  return torch::dropout(layer_norm(x), config_.hidden_dropout_prob, is_training());
}

BertLayerImpl::BertLayerImpl(const BertConfig& c) : config_(c) {
  if (c.distilbert()) {
    auto attention = group(*this, "attention");
    query = attention->register_module("q_lin", Linear(c.hidden_size, c.hidden_size));
    key = attention->register_module("k_lin", Linear(c.hidden_size, c.hidden_size));
    value = attention->register_module("v_lin", Linear(c.hidden_size, c.hidden_size));
    attention_dense = attention->register_module("out_lin", Linear(c.hidden_size, c.hidden_size));
    attention_norm = register_module("sa_layer_norm", LayerNorm(c.hidden_size, c.layer_norm_eps));
    auto ffn = group(*this, "ffn");
    intermediate = ffn->register_module("lin1", Linear(c.hidden_size, c.intermediate_size));
    output_dense = ffn->register_module("lin2", Linear(c.intermediate_size, c.hidden_size));
    output_norm = register_module("output_layer_norm", LayerNorm(c.hidden_size, c.layer_norm_eps));
    return;
  }
  auto attention = group(*this, "attention");
  auto self = group(*attention, "self");
  query = self->register_module("query", Linear(c.hidden_size, c.hidden_size));
  key = self->register_module("key", Linear(c.hidden_size, c.hidden_size));
  value = self->register_module("value", Linear(c.hidden_size, c.hidden_size));
  auto attention_output = group(*attention, "output");
  attention_dense = attention_output->register_module("dense", Linear(c.hidden_size, c.hidden_size));
  attention_norm = attention_output->register_module("LayerNorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
  intermediate = group(*this, "intermediate")->register_module("dense", Linear(c.hidden_size, c.intermediate_size));
  auto output = group(*this, "output");
  output_dense = output->register_module("dense", Linear(c.intermediate_size, c.hidden_size));
  output_norm = output->register_module("LayerNorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& additive_mask, bool first_only) {
  const int64_t B = x.size(0), L = x.size(1), N = config_.num_attention_heads, d = config_.hidden_size / N;
  const auto xq = first_only ? x.narrow(1, 0, 1) : x;
  const int64_t Lq = xq.size(1);
  auto heads = [&](const torch::Tensor& t, int64_t len) { return t.view({B, len, N, d}).transpose(1, 2); };  // (B, N, len, d)
  auto q = heads(query(xq), Lq), k = heads(key(x), L), v = heads(value(x), L);
  auto scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d));  // (B, N, Lq, L)
  if (additive_mask.defined()) scores = scores + additive_mask;
  const auto probs = torch::dropout(scores.softmax(-1), config_.attention_probs_dropout_prob, is_training());
  auto context = torch::matmul(probs, v).transpose(1, 2).reshape({B, Lq, N * d});
  const double p = config_.hidden_dropout_prob;
  const double p_attention_out = config_.distilbert() ? 0.0 : p;  // DistilBERT drops nothing after out_lin
  auto h = attention_norm(torch::dropout(attention_dense(context), p_attention_out, is_training()) + xq);
  return output_norm(torch::dropout(output_dense(activation(intermediate(h), config_.hidden_act)), p, is_training()) + h);
}

BertModelImpl::BertModelImpl(const BertConfig& c, bool with_pooler) : config_(c) {
  embeddings = register_module("embeddings", BertEmbeddings(c));
  layers = group(*this, c.distilbert() ? "transformer" : "encoder")->register_module("layer", torch::nn::ModuleList());
  if (c.distilbert() && with_pooler) fail("bert: DistilBERT has no pooler");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(BertLayer(c));
  if (with_pooler) pooler = group(*this, "pooler")->register_module("dense", Linear(c.hidden_size, c.hidden_size));
}

std::pair<torch::Tensor, torch::Tensor> BertModelImpl::embed(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                                             const torch::Tensor& token_type_ids) {
  if (input_ids.dim() != 2) fail("bert: input_ids must be (batch, tokens), got {} dimensions", input_ids.dim());
  if (input_ids.numel() > 0 && (input_ids.min().item<int64_t>() < 0 || input_ids.max().item<int64_t>() >= config_.vocab_size)) {
    fail("bert: token ids must lie in [0, {})", config_.vocab_size);
  }
  const auto types = token_type_ids.defined() ? token_type_ids : torch::zeros_like(input_ids);
  auto x = embeddings->forward(input_ids, types);
  torch::Tensor additive;
  if (attention_mask.defined()) {
    if (attention_mask.sizes() != input_ids.sizes()) fail("bert: attention_mask must have the shape of input_ids");
    // get_extended_attention_mask: (1 - mask) * finfo(dtype).min, broadcast over heads and queries.
    double lowest = std::numeric_limits<float>::lowest();
    if (x.scalar_type() == torch::kHalf) lowest = -65504.0;
    if (x.scalar_type() == torch::kBFloat16) lowest = -3.3895313892515355e38;
    if (x.scalar_type() == torch::kDouble) lowest = std::numeric_limits<double>::lowest();
    additive = ((1.0 - attention_mask.to(x.scalar_type())) * lowest).view({input_ids.size(0), 1, 1, input_ids.size(1)});
  }
  return {x, additive};
}

BertOutput BertModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, const torch::Tensor& token_type_ids,
                                  bool output_hidden_states, int64_t num_layers) {
  auto [x, additive] = embed(input_ids, attention_mask, token_type_ids);
  BertOutput out;
  const int64_t run = num_layers < 0 ? config_.num_hidden_layers : std::min(num_layers, config_.num_hidden_layers);
  if (output_hidden_states) out.hidden_states.push_back(x);
  for (int64_t i = 0; i < run; ++i) {
    x = layers->at<BertLayerImpl>(static_cast<size_t>(i)).forward(x, additive);
    if (output_hidden_states) out.hidden_states.push_back(x);
  }
  out.last_hidden_state = x;
  if (has_pooler()) out.pooler_output = torch::tanh(pooler(x.select(1, 0)));
  return out;
}

torch::Tensor BertModelImpl::forward_first(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  auto [x, additive] = embed(input_ids, attention_mask, torch::Tensor());
  const size_t n = layers->size();
  if (n == 0) return x.select(1, 0);
  for (size_t i = 0; i + 1 < n; ++i) x = layers->at<BertLayerImpl>(i).forward(x, additive);
  return layers->at<BertLayerImpl>(n - 1).forward(x, additive, true).select(1, 0);  // (B, H)
}

std::string bert_checkpoint_prefix(const io::Checkpoint& ckpt) {
  for (const char* prefix : {"", "bert.", "roberta.", "distilbert.", "model.", "language_encoder."}) {
    if (ckpt.tensors.count(std::string(prefix) + "embeddings.word_embeddings.weight")) return prefix;
  }
  fail("{}: no BERT encoder weights (looked for embeddings.word_embeddings.weight, with or without a bert./roberta. prefix)", ckpt.path);
}

BertModel bert_load(const std::string& dir, c10::ScalarType dtype, c10::Device device) {
  const io::Checkpoint ckpt = io::checkpoint_open(dir);
  const std::string config_path = ckpt.directory + "/config.json";
  const BertConfig config = BertConfig::from_json(io::json_read_file(config_path), config_path);
  const std::string prefix = bert_checkpoint_prefix(ckpt);
  const bool with_pooler = ckpt.tensors.count(prefix + "pooler.dense.weight") > 0;
  BertModel model = [&] {
    DefaultDtypeGuard guard(dtype);
    return BertModel(config, with_pooler);
  }();
  model->eval();
  io::LoadOptions options;
  options.prefix = prefix;
  options.whole_checkpoint = false;
  options.ignore = {"embeddings.position_ids"};  // a buffer older checkpoints saved
  io::state_dict_load(*model, ckpt, options);
  model->to(device);
  return model;
}

}  // namespace m3d::models
