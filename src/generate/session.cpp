#include "generate/session.h"

#include <filesystem>

#include "io/hf_config.h"
#include "m3d/error.h"

namespace m3d::generate {
namespace fs = std::filesystem;

Session session_open(const std::string& dir, c10::ScalarType dtype) {
  const std::string tokenizer_path = dir + "/tokenizer.json";
  if (!fs::exists(tokenizer_path)) {
    fail("{}: no tokenizer.json (m3d reads HF tokenizer.json; the slow tokenizer.model path is not supported yet)", dir);
  }
  Session session{models::model_load(dir, dtype), text::Tokenizer::from_file(tokenizer_path), {}};
  // Tokens that only the slow tokenizer files list (added_tokens.json), with the
  // specials of special_tokens_map.json; their ids must come out as recorded.
  if (fs::exists(dir + "/added_tokens.json")) {
    std::vector<std::string> specials;
    if (fs::exists(dir + "/special_tokens_map.json")) {
      specials = io::special_tokens_map_read(dir + "/special_tokens_map.json").additional_special_tokens;
    }
    std::vector<std::pair<int64_t, std::string>> by_id;
    for (const auto& [token, id] : io::added_tokens_read(dir + "/added_tokens.json")) by_id.emplace_back(id, token);
    std::sort(by_id.begin(), by_id.end());
    for (const auto& [id, token] : by_id) {
      if (session.tokenizer.token_to_id(token) >= 0) continue;
      if (std::find(specials.begin(), specials.end(), token) != specials.end()) {
        session.tokenizer.add_special_tokens({token});
      } else {
        session.tokenizer.add_tokens({token});
      }
      if (session.tokenizer.token_to_id(token) != id) {
        fail("{}/added_tokens.json: '{}' should have id {} but gets {}", dir, token, id, session.tokenizer.token_to_id(token));
      }
    }
  }
  const auto& raw = session.model.config.raw;
  const std::string generation_path = dir + "/generation_config.json";
  if (fs::exists(generation_path)) {
    const io::GenerationConfig g = io::generation_config_read(generation_path);
    session.defaults.eos_token_id = g.eos_token_id;
    if (g.max_new_tokens) session.defaults.max_new_tokens = *g.max_new_tokens;
  }
  if (session.defaults.eos_token_id.empty() && raw.contains("eos_token_id") && raw["eos_token_id"].is_number_integer()) {
    session.defaults.eos_token_id = {raw["eos_token_id"].get<int64_t>()};
  }
  return session;
}

std::string session_answer(Session& session, const at::Tensor& image, const std::string& question,
                           const GenerationOptions& options, const std::function<void(const std::string&)>& on_text) {
  torch::NoGradGuard no_grad;
  auto& lm = *session.model.lm;
  std::string prompt = question;
  if (image.defined()) {
    if (lm.lamed() == nullptr) fail("{}: this model takes no image", session.model.architecture);
    std::string placeholders;
    for (int64_t i = 0; i < lm.lamed()->lamed_config().proj_out_num; ++i) placeholders += "<im_patch>";
    prompt = placeholders + question;
  }
  const std::vector<int64_t> ids = session.tokenizer.encode(prompt);
  const auto input_ids = torch::tensor(ids, torch::kLong).unsqueeze(0);  // (1, L)
  const auto embeds = lm.embed(input_ids, image);
  std::vector<int64_t> answer;
  std::string shown;
  auto stream = [&](int64_t, int64_t token) {
    answer.push_back(token);
    if (on_text) {
      const std::string text = session.tokenizer.decode(answer, true);
      // Emit only complete growth; a partial UTF-8 sequence decodes to U+FFFD until finished.
      if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
        on_text(text.substr(shown.size()));
        shown = text;
      }
    }
    return true;
  };
  generate(lm, embeds, options, {}, {}, stream);
  return session.tokenizer.decode(answer, true);
}

}  // namespace m3d::generate
