// Chat prompts: picks a model's chat template (the GGUF's
// tokenizer.chat_template, else the architecture's built-in one), renders a
// conversation with it, and tokenizes the result so that only the template's
// own markup can become control tokens: message content is always text.
//
//   KESTREL_TRY_ASSIGN(chat::TemplateChoice t, chat::choose_template(model, nullptr));
//   // t.origin: "the GGUF's tokenizer.chat_template" or "built-in 'gemma' (...)"
//   KESTREL_TRY_ASSIGN(jinja::TStr text, chat::render(model, t.source, msgs, true));
//   std::vector<int32_t> ids;
//   KESTREL_TRY(chat::tokenize(model.tokenizer(), text, ids));
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "runtime/chat/jinja_value.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"

namespace kestrel::chat {

struct Message {
  std::string role, content;
};

struct TemplateChoice {
  std::string source;  // Jinja source
  std::string origin;  // where it came from, for the user: "the GGUF's tokenizer.chat_template", ...
};

// template_arg: nullptr or "": the model's own template, else the built-in one
// for its architecture; a built-in name (chatml, gemma, llama3, llama2, phi3);
// or a Jinja source (text containing "{{" or "{%"). Error: invalid_argument
// for any other name.
Expected<TemplateChoice> choose_template(const Model& model, const char* template_arg);

// Renders the conversation (messages, add_generation_prompt, bos_token and
// eos_token set as Hugging Face sets them). Message strings are tainted
// (jinja_value.h). Errors: the template's (jinja.h).
Expected<jinja::TStr> render(const Model& model, std::string_view source, const std::vector<Message>& messages,
                             bool add_generation_prompt);

// Token ids of a rendered prompt: special tokens parsed in the template's
// markup only; BOS put first when the vocabulary adds one and the template
// did not already.
Status tokenize(const Tokenizer& tok, const jinja::TStr& prompt, std::vector<int32_t>& out);

}  // namespace kestrel::chat
