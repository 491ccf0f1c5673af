// The Jinja engine and apply_chat_template against jinja2 3.1 configured as transformers
// configures it (tools/reference/make_chat_template_fixtures.py):
//  - features.json: small templates written for the script, one language feature each,
//    rendered byte for byte as jinja2 renders them, or failing as it fails;
//  - real.json: the chat templates of SmolLM2-135M-Instruct (GGUF metadata), Qwen2.5 and
//    Llama-3 (tokenizer_config.json; scripts/fetch_vocab.sh) over conversations with
//    system prompts, tools, unicode, empty and brace-laden content, continue_final_message;
//  - syntax errors name line and column; every prefix of a real template fails cleanly.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "io/gguf.h"
#include "m3d/error.h"
#include "test_support.h"
#include "text/chat_template.h"
#include "text/jinja.h"

namespace m3d::text {
namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

ordered_json read_ordered(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return ordered_json::parse(in);  // ordered: dict order is visible in rendered output
}

std::tm fixture_time(const std::string& iso) {
  std::tm t{};
  std::istringstream(iso) >> std::get_time(&t, "%Y-%m-%dT%H:%M:%S");
  return t;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) { return e.what(); }
  return "(no error)";
}

TEST(Jinja, FeatureFixturesRenderAsJinja2) {
  const auto fixture = read_ordered(test::fixture("chat_templates/features.json"));
  JinjaRenderOptions options;
  options.now = fixture_time(fixture["now"].get<std::string>());
  size_t renders = 0, errors = 0;
  for (const auto& c : fixture["cases"]) {
    const std::string name = c["name"].get<std::string>(), source = c["template"].get<std::string>();
    ordered_json context = fixture["context"];
    if (c.contains("context"))
      for (const auto& [key, value] : c["context"].items()) context[key] = value;
    if (c.contains("expected")) {
      std::string got;
      EXPECT_NO_THROW(got = JinjaTemplate::parse(source, "t").render(context, options)) << name;
      EXPECT_EQ(got, c["expected"].get<std::string>()) << name << "\ntemplate: " << source;
      ++renders;
    } else {
      const std::string message = error_of([&] { JinjaTemplate::parse(source, "t").render(context, options); });
      EXPECT_NE(message.find(c["error"].get<std::string>()), std::string::npos)
          << name << "\nwant: " << c["error"].get<std::string>() << "\ngot:  " << message << "\njinja2: " << c["jinja2_error"].get<std::string>();
      EXPECT_EQ(message.find('\n'), std::string::npos) << name << ": " << message;
      ++errors;
    }
  }
  EXPECT_GE(renders, 140u);
  EXPECT_GE(errors, 30u);
}

// The real template behind a fixture entry, read from the downloaded model files.
std::string real_template(const ordered_json& entry) {
  const std::string root = std::string(M3D_SOURCE_DIR) + "/";
  std::string text;
  if (entry.contains("gguf")) {
    const std::string path = root + entry["gguf"].get<std::string>();
    EXPECT_TRUE(fs::exists(path)) << path << " missing: run scripts/fetch_vocab.sh (setup.sh does)";
    text = io::gguf_tokenizer(io::gguf_read(path)).chat_template;
  } else {
    const std::string path = root + entry["tokenizer_config"].get<std::string>();
    EXPECT_TRUE(fs::exists(path)) << path << " missing: run scripts/fetch_vocab.sh (setup.sh does)";
    text = read_ordered(path)["chat_template"].get<std::string>();
  }
  EXPECT_EQ(text.size(), entry["bytes"].get<size_t>()) << "the template changed upstream: rerun tools/reference/make_chat_template_fixtures.py";
  return text;
}

