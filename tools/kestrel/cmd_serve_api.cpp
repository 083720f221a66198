// OpenAI request bodies -> scheduler requests, and finished or streaming
// requests -> OpenAI response bodies (the shapes the official clients parse).
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "cmd_serve.h"

namespace kcli::serve {

namespace {

constexpr size_t kMaxStops = 16;
constexpr int32_t kMaxTopLogprobs = 20;

ApiError bad(const std::string& message, const std::string& param = "") {
  ApiError e;
  e.http_status = 400;
  e.type = "invalid_request_error";
  e.message = message;
  e.param = param;
  return e;
}

// Typed field readers: absent or null leaves *out as it is; a wrong type or a
// value outside [lo, hi] is a 400 naming the field.
class Fields {
 public:
  Fields(const json& j, ApiError* err) : j_(j), err_(err) {}
  bool present(const char* name) const { return j_.contains(name) && !j_.at(name).is_null(); }
  const json& at(const char* name) const { return j_.at(name); }

  bool number(const char* name, double lo, double hi, float* out) {
    if (!present(name)) return true;
    const json& v = j_.at(name);
    if (!v.is_number()) return fail(std::string("'") + name + "' must be a number", name);
    const double d = v.get<double>();
    if (!(d >= lo && d <= hi)) return fail(range(name, lo, hi, d), name);
    *out = static_cast<float>(d);
    return true;
  }
  bool integer(const char* name, int64_t lo, int64_t hi, int64_t* out) {
    if (!present(name)) return true;
    const json& v = j_.at(name);
    if (!v.is_number_integer()) return fail(std::string("'") + name + "' must be an integer", name);
    const int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                          ? INT64_MAX
                          : v.get<int64_t>();
    if (x < lo || x > hi) return fail(range(name, static_cast<double>(lo), static_cast<double>(hi), static_cast<double>(x)), name);
    *out = x;
    return true;
  }
  bool boolean(const char* name, bool* out) {
    if (!present(name)) return true;
    const json& v = j_.at(name);
    if (!v.is_boolean()) return fail(std::string("'") + name + "' must be a boolean", name);
    *out = v.get<bool>();
    return true;
  }
  bool fail(const std::string& message, const std::string& param) {
    *err_ = bad(message, param);
    return false;
  }

 private:
  static std::string range(const char* name, double lo, double hi, double v) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "'%s' is %g, outside [%g, %g]", name, v, lo, hi);
    return buf;
  }
  const json& j_;
  ApiError* err_;
};

bool tokenize_text(const kestrel_model* model, const std::string& text, std::vector<kestrel_token>* out) {
  int32_t n = 0;
  out->resize(text.size() + 8);
  kestrel_status s = kestrel_tokenize(model, text.data(), text.size(), 1, 1, out->data(),
                                      static_cast<int32_t>(out->size()), &n);
  if (s == KESTREL_ERR_TOO_LONG && n > 0) {
    out->resize(static_cast<size_t>(n));
    s = kestrel_tokenize(model, text.data(), text.size(), 1, 1, out->data(), n, &n);
  }
  if (s != KESTREL_OK) return false;
  out->resize(static_cast<size_t>(n));
  return true;
}

// messages -> the chat template's token ids.
bool chat_prompt(const ParseContext& pc, const json& messages, std::vector<kestrel_token>* out, ApiError* err) {
  std::vector<std::string> roles, contents;
  if (!parse_messages(messages, &roles, &contents, err)) return false;
  std::vector<kestrel_chat_message> msgs(roles.size());
  for (size_t i = 0; i < roles.size(); ++i) msgs[i] = {roles[i].c_str(), contents[i].c_str()};
  const char* tmpl = pc.chat_template.empty() ? nullptr : pc.chat_template.c_str();
  int32_t n = 0;
  out->resize(4096);
  kestrel_status s = kestrel_chat_tokenize(pc.model, tmpl, msgs.data(), msgs.size(), 1, out->data(),
                                           static_cast<int32_t>(out->size()), &n);
  if (s == KESTREL_ERR_TOO_LONG && n > 0) {
    out->resize(static_cast<size_t>(n));
    s = kestrel_chat_tokenize(pc.model, tmpl, msgs.data(), msgs.size(), 1, out->data(), n, &n);
  }
  if (s != KESTREL_OK) {
    *err = bad(std::string("chat template: ") + kestrel_last_error(pc.model), "messages");
    if (s != KESTREL_ERR_INVALID_ARGUMENT && s != KESTREL_ERR_UNSUPPORTED) {
      err->http_status = 500;
      err->type = "server_error";
    }
    return false;
  }
  out->resize(static_cast<size_t>(n));
  return true;
}

