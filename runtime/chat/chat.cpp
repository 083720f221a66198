// Chat prompts: template choice, rendering, markup-only special tokens.
#include "runtime/chat/chat.h"

#include "runtime/chat/builtin_templates.h"
#include "runtime/chat/jinja.h"
#include "runtime/model/gguf.h"

namespace kestrel::chat {

Expected<TemplateChoice> choose_template(const Model& model, const char* template_arg) {
  const std::string_view arg = template_arg ? template_arg : "";
  if (!arg.empty()) {
    const std::string_view builtin = builtin_template(arg);
    if (!builtin.empty()) return TemplateChoice{std::string(builtin), "built-in '" + std::string(arg) + "'"};
    if (arg.find("{{") != std::string_view::npos || arg.find("{%") != std::string_view::npos)
      return TemplateChoice{std::string(arg), "the given template"};
    std::string names;
    for (std::string_view n : builtin_names()) names += (names.empty() ? "" : ", ") + std::string(n);
    return Status::invalid_argument("unknown chat template '%.*s' (built-in: %s; or give a Jinja template)",
                                    static_cast<int>(arg.size()), arg.data(), names.c_str());
  }
  const gguf::File& f = model.file();
  if (f.has("tokenizer.chat_template")) {
    Expected<std::string_view> src = f.get_string("tokenizer.chat_template");
    if (!src.ok()) return Status::bad_file("tokenizer.chat_template: %s", src.status().message().c_str());
    return TemplateChoice{std::string(*src), "the GGUF's tokenizer.chat_template"};
  }
  std::string arch;
  if (f.has("general.architecture")) {
    Expected<std::string_view> a = f.get_string("general.architecture");
    if (a.ok()) arch.assign(*a);
  }
  const Tokenizer& tok = model.tokenizer();
  std::vector<int32_t> ids;
  auto has_token = [&](std::string_view text) {
    ids.clear();
    // A control token's text parses to exactly that one token.
    return tok.encode(text, false, true, ids).ok() && ids.size() == 1 && tok.token_text(ids[0]) == text;
  };
  const std::string_view name = builtin_for_model(arch, has_token);
  return TemplateChoice{std::string(builtin_template(name)),
                        "built-in '" + std::string(name) + "' (the GGUF has no tokenizer.chat_template; architecture '" +
                            arch + "')"};
}

Expected<jinja::TStr> render(const Model& model, std::string_view source, const std::vector<Message>& messages,
                             bool add_generation_prompt) {
  KESTREL_TRY_ASSIGN(auto tmpl, jinja::Template::parse(source));
  jinja::Array msgs;
  msgs.reserve(messages.size());
  for (const Message& m : messages) {
    msgs.push_back(jinja::Value::object(
        {{"role", jinja::Value::content(m.role)}, {"content", jinja::Value::content(m.content)}}));
  }
  const Tokenizer& tok = model.tokenizer();
  auto token_text = [&](int32_t id) { return jinja::Value::text(id >= 0 ? std::string(tok.token_text(id)) : ""); };
  jinja::Object vars = {
      {"messages", jinja::Value::array(std::move(msgs))},
      {"add_generation_prompt", jinja::Value::boolean(add_generation_prompt)},
      {"bos_token", token_text(tok.bos())},
      {"eos_token", token_text(tok.eos())},
  };
  return tmpl->render(vars);
}

Status tokenize(const Tokenizer& tok, const jinja::TStr& prompt, std::vector<int32_t>& out) {
  std::vector<uint8_t> parse_at(prompt.text.size(), 1);
  for (size_t i = 0; i < prompt.taint.size(); ++i) parse_at[i] = prompt.taint[i] ? 0 : 1;
  const size_t first = out.size();
  KESTREL_TRY(tok.encode_marked(prompt.text, parse_at, false, out));
  if (tok.add_bos() && tok.bos() >= 0 && (out.size() == first || out[first] != tok.bos()))
    out.insert(out.begin() + static_cast<ptrdiff_t>(first), tok.bos());
  return {};
}

}  // namespace kestrel::chat
