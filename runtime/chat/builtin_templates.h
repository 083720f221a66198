// Built-in chat templates (Jinja sources, rendered by the same interpreter as
// a GGUF's own template and checked against jinja2 by the same tests), for
// models whose GGUF carries no tokenizer.chat_template.
//
//   std::string_view src = builtin_template("gemma");      // "" when unknown
//   std::string_view name = builtin_for_model("llama", has_token);
#pragma once

#include <functional>
#include <string_view>
#include <vector>

namespace kestrel::chat {

// The names: chatml, gemma, llama3, llama2, phi3.
const std::vector<std::string_view>& builtin_names();
// The Jinja source of a built-in template; "" for an unknown name.
std::string_view builtin_template(std::string_view name);
// The built-in template for an architecture (general.architecture) and
// vocabulary (has_token: whether a token with that text exists): the family's
// own turn markers when the vocabulary has them, else llama2's [INST] format
// for llama and chatml for the rest.
std::string_view builtin_for_model(std::string_view arch, const std::function<bool(std::string_view)>& has_token);

}  // namespace kestrel::chat
