// transformers' apply_chat_template(tokenize=False): a Jinja chat template rendered
// with messages, tools / documents (None unless given), add_generation_prompt, the
// tokenizer's special tokens and extra keyword arguments (render_jinja_template in
// transformers/utils/chat_template_utils.py), and continue_final_message's cut.
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "text/jinja.h"

namespace m3d::text {

struct ChatTemplateInputs {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // [{"role": ..., "content": ...}, ...]
  bool add_generation_prompt = true;
  // Leave the final message open for the model to continue (no end-of-turn after it);
  // excludes add_generation_prompt, as in transformers.
  bool continue_final_message = false;
  std::string bos_token, eos_token;  // "" when the tokenizer has none: the variable stays undefined
  // Further template variables, as apply_chat_template's **kwargs: tools, documents,
  // date_string, enable_thinking, other special tokens. They override the above.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  std::optional<std::tm> now;  // what strftime_now formats; unset: the current local time
};

// Throws m3d::Error naming the template on syntax / runtime errors and raise_exception.
std::string apply_chat_template(const JinjaTemplate& tmpl, const ChatTemplateInputs& inputs);

// [{"role": r, "content": c}, ...] from (role, content) pairs.
nlohmann::ordered_json chat_messages(const std::vector<std::pair<std::string, std::string>>& turns);

}  // namespace m3d::text
