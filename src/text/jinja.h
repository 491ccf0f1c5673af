// Jinja2 templates as Hugging Face chat templates use them, rendered the way
// transformers' _compile_jinja_template configures jinja2 3.1: an immutable sandbox,
// trim_blocks and lstrip_blocks, the loopcontrols extension, the {% generation %} tag,
// tojson as json.dumps (ensure_ascii=False), raise_exception and strftime_now. Values
// follow Python: str() when printed, dicts keep their order, jinja2's default Undefined.
// Left out: template loading and inheritance (extends, include, import, block),
// autoescaping, recursive loops and loop.changed, the globals lipsum / cycler / joiner,
// a few filters (groupby, truncate, wordcount, wordwrap, urlize, urlencode, xmlattr,
// striptags, filesizeformat, pprint, random, forceescape: they parse and fail when run),
// a separate tuple type (tuples are lists), integers beyond 64 bits.
#pragma once

#include <ctime>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace m3d::text {

namespace jinja {
struct Program;
}

struct JinjaRenderOptions {
  std::optional<std::tm> now;  // the time strftime_now formats; unset: the current local time
};

// A template parsed once and rendered many times (also concurrently); copies share
// the parsed form.
class JinjaTemplate {
 public:
  // Throws m3d::Error "NAME:LINE:COLUMN: ..." naming what was expected.
  static JinjaTemplate parse(const std::string& source, const std::string& name = "template");
  // The context's keys are the template's variables; an ordered_json keeps the key
  // order that tojson and items() show. Throws m3d::Error "NAME:LINE:COLUMN: ..." on
  // runtime errors (undefined attribute chains, type errors, raise_exception's message).
  std::string render(const nlohmann::ordered_json& context, const JinjaRenderOptions& options = {}) const;
  std::string render(const nlohmann::json& context, const JinjaRenderOptions& options = {}) const;
  const std::string& name() const;

 private:
  std::shared_ptr<const jinja::Program> program_;
};

}  // namespace m3d::text
