// kestrel template: the prompt a model's chat template renders for a JSON list
// of {role, content} messages (stdout, byte for byte, no newline added), or its
// token ids with --ids (markup parsed as special tokens, content not). Which
// template was used is said on stderr.
//
//   echo '[{"role":"user","content":"Hi"}]' | kestrel template -m model.gguf --messages -
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.h"

namespace kcli {
namespace {

struct TemplateOptions {
  std::string model, messages, chat_template;
  bool ids = false;
  bool no_generation_prompt = false;
  bool print_source = false;
};

bool parse_messages(const std::string& text, std::vector<std::string>& storage, std::string& error) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    error = std::string("--messages: not JSON: ") + e.what();
    return false;
  }
  if (!j.is_array()) {
    error = "--messages: expected a JSON list of {\"role\", \"content\"} objects";
    return false;
  }
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
        !m["content"].is_string()) {
      error = "--messages: item " + std::to_string(i) + " is not {\"role\": string, \"content\": string}";
      return false;
    }
    storage.push_back(m["role"].get<std::string>());
    storage.push_back(m["content"].get<std::string>());
  }
  return true;
}

int run_template(const TemplateOptions& o) {
  if (o.messages.empty() && !o.print_source) return usage_error("--messages FILE|- is required (or --print-source)");
  std::string tmpl, error;
  if (!chat_template_arg(o.chat_template, tmpl, error)) return usage_error(error);
  std::vector<std::string> storage;
  if (!o.print_source) {
    std::string text;
    if (!read_text_file(o.messages, text, error)) return usage_error(error);
    if (!parse_messages(text, storage, error)) return usage_error(error);
  }

  kestrel_model_params mp = kestrel_model_default_params();
  mp.vocab_only = 1;  // a template needs the metadata and the vocabulary only
  kestrel_model* model = nullptr;
  if (int rc = load_model(o.model, mp, &model); rc != kExitOk) return rc;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> guard(model, kestrel_model_free);

  const char* t = tmpl.empty() ? nullptr : tmpl.c_str();
  char origin[512];
  size_t source_len = 0;
  kestrel_status s = kestrel_chat_template_info(model, t, origin, sizeof origin, nullptr, 0, &source_len);
  if (s != KESTREL_OK) return report(s, "cannot choose a chat template", model);
  std::fprintf(stderr, "kestrel: chat template: %s\n", origin);
  if (o.print_source) {
    std::string src(source_len + 1, '\0');
    s = kestrel_chat_template_info(model, t, nullptr, 0, src.data(), src.size(), &source_len);
    if (s != KESTREL_OK) return report(s, "cannot read the chat template", model);
    std::fwrite(src.data(), 1, source_len, stdout);
    return std::fflush(stdout) == 0 ? kExitOk : kExitRuntime;
  }

  std::vector<kestrel_chat_message> msgs;
  for (size_t i = 0; i + 1 < storage.size(); i += 2) msgs.push_back({storage[i].c_str(), storage[i + 1].c_str()});
  const int add_gen = o.no_generation_prompt ? 0 : 1;
  if (o.ids) {
    int32_t n = 0;
    s = kestrel_chat_tokenize(model, t, msgs.data(), msgs.size(), add_gen, nullptr, 0, &n);
    if (s != KESTREL_OK && s != KESTREL_ERR_TOO_LONG) return report(s, "cannot apply the chat template", model);
    std::vector<kestrel_token> ids(static_cast<size_t>(n));
    s = kestrel_chat_tokenize(model, t, msgs.data(), msgs.size(), add_gen, ids.data(), n, &n);
    if (s != KESTREL_OK) return report(s, "cannot apply the chat template", model);
    std::string line = "[";
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? ", " : "") + std::to_string(ids[i]);
    line += "]\n";
    std::fputs(line.c_str(), stdout);
  } else {
    size_t n = 0;
    s = kestrel_chat_apply_template(model, t, msgs.data(), msgs.size(), add_gen, nullptr, 0, &n);
    if (s != KESTREL_OK && s != KESTREL_ERR_TOO_LONG) return report(s, "cannot apply the chat template", model);
    std::string text(n + 1, '\0');
    s = kestrel_chat_apply_template(model, t, msgs.data(), msgs.size(), add_gen, text.data(), text.size(), &n);
    if (s != KESTREL_OK) return report(s, "cannot apply the chat template", model);
    std::fwrite(text.data(), 1, n, stdout);
  }
  return std::fflush(stdout) == 0 ? kExitOk : kExitRuntime;
}

}  // namespace

Command add_template(CLI::App& app) {
  auto o = std::make_shared<TemplateOptions>();
  CLI::App* sub = app.add_subcommand("template", "print the prompt a chat template renders for a list of messages");
  sub->add_option("-m,--model", o->model, "GGUF file (its tokenizer.chat_template and vocabulary)")->required();
  sub->add_option("--messages", o->messages, "JSON list of {\"role\", \"content\"} objects: a file, or - for stdin");
  sub->add_option("--chat-template", o->chat_template,
                  "built-in template (chatml, gemma, llama3, llama2, phi3) or a Jinja file (default: the model's)");
  sub->add_flag("--ids", o->ids, "print the token ids instead (markup parsed as special tokens, content not)");
  sub->add_flag("--no-generation-prompt", o->no_generation_prompt, "do not open an assistant turn at the end");
  sub->add_flag("--print-source", o->print_source, "print the chosen template's Jinja source");
  return {sub, [o] { return run_template(*o); }};
}

}  // namespace kcli
