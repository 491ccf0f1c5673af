// Public API: open a checkpoint directory as it was released (config.json, weights
// in safetensors or PyTorch files, the tokenizer, generation_config.json) as a typed
// handle. One Model may serve several Sessions (include/m3d/session.h), each used
// by one thread at a time.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace m3d {

struct ModelOptions {
  std::string dtype = "f32";  // compute precision: f32 (reference), bf16 (f16: GPU only)
  std::string tokenizer = "auto";  // slow (tokenizer.model), fast (tokenizer.json), auto: slow when tokenizer.model exists
};

struct ModelInfo {
  std::string dir, architecture;  // e.g. LamedPhi3ForCausalLM, VLMQwenForCausalLM
  std::string family;  // lamed, med3dvlm or text (a decoder without a vision side)
  bool takes_images = false;
  bool segments = false;  // a [SEG] head (SegVol) answering with masks
  std::array<int64_t, 3> image_grid{0, 0, 0};  // (D, H, W) the vision side expects
  int64_t image_tokens = 0;  // prompt positions one image takes
  int64_t context_length = 0;  // max_position_embeddings
  bool chat_template = false;  // a Jinja chat template (tokenizer_config.json, GGUF metadata): Model::chat_prompt, Session::chat
};

// One turn of a conversation: (role, content), e.g. ("system", "You are ..."),
// ("user", "..."), ("assistant", "...").
using ChatTurn = std::pair<std::string, std::string>;

// An OpenAI-style messages file, [{"role": "user", "content": "..."}, ...]: its turns in
// order. Throws m3d::Error naming the file and the entry that is not such a message.
std::vector<ChatTurn> chat_turns_read(const std::string& path);

class Model {
 public:
  // Opens a generative model (LaMed, Med3DVLM or a text LM). Throws m3d::Error naming
  // the missing file, the unknown architecture (model_architectures lists the known
  // ones), a contrastive (CLIP) checkpoint with what opens it (`m3d embed`), or every
  // weight that does not fit.
  static Model open(const std::string& dir, const ModelOptions& options = {});
  const ModelInfo& info() const;
  // The model's chat template (tokenizer_config.json chat_template, or a GGUF file's
  // tokenizer.chat_template) rendered as transformers' apply_chat_template(tokenize=False,
  // add_generation_prompt=True) for (role, content) turns; throws when the model has none.
  std::string chat_prompt(const std::vector<ChatTurn>& turns) const;
  // The vocabulary entry of a token id as the tokenizer stores it (byte-level BPE:
  // "Ġword"); "" out of range.
  std::string token_text(int64_t id) const;

  struct Impl;  // the library's side (src/generate/api.h)
  const std::shared_ptr<Impl>& impl() const { return impl_; }

 private:
  std::shared_ptr<Impl> impl_;
};

// Every config.json architecture m3d opens: the generative ones Model::open takes
// (LamedPhi3ForCausalLM, ..., VLMQwenForCausalLM) and the contrastive ones `m3d embed`
// takes (M3DCLIP, DEC_CLIP).
std::vector<std::string> model_architectures();

}  // namespace m3d
