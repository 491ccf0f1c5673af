// See chat_template.h.
#include "text/chat_template.h"

#include "m3d/error.h"
#include "text/utf8.h"

namespace m3d::text {

namespace {

// render_jinja_template's marker for continue_final_message.
constexpr std::string_view kContinueTag = "CONTINUE_FINAL_MESSAGE_TAG ";

std::string py_strip(const std::string& s) { return utf8::python_rstrip(utf8::python_lstrip(s)); }

// Appends the marker to the final message's text; returns that text as it was.
std::string tag_final_message(nlohmann::ordered_json& messages, const std::string& name) {
  if (!messages.is_array() || messages.empty()) fail("{}: continue_final_message is set but the conversation is empty", name);
  auto& last = messages.back();
  if (!last.is_object() || !last.contains("content") || last["content"].is_null())
    fail("{}: continue_final_message is set but the final message has no \"content\" to continue", name);
  auto& content = last["content"];
  if (content.is_array()) {
    for (auto it = content.rbegin(); it != content.rend(); ++it) {
      if (it->is_object() && it->contains("text") && (*it)["text"].is_string()) {
        const std::string text = (*it)["text"].get<std::string>();
        (*it)["text"] = text + std::string(kContinueTag);
        return text;
      }
    }
    fail("{}: continue_final_message is set but we could not find any text to continue in the final message", name);
  }
  if (!content.is_string()) fail("{}: continue_final_message needs the final message's content to be a string or a list of blocks", name);
  const std::string text = content.get<std::string>();
  content = text + std::string(kContinueTag);
  return text;
}

}  // namespace

std::string apply_chat_template(const JinjaTemplate& tmpl, const ChatTemplateInputs& inputs) {
  if (inputs.continue_final_message && inputs.add_generation_prompt)
    fail("{}: continue_final_message and add_generation_prompt are not compatible; set add_generation_prompt = false to continue the final message",
         tmpl.name());
  if (!inputs.messages.is_array()) fail("{}: messages must be a JSON array of message objects", tmpl.name());
  for (const auto& m : inputs.messages)
    if (!m.is_object()) fail("{}: chat messages should be dicts, but got {}", tmpl.name(), m.dump());
  if (!inputs.extra.is_object()) fail("{}: extra template variables must be a JSON object", tmpl.name());

  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  context["messages"] = inputs.messages;
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = inputs.add_generation_prompt;
  if (!inputs.bos_token.empty()) context["bos_token"] = inputs.bos_token;
  if (!inputs.eos_token.empty()) context["eos_token"] = inputs.eos_token;
  for (const auto& [key, value] : inputs.extra.items()) context[key] = value;
  std::string final_message;
  if (inputs.continue_final_message) final_message = tag_final_message(context["messages"], tmpl.name());

  JinjaRenderOptions options;
  options.now = inputs.now;
  std::string rendered = tmpl.render(context, options);
  if (!inputs.continue_final_message) return rendered;

  const std::string tag = py_strip(std::string(kContinueTag));
  if (rendered.find(py_strip(final_message)) == std::string::npos || rendered.find(tag) == std::string::npos)
    fail(
        "{}: continue_final_message is set but the final message does not appear in the chat after applying the chat template; "
        "the template may delete portions of the final message",
        tmpl.name());
  const size_t at = rendered.rfind(tag);
  if (rendered.compare(at, kContinueTag.size(), kContinueTag) == 0) return rendered.substr(0, at);  // the template kept the spacing
  return utf8::python_rstrip(rendered.substr(0, at));
}

nlohmann::ordered_json chat_messages(const std::vector<std::pair<std::string, std::string>>& turns) {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const auto& [role, content] : turns) messages.push_back({{"role", role}, {"content", content}});
  return messages;
}

}  // namespace m3d::text