TEST(Jinja, RealChatTemplatesRenderAsTransformers) {
  const auto fixture = read_ordered(test::fixture("chat_templates/real.json"));
  std::map<std::string, JinjaTemplate> templates;
  for (const auto& [id, entry] : fixture["templates"].items()) templates.emplace(id, JinjaTemplate::parse(real_template(entry), id));
  ASSERT_GE(templates.size(), 3u);
  size_t n = 0;
  for (const auto& c : fixture["cases"]) {
    const std::string id = c["template"].get<std::string>(), name = id + "/" + c["name"].get<std::string>();
    ChatTemplateInputs inputs;
    inputs.messages = c["messages"];
    inputs.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    inputs.continue_final_message = c.value("continue_final_message", false);
    inputs.bos_token = c["bos_token"].get<std::string>();
    inputs.eos_token = c["eos_token"].get<std::string>();
    if (c.contains("extra")) inputs.extra = c["extra"];
    if (c.contains("expected")) {
      std::string got;
      EXPECT_NO_THROW(got = apply_chat_template(templates.at(id), inputs)) << name;
      EXPECT_EQ(got, c["expected"].get<std::string>()) << name;
    } else {
      const std::string message = error_of([&] { apply_chat_template(templates.at(id), inputs); });
      EXPECT_NE(message.find(c["error"].get<std::string>()), std::string::npos) << name << ": " << message;
    }
    ++n;
  }
  EXPECT_GE(n, 50u);
}

TEST(Jinja, SyntaxErrorsNameLineAndColumn) {
  const std::pair<const char*, const char*> cases[] = {
      {"{% if x %}\n  {{ y + }}\n{% endif %}", "chat:2:10: unexpected 'end of print statement'"},
      {"ok\n\n{% for x in xs %}\n{{ x }}",
       "chat:4:8: Unexpected end of template. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'."},
      {"héllo {{ 'ünïcode' ! }}", "chat:1:20: unexpected char '!'"},
      {"a\n  {% frob %}", "chat:2:6: Encountered unknown tag 'frob'."},
      {"{{ x|nope }}", "chat:1:6: No filter named 'nope'."},
      {"{% set x = [1, 2) %}", "chat:1:17: unexpected ')', expected ']'"},
      {"{{ 'unterminated }}", "chat:1:4: unexpected char ''' (a string that never ends)"},
      {"{# never closed", "chat:1:1: Missing end of comment tag"},
      {"{{ '\\xZZ' }}", "chat:1:4: truncated \\xXX escape"},
      {"{% for x in xs %}{% break %}{% endfor %}{% continue %}", "chat:1:44: 'continue' outside of a loop"},
  };
  for (const auto& [source, want] : cases) EXPECT_EQ(error_of([&] { JinjaTemplate::parse(source, "chat"); }), want) << source;
}

TEST(Jinja, RuntimeErrorsNameTheExpression) {
  const auto t = JinjaTemplate::parse("line one\n{% for m in messages %}\n  {{ m.content.upper }}{{ m.nope.deeper }}\n{% endfor %}", "chat");
  const ordered_json context = {{"messages", {{{"content", "x"}}}}};
  EXPECT_EQ(error_of([&] { t.render(context); }), "chat:3:33: 'dict object' has no attribute 'nope'");  // at the `.deeper` that fails
  const auto raise = JinjaTemplate::parse("{{ raise_exception('Only user and assistant roles are supported!') }}", "chat");
  EXPECT_EQ(error_of([&] { raise.render(ordered_json::object()); }), "chat:1:4: Only user and assistant roles are supported!");
}

// Every prefix of a real template either renders or throws m3d::Error; so do
// templates with a random slice removed or repeated.
TEST(Jinja, TruncatedAndMangledTemplatesFailCleanly) {
  const auto fixture = read_ordered(test::fixture("chat_templates/real.json"));
  ChatTemplateInputs inputs;
  inputs.messages = chat_messages({{"system", "S"}, {"user", "Hi {{ x }}"}, {"assistant", "Yo"}});
  inputs.extra = {{"tools", ordered_json::array({{{"type", "function"}, {"function", {{"name", "f"}}}}})}};
  std::mt19937 rng(7);
  size_t rendered = 0, failed = 0;
  auto attempt = [&](const std::string& source) {
    try {
      apply_chat_template(JinjaTemplate::parse(source, "cut"), inputs);
      ++rendered;
    } catch (const Error&) { ++failed; }
  };
  for (const auto& [id, entry] : fixture["templates"].items()) {
    const std::string text = real_template(entry);
    const size_t step = id == "smollm2" ? 1 : 3;  // every prefix of SmolLM2's template
    for (size_t n = 0; n <= text.size(); n += step) attempt(text.substr(0, n));
    for (int k = 0; k < 200; ++k) {
      size_t a = rng() % (text.size() + 1), b = rng() % (text.size() + 1);
      if (a > b) std::swap(a, b);
      attempt(text.substr(0, a) + text.substr(b));
      attempt(text.substr(0, b) + text.substr(a));
    }
  }
  EXPECT_GT(rendered, 0u);
  EXPECT_GT(failed, 500u);
}