bool completion_prompt(const ParseContext& pc, const json& p, std::vector<kestrel_token>* out, ApiError* err) {
  const int32_t n_vocab = kestrel_model_n_vocab(pc.model);
  auto token_list = [&](const json& a) {
    out->clear();
    for (const json& t : a) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= n_vocab) {
        *err = bad("'prompt' token ids must be integers in [0, " + std::to_string(n_vocab) + ")", "prompt");
        return false;
      }
      out->push_back(static_cast<kestrel_token>(t.get<int64_t>()));
    }
    return true;
  };
  const json* text = nullptr;
  if (p.is_string()) {
    text = &p;
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    text = &p[0];
  } else if (p.is_array() && !p.empty() && p[0].is_number()) {
    if (!token_list(p)) return false;
  } else if (p.is_array() && p.size() == 1 && p[0].is_array()) {
    if (!token_list(p[0])) return false;
  } else {
    *err = bad("'prompt' must be a string, a list of one string, or a list of token ids (one prompt per request)", "prompt");
    return false;
  }
  if (text && !tokenize_text(pc.model, text->get<std::string>(), out)) {
    *err = bad(std::string("cannot tokenize the prompt: ") + kestrel_last_error(pc.model), "prompt");
    return false;
  }
  if (out->empty()) {
    const kestrel_token bos = kestrel_token_bos(pc.model);
    if (bos < 0) {
      *err = bad("empty prompt and the model has no BOS token", "prompt");
      return false;
    }
    out->push_back(bos);
  }
  return true;
}

uint32_t random_seed() {
  static std::mutex mu;
  static std::random_device rd;
  std::lock_guard<std::mutex> lock(mu);
  return rd();
}

