// kestrel's Jinja interpreter for chat templates: parse once, render with a
// set of variables. It covers what model chat templates use (see
// jinja_parser.h and jinja_builtins.cpp for the list) and renders the way
// Hugging Face's transformers does (jinja2 with trim_blocks, lstrip_blocks,
// raise_exception, HF's tojson). Anything outside that is an error naming the
// construct, never a silent difference.
//
//   KESTREL_TRY_ASSIGN(auto tmpl, jinja::Template::parse(source));
//   jinja::Object vars = {{"messages", msgs}, {"add_generation_prompt", jinja::Value::boolean(true)}};
//   KESTREL_TRY_ASSIGN(jinja::TStr text, tmpl->render(vars));
#pragma once

#include <memory>
#include <string_view>

#include "runtime/chat/jinja_ast.h"
#include "runtime/chat/jinja_value.h"

namespace kestrel::jinja {

class Template {
 public:
  // Errors: invalid_argument (syntax) or unsupported (a construct kestrel does
  // not implement), with the line.
  static Expected<std::unique_ptr<Template>> parse(std::string_view source);

  // Renders with the given top-level variables. Errors: invalid_argument for
  // a template error (raise_exception, an undefined attribute, a type error),
  // unsupported for an unimplemented filter / test / method, too_long when the
  // output passes max_output_bytes or the work passes max_steps.
  Expected<TStr> render(const Object& vars) const;

  size_t max_output_bytes = size_t{64} << 20;  // default 64 MiB
  // Statements, expressions and loop iterations evaluated (default 5M, about
  // a second of work; a real conversation of a thousand turns needs well under 1M).
  uint64_t max_steps = 5'000'000;

 private:
  Body body_;
};

}  // namespace kestrel::jinja
