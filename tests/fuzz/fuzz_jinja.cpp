// libFuzzer target: the Jinja engine (chat templates): parse the input as a template,
// then render it over a small chat context.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "m3d/error.h"
#include "text/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json messages = m3d::text::chat_messages({{"system", "S"}, {"user", "Hi {{ x }}"}, {"assistant", "Yo"}});
  try {
    const auto tmpl = m3d::text::JinjaTemplate::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    m3d::text::ChatTemplateInputs inputs;
    inputs.messages = messages;
    inputs.bos_token = "<s>";
    m3d::text::apply_chat_template(tmpl, inputs);
  } catch (const m3d::Error&) {}
  return 0;
}