json token_bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}
json chat_logprobs(const kestrel_model* model, const std::vector<TokenLp>& lps) {
  json content = json::array();
  for (const TokenLp& l : lps) {
    const std::string t = token_text(model, l.token);
    json top = json::array();
    for (const auto& [id, lp] : l.top) {
      const std::string tt = token_text(model, id);
      top.push_back({{"token", tt}, {"logprob", lp}, {"bytes", token_bytes(tt)}});
    }
    content.push_back({{"token", t}, {"logprob", l.logprob}, {"bytes", token_bytes(t)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

// completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
json completion_logprobs(const kestrel_model* model, const std::vector<TokenLp>& lps, size_t* offset) {
  json tokens = json::array(), token_lps = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLp& l : lps) {
    const std::string t = token_text(model, l.token);
    tokens.push_back(t);
    token_lps.push_back(l.logprob);
    json top = json::object();
    for (const auto& [id, lp] : l.top) top[token_text(model, id)] = lp;
    tops.push_back(top);
    offsets.push_back(*offset);
    *offset += t.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json base(const ParsedRequest& req, const ResponseMeta& meta, bool chunk) {
  const bool chat = req.endpoint == Endpoint::chat;
  return {{"id", meta.id},
          {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
          {"created", meta.created},
          {"model", meta.model},
          {"system_fingerprint", "kestrel"}};
}

}  // namespace

json error_body(const ApiError& e) {
  json err = {{"code", e.http_status}, {"message", e.message}, {"type", e.type}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  return {{"error", err}};
}

std::string dump(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string token_text(const kestrel_model* model, kestrel_token token) {
  char buf[256];
  size_t n = 0;
  if (kestrel_token_to_piece(model, token, 0, buf, sizeof buf, &n) == KESTREL_OK) return std::string(buf, n);
  std::string big(n, '\0');
  if (n > 0 && kestrel_token_to_piece(model, token, 0, big.data(), big.size(), &n) == KESTREL_OK) return big;
  return std::string();
}

bool parse_messages(const json& messages, std::vector<std::string>* roles, std::vector<std::string>* contents,
                    ApiError* err) {
  if (!messages.is_array() || messages.empty()) {
    *err = bad("'messages' must be a non-empty array", "messages");
    return false;
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m.at("role").is_string()) {
      *err = bad(where + " must be an object with a string 'role'", "messages");
      return false;
    }
    std::string content;
    if (m.contains("content") && !m.at("content").is_null()) {
      const json& c = m.at("content");
      if (c.is_string()) {
        content = c.get<std::string>();
      } else if (c.is_array()) {
        for (const json& part : c) {
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part.at("text").is_string()) {
            *err = bad(where + ".content: only text parts ({\"type\": \"text\", \"text\": ...}) are supported", "messages");
            return false;
          }
          content += part.at("text").get<std::string>();
        }
      } else {
        *err = bad(where + ".content must be a string or an array of text parts", "messages");
        return false;
      }
    }
    roles->push_back(m.at("role").get<std::string>());
    contents->push_back(std::move(content));
  }
  return true;
}

bool render_chat(const ParseContext& pc, const json& messages, std::string* out, ApiError* err) {
  std::vector<std::string> roles, contents;
  if (!parse_messages(messages, &roles, &contents, err)) return false;
  std::vector<kestrel_chat_message> msgs(roles.size());
  for (size_t i = 0; i < roles.size(); ++i) msgs[i] = {roles[i].c_str(), contents[i].c_str()};
  const char* tmpl = pc.chat_template.empty() ? nullptr : pc.chat_template.c_str();
  size_t n = 0;
  out->resize(4096);
  kestrel_status s = kestrel_chat_apply_template(pc.model, tmpl, msgs.data(), msgs.size(), 1, out->data(), out->size(), &n);
  if (s == KESTREL_ERR_TOO_LONG) {
    out->resize(n + 1);
    s = kestrel_chat_apply_template(pc.model, tmpl, msgs.data(), msgs.size(), 1, out->data(), out->size(), &n);
  }
  if (s != KESTREL_OK) {
    *err = bad(std::string("chat template: ") + kestrel_last_error(pc.model), "messages");
    return false;
  }
  out->resize(n);
  return true;
}

bool parse_request(const ParseContext& pc, Endpoint endpoint, const std::string& body, ParsedRequest* out, ApiError* err) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    *err = bad(std::string("malformed JSON body: ") + e.what());
    return false;
  }
  if (!j.is_object()) {
    *err = bad("the body must be a JSON object");
    return false;
  }
  ParsedRequest& r = *out;
  r = ParsedRequest{};
  r.endpoint = endpoint;
  r.sampling = kestrel_sampler_default_params();
  Fields f(j, err);
  const bool chat = endpoint == Endpoint::chat;

  int64_t n = 1;
  if (!f.integer("n", 1, 1, &n)) return f.fail("only n = 1 is supported", "n");
  int64_t max_tokens = chat ? -1 : 16;  // OpenAI's defaults: completions 16, chat unlimited
  if (!f.integer("max_tokens", 0, INT32_MAX, &max_tokens)) return false;
  if (!f.integer("max_completion_tokens", 0, INT32_MAX, &max_tokens)) return false;
  r.max_tokens = static_cast<int32_t>(max_tokens);
  if (!f.number("temperature", 0.0, 2.0, &r.sampling.temperature)) return false;
  if (!f.number("top_p", 0.0, 1.0, &r.sampling.top_p)) return false;
  if (!f.number("min_p", 0.0, 1.0, &r.sampling.min_p)) return false;
  int64_t top_k = r.sampling.top_k;
  if (!f.integer("top_k", 0, 1 << 20, &top_k)) return false;
  r.sampling.top_k = static_cast<int32_t>(top_k);
  if (!f.number("repeat_penalty", 0.01, 100.0, &r.sampling.repeat_penalty)) return false;
  for (const char* unsupported : {"presence_penalty", "frequency_penalty"}) {
    float v = 0.0f;
    if (!f.number(unsupported, -2.0, 2.0, &v)) return false;
    if (v != 0.0f) return f.fail(std::string("'") + unsupported + "' is not supported (use repeat_penalty)", unsupported);
  }
  int64_t seed = -1;
  if (!f.integer("seed", INT64_MIN, INT64_MAX, &seed)) return false;
  r.sampling.seed = f.present("seed") ? static_cast<uint32_t>(static_cast<uint64_t>(seed)) : random_seed();

  if (f.present("stop")) {
    const json& s = f.at("stop");
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= kMaxStops) {
      for (const json& x : s) {
        if (!x.is_string()) return f.fail("'stop' must be a string or a list of strings", "stop");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      return f.fail("'stop' must be a string or a list of at most " + std::to_string(kMaxStops) + " strings", "stop");
    }
  }
  if (!f.boolean("stream", &r.stream)) return false;
  if (!f.boolean("ignore_eos", &r.ignore_eos)) return false;
  if (f.present("stream_options")) {
    const json& so = f.at("stream_options");
    if (!so.is_object()) return f.fail("'stream_options' must be an object", "stream_options");
    Fields fo(so, err);
    if (!fo.boolean("include_usage", &r.include_usage)) return false;
  }
  if (chat) {
    bool logprobs = false;
    if (!f.boolean("logprobs", &logprobs)) return false;
    int64_t top = 0;
    if (!f.integer("top_logprobs", 0, kMaxTopLogprobs, &top)) return false;
    if (f.present("top_logprobs") && !logprobs) return f.fail("'top_logprobs' needs 'logprobs': true", "top_logprobs");
    r.n_top_logprobs = logprobs ? static_cast<int32_t>(top) : -1;
    for (const char* unsupported : {"tools", "functions"})
      if (f.present(unsupported) && !(f.at(unsupported).is_array() && f.at(unsupported).empty()))
        return f.fail(std::string("'") + unsupported + "' is not supported", unsupported);
    if (!j.contains("messages")) return f.fail("'messages' is required", "messages");
    if (!chat_prompt(pc, j.at("messages"), &r.prompt, err)) return false;
  } else {
    int64_t lp = -1;
    if (!f.integer("logprobs", 0, kMaxTopLogprobs, &lp)) return false;
    r.n_top_logprobs = static_cast<int32_t>(lp);
    bool echo = false;
    if (!f.boolean("echo", &echo)) return false;
    if (echo) return f.fail("'echo' is not supported", "echo");
    if (f.present("suffix")) return f.fail("'suffix' is not supported", "suffix");
    if (!j.contains("prompt")) return f.fail("'prompt' is required", "prompt");
    if (!completion_prompt(pc, j.at("prompt"), &r.prompt, err)) return false;
  }
  if (static_cast<int64_t>(r.prompt.size()) > pc.n_ctx) {
    *err = bad("the prompt has " + std::to_string(r.prompt.size()) + " tokens, more than a slot's context of " +
                   std::to_string(pc.n_ctx) + " tokens",
               chat ? "messages" : "prompt");
    return false;
  }
  return true;
}

json usage_json(const kestrel_request_usage& u) {
  return {{"prompt_tokens", u.n_prompt},
          {"completion_tokens", u.n_generated},
          {"total_tokens", u.n_prompt + u.n_generated},
          {"prompt_tokens_details", {{"cached_tokens", u.n_cached}}}};
}

const char* finish_reason_text(int32_t finish_reason) {
  return finish_reason == KESTREL_FINISH_LENGTH ? "length" : "stop";
}

json full_response(const kestrel_model* model, const ParsedRequest& req, const ResponseMeta& meta,
                   const std::string& text, const std::vector<TokenLp>& logprobs, const Flight& f) {
  json out = base(req, meta, false);
  json choice = {{"index", 0}, {"finish_reason", finish_reason_text(f.finish_reason)}};
  if (req.endpoint == Endpoint::chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
    choice["logprobs"] = req.n_top_logprobs >= 0 ? chat_logprobs(model, logprobs) : json(nullptr);
  } else {
    choice["text"] = text;
    size_t offset = 0;
    choice["logprobs"] = req.n_top_logprobs >= 0 ? completion_logprobs(model, logprobs, &offset) : json(nullptr);
  }
  out["choices"] = json::array({choice});
  out["usage"] = usage_json(f.usage);
  return out;
}

json chunk_open(const ParsedRequest& req, const ResponseMeta& meta) {
  json out = base(req, meta, true);
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (req.endpoint == Endpoint::chat) choice["delta"] = {{"role", "assistant"}, {"content", ""}};
  else choice["text"] = "";
  out["choices"] = json::array({choice});
  if (req.include_usage) out["usage"] = nullptr;
  return out;
}

json chunk_delta(const kestrel_model* model, const ParsedRequest& req, const ResponseMeta& meta, const Delta& d,
                 size_t* text_offset) {
  json out = base(req, meta, true);
  json choice = {{"index", 0}, {"finish_reason", nullptr}};
  if (req.endpoint == Endpoint::chat) {
    choice["delta"] = {{"content", d.text}};
    choice["logprobs"] = req.n_top_logprobs >= 0 ? chat_logprobs(model, d.logprobs) : json(nullptr);
  } else {
    choice["text"] = d.text;
    choice["logprobs"] = req.n_top_logprobs >= 0 ? completion_logprobs(model, d.logprobs, text_offset) : json(nullptr);
  }
  out["choices"] = json::array({choice});
  if (req.include_usage) out["usage"] = nullptr;
  return out;
}

json chunk_finish(const ParsedRequest& req, const ResponseMeta& meta, int32_t finish_reason) {
  json out = base(req, meta, true);
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason_text(finish_reason)}};
  if (req.endpoint == Endpoint::chat) choice["delta"] = json::object();
  else choice["text"] = "";
  out["choices"] = json::array({choice});
  if (req.include_usage) out["usage"] = nullptr;
  return out;
}

json chunk_usage(const ParsedRequest& req, const ResponseMeta& meta, const kestrel_request_usage& u) {
  json out = base(req, meta, true);
  out["choices"] = json::array();
  out["usage"] = usage_json(u);
  return out;
}

}  // namespace kcli::serve