TEST(Jinja, LimitsFailInsteadOfExhaustingTheStack) {
  const ordered_json none = ordered_json::object();
  EXPECT_NE(error_of([&] { JinjaTemplate::parse("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"); }).find("nested too deeply"),
            std::string::npos);
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  EXPECT_NE(error_of([&] { JinjaTemplate::parse(chain + " }}"); }).find("nested too deeply"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 500; ++i) ifs += "{% if true %}";
  EXPECT_NE(error_of([&] { JinjaTemplate::parse(ifs); }).find("nested too deeply"), std::string::npos);
  const auto recursive = JinjaTemplate::parse("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(error_of([&] { recursive.render(none); }).find("maximum recursion depth exceeded in macro 'f'"), std::string::npos);
  EXPECT_NE(error_of([&] { JinjaTemplate::parse("{{ 'ab' * 1000000000 }}").render(none); }).find("too large"), std::string::npos);
  EXPECT_NE(error_of([&] { JinjaTemplate::parse("{{ 'x'|center(1000000000) }}").render(none); }).find("too large"), std::string::npos);
  EXPECT_NE(error_of([&] { JinjaTemplate::parse("{{ '%99999999999d' % 1 }}").render(none); }).find("too big"), std::string::npos);
  const auto big = JinjaTemplate::parse("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  EXPECT_NE(error_of([&] { big.render(none); }).find("budget"), std::string::npos);
}

TEST(Jinja, ChatTemplateInputs) {
  const auto t = JinjaTemplate::parse(
      "{{ bos_token is defined }}|{% for m in messages %}{{ m|tojson }}{% endfor %}|{{ tools }}|{{ documents }}|{{ add_generation_prompt }}|{{ "
      "strftime_now('%d %B %Y') }}|{{ date_string }}");
  ChatTemplateInputs inputs;
  inputs.messages = chat_messages({{"user", "Hi"}});
  inputs.eos_token = "</s>";
  inputs.extra = {{"date_string", "1 May 2025"}};
  std::tm now{};
  now.tm_year = 124, now.tm_mon = 1, now.tm_mday = 29;
  inputs.now = now;
  EXPECT_EQ(apply_chat_template(t, inputs), "False|{\"role\": \"user\", \"content\": \"Hi\"}|None|None|True|29 February 2024|1 May 2025");
  inputs.continue_final_message = true;
  EXPECT_NE(error_of([&] { apply_chat_template(t, inputs); }).find("not compatible"), std::string::npos);
  // A plain nlohmann::json context renders as its ordered form.
  const auto p = JinjaTemplate::parse("{{ x.b }}{{ x.a }}");
  EXPECT_EQ(p.render(nlohmann::json{{"x", {{"a", 1}, {"b", 2}}}}), "21");
  EXPECT_NE(error_of([&] { p.render(nlohmann::json::array()); }).find("must be a JSON object"), std::string::npos);
}

TEST(Jinja, OneParsedTemplateRendersConcurrently) {
  const auto t = JinjaTemplate::parse("{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}");
  std::vector<std::string> results(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      ordered_json context = {{"xs", ordered_json::array()}};
      for (size_t k = 0; k <= i * 100; ++k) context["xs"].push_back(k);
      results[i] = t.render(context);
    });
  }
  for (auto& th : threads) th.join();
  for (size_t i = 0; i < results.size(); ++i) EXPECT_EQ(results[i], std::to_string((i * 100) * (i * 100 + 1) / 2));
}

}  // namespace
}  // namespace m3d::text
