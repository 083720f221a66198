// C API: chat templates (runtime/chat/chat.h).
#include <cstring>

#include "runtime/c_api_internal.h"
#include "runtime/chat/chat.h"

using namespace kestrel;
using namespace kestrel::capi;

namespace {

Status read_messages(const kestrel_chat_message* messages, size_t n, const char* fn, std::vector<chat::Message>& out) {
  if (!messages && n > 0) return Status::invalid_argument("%s: messages is NULL but n_messages is %zu", fn, n);
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (!messages[i].role || !messages[i].content)
      return Status::invalid_argument("%s: message %zu has a NULL role or content", fn, i);
    out.push_back({messages[i].role, messages[i].content});
  }
  return {};
}

Status render(const kestrel_model* model, const char* tmpl, const kestrel_chat_message* messages, size_t n,
              int add_generation_prompt, const char* fn, jinja::TStr& out) {
  if (!live(model)) return Status::invalid_argument("%s: model is NULL or not live", fn);
  std::vector<chat::Message> msgs;
  KESTREL_TRY(read_messages(messages, n, fn, msgs));
  KESTREL_TRY_ASSIGN(chat::TemplateChoice t, chat::choose_template(*model->model, tmpl));
  KESTREL_TRY_ASSIGN(out, chat::render(*model->model, t.source, msgs, add_generation_prompt != 0));
  return {};
}

kestrel_status finish(const kestrel_model* model, const Status& s) {
  if (!s.ok()) return live(model) ? fail_model(model, s) : fail_global(s);
  clear_model_error(model);
  return KESTREL_OK;
}

}  // namespace

extern "C" {

kestrel_status kestrel_chat_apply_template(const kestrel_model* model, const char* tmpl,
                                           const kestrel_chat_message* messages, size_t n_messages,
                                           int add_generation_prompt, char* buf, size_t buf_size, size_t* n_bytes) {
  if (n_bytes) *n_bytes = 0;
  const Status s = guarded([&]() -> Status {
    if (!n_bytes) return Status::invalid_argument("kestrel_chat_apply_template: n_bytes must not be NULL");
    if (!buf && buf_size > 0) return Status::invalid_argument("kestrel_chat_apply_template: buf is NULL but buf_size is %zu", buf_size);
    jinja::TStr text;
    KESTREL_TRY(render(model, tmpl, messages, n_messages, add_generation_prompt, "kestrel_chat_apply_template", text));
    *n_bytes = text.text.size();
    if (text.text.size() >= buf_size) {
      if (buf_size > 0) {
        std::memcpy(buf, text.text.data(), buf_size - 1);
        buf[buf_size - 1] = '\0';
      }
      return Status::too_long("the prompt has %zu bytes, the buffer holds %zu with its NUL", text.text.size(), buf_size);
    }
    std::memcpy(buf, text.text.data(), text.text.size());
    buf[text.text.size()] = '\0';
    return {};
  });
  return finish(model, s);
}

kestrel_status kestrel_chat_tokenize(const kestrel_model* model, const char* tmpl,
                                     const kestrel_chat_message* messages, size_t n_messages,
                                     int add_generation_prompt, kestrel_token* tokens, int32_t max_tokens,
                                     int32_t* n_tokens) {
  if (n_tokens) *n_tokens = 0;
  const Status s = guarded([&]() -> Status {
    if (!n_tokens) return Status::invalid_argument("kestrel_chat_tokenize: n_tokens must not be NULL");
    if (max_tokens < 0) return Status::invalid_argument("kestrel_chat_tokenize: max_tokens %d < 0", max_tokens);
    if (!tokens && max_tokens > 0) return Status::invalid_argument("kestrel_chat_tokenize: tokens is NULL but max_tokens is %d", max_tokens);
    jinja::TStr text;
    KESTREL_TRY(render(model, tmpl, messages, n_messages, add_generation_prompt, "kestrel_chat_tokenize", text));
    std::vector<int32_t> ids;
    KESTREL_TRY(chat::tokenize(model->model->tokenizer(), text, ids));
    if (ids.size() > static_cast<size_t>(INT32_MAX)) return Status::too_long("%zu tokens", ids.size());
    *n_tokens = static_cast<int32_t>(ids.size());
    const size_t n = std::min(ids.size(), static_cast<size_t>(max_tokens));
    if (n) std::memcpy(tokens, ids.data(), n * sizeof(int32_t));
    if (ids.size() > static_cast<size_t>(max_tokens))
      return Status::too_long("the prompt has %zu tokens, the buffer holds %d", ids.size(), max_tokens);
    return {};
  });
  return finish(model, s);
}

kestrel_status kestrel_chat_template_info(const kestrel_model* model, const char* tmpl, char* origin,
                                          size_t origin_size, char* source, size_t source_size, size_t* source_len) {
  if (source_len) *source_len = 0;
  const Status s = guarded([&]() -> Status {
    if (!live(model)) return Status::invalid_argument("kestrel_chat_template_info: model is NULL or not live");
    if ((!origin && origin_size > 0) || (!source && source_size > 0))
      return Status::invalid_argument("kestrel_chat_template_info: a NULL buffer with a non-zero size");
    KESTREL_TRY_ASSIGN(chat::TemplateChoice t, chat::choose_template(*model->model, tmpl));
    if (origin_size > 0) copy_out(t.origin, origin, origin_size);
    if (source_size > 0) copy_out(t.source, source, source_size);
    if (source_len) *source_len = t.source.size();
    return {};
  });
  return finish(model, s);
}

}  // extern "C"
