// kestrel chat: a conversation with a model through its chat template, like
// llama-cli's conversation mode. Each turn renders the whole conversation,
// keeps the KV cache of the tokens it shares with what was already processed
// (only the new suffix is decoded), streams the reply and stops at the
// model's end-of-turn tokens. Reads stdin one turn per line (a line ending in
// '\' continues on the next), so pipes work; /reset starts over, /exit (or
// end of input) quits; Ctrl-C stops the current reply. --verbose prints one
// stats line per turn on stderr ("new" tokens are those decoded for the prompt).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli.h"

namespace kcli {

bool read_text_file(const std::string& path, std::string& out, std::string& error) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
      error = "cannot read '" + path + "'";
      return false;
    }
    ss << f.rdbuf();
  }
  out = ss.str();
  return true;
}

bool chat_template_arg(const std::string& arg, std::string& out, std::string& error) {
  out.clear();
  if (arg.empty()) return true;
  if (access(arg.c_str(), F_OK) == 0) return read_text_file(arg, out, error);
  out = arg;  // a built-in name, checked by the library
  return true;
}

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Bytes of s that end with a complete UTF-8 character (the rest waits for the next token).
size_t complete_utf8_prefix(const std::string& s) {
  size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const size_t need = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

struct TurnStats {
  int32_t n_prompt = 0;    // tokens of the rendered conversation
  int32_t n_reused = 0;    // of those, already in the KV cache
  int32_t n_decoded = 0;   // prompt tokens decoded this turn
  int32_t n_generated = 0;
  double t_prompt_ms = 0.0, t_generate_ms = 0.0;
  bool context_full = false;
  bool interrupted = false;
};

// The state of one conversation: messages, and the tokens held by the KV
// cache's sequence 0 (cached[i] at position i).
struct Session {
  kestrel_model* model = nullptr;
  kestrel_context* ctx = nullptr;
  kestrel_sampler* sampler = nullptr;
  std::string tmpl;                    // "" : the model's
  std::vector<std::string> roles, contents;
  std::vector<kestrel_token> cached;
  int32_t n_batch = 512;

  const char* tmpl_arg() const { return tmpl.empty() ? nullptr : tmpl.c_str(); }

  kestrel_status render_ids(std::vector<kestrel_token>& ids) {
    std::vector<kestrel_chat_message> msgs;
    for (size_t i = 0; i < roles.size(); ++i) msgs.push_back({roles[i].c_str(), contents[i].c_str()});
    int32_t n = 0;
    kestrel_status s = kestrel_chat_tokenize(model, tmpl_arg(), msgs.data(), msgs.size(), 1, nullptr, 0, &n);
    if (s != KESTREL_OK && s != KESTREL_ERR_TOO_LONG) return s;
    ids.resize(static_cast<size_t>(n));
    return kestrel_chat_tokenize(model, tmpl_arg(), msgs.data(), msgs.size(), 1, ids.data(), n, &n);
  }

  kestrel_status decode(const kestrel_token* toks, int32_t n, int32_t pos0) {
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = pos0 + i;
    kestrel_batch b{n, toks, pos.data(), nullptr, nullptr};
    return kestrel_decode(ctx, &b);
  }

  void reset() {
    cached.clear();
    (void)kestrel_kv_seq_rm(ctx, 0, 0, -1);
    kestrel_sampler_reset(sampler);
  }

  // Processes the conversation's prompt (reusing the cached prefix) and
  // generates the assistant's reply into `reply`, streaming it to on_text.
  kestrel_status reply(int32_t n_predict, kestrel_text_fn on_text, void* user, std::string& reply, TurnStats& st) {
    std::vector<kestrel_token> ids;
    if (kestrel_status s = render_ids(ids); s != KESTREL_OK) return s;
    const int32_t n_ctx = kestrel_context_n_ctx(ctx);
    st.n_prompt = static_cast<int32_t>(ids.size());
    if (ids.empty()) return KESTREL_ERR_INVALID_ARGUMENT;
    if (st.n_prompt >= n_ctx) {
      st.context_full = true;
      return KESTREL_ERR_TOO_LONG;
    }
    size_t keep = 0;
    while (keep < cached.size() && keep < ids.size() && cached[keep] == ids[keep]) ++keep;
    if (keep == ids.size()) --keep;  // the last prompt token is decoded again for its logits
    if (kestrel_status s = kestrel_kv_seq_rm(ctx, 0, static_cast<int32_t>(keep), -1); s != KESTREL_OK) return s;
    cached.resize(keep);
    st.n_reused = static_cast<int32_t>(keep);
    const auto t0 = Clock::now();
    for (size_t i = keep; i < ids.size(); i += static_cast<size_t>(n_batch)) {
      const auto n = static_cast<int32_t>(std::min(ids.size() - i, static_cast<size_t>(n_batch)));
      if (kestrel_status s = decode(ids.data() + i, n, static_cast<int32_t>(i)); s != KESTREL_OK) {
        reset();
        return s;
      }
      cached.insert(cached.end(), ids.begin() + static_cast<ptrdiff_t>(i), ids.begin() + static_cast<ptrdiff_t>(i) + n);
    }
    st.n_decoded = static_cast<int32_t>(ids.size() - keep);
    st.t_prompt_ms = ms_since(t0);

    const auto t1 = Clock::now();
    std::string pending, piece(64, '\0');
    kestrel_status result = KESTREL_OK;
    for (int32_t k = 0; n_predict < 0 || k < n_predict; ++k) {
      if (stop_requested()) {
        st.interrupted = true;
        break;
      }
      const float* logits = kestrel_get_logits(ctx, 0);
      if (!logits) { result = KESTREL_ERR_RUNTIME; break; }
      kestrel_token tok = 0;
      if (kestrel_status s = kestrel_sampler_sample(sampler, logits, &tok); s != KESTREL_OK) { result = s; break; }
      if (kestrel_token_is_eog(model, tok)) break;
      kestrel_sampler_accept(sampler, tok);
      ++st.n_generated;
      size_t nb = 0;
      kestrel_status s = kestrel_token_to_piece(model, tok, 0, piece.data(), piece.size(), &nb);
      if (s == KESTREL_ERR_TOO_LONG) {
        piece.resize(nb);
        s = kestrel_token_to_piece(model, tok, 0, piece.data(), piece.size(), &nb);
      }
      if (s != KESTREL_OK) { result = s; break; }
      pending.append(piece.data(), nb);
      const size_t ready = complete_utf8_prefix(pending);
      if (ready > 0) {
        reply.append(pending, 0, ready);
        if (on_text && !on_text(pending.data(), ready, tok, user)) st.interrupted = true;
        pending.erase(0, ready);
      }
      if (st.interrupted) break;
      if (static_cast<int32_t>(cached.size()) >= n_ctx) {
        st.context_full = true;
        break;
      }
      if (s = decode(&tok, 1, static_cast<int32_t>(cached.size())); s != KESTREL_OK) { result = s; break; }
      cached.push_back(tok);
    }
    if (!pending.empty()) {  // an unfinished character at the end: shown as it is
      reply += pending;
      if (on_text) on_text(pending.data(), pending.size(), -1, user);
    }
    st.t_generate_ms = ms_since(t1);
    return result;
  }
};

struct ChatOptions {
  std::string model, system_prompt, system_prompt_file, chat_template;
  int32_t n_predict = -1;
  int32_t n_ctx = 0;
  int32_t threads = 0;
  int64_t seed = -1;
  float temp = 0.8f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  bool verbose = false;
};

int write_out(const char* text, size_t len, kestrel_token, void*) {
  if (std::fwrite(text, 1, len, stdout) != len || std::fflush(stdout) != 0) return 0;
  return stop_requested() ? 0 : 1;
}

// One user turn from stdin: a line, or several joined while lines end in '\'.
bool read_turn(std::string& out) {
  out.clear();
  std::string line;
  while (std::getline(std::cin, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty() && line.back() == '\\') {
      line.pop_back();
      out += line + "\n";
      continue;
    }
    out += line;
    return true;
  }
  return !out.empty();
}

int chat(const ChatOptions& o) {
  if (o.seed < -1 || o.seed > static_cast<int64_t>(UINT32_MAX))
    return usage_error("-s/--seed: " + std::to_string(o.seed) + " is outside [-1, 4294967295]");
  std::string error, system_prompt = o.system_prompt;
  if (!o.system_prompt_file.empty() && !read_text_file(o.system_prompt_file, system_prompt, error))
    return usage_error("--system-prompt-file: " + error);
  Session ses;
  if (!chat_template_arg(o.chat_template, ses.tmpl, error)) return usage_error("--chat-template: " + error);

  kestrel_model_params mp = kestrel_model_default_params();
  if (int rc = load_model(o.model, mp, &ses.model); rc != kExitOk) return rc;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> model_guard(ses.model, kestrel_model_free);

  char origin[512];
  if (kestrel_status s = kestrel_chat_template_info(ses.model, ses.tmpl_arg(), origin, sizeof origin, nullptr, 0, nullptr);
      s != KESTREL_OK)
    return report(s, "cannot choose a chat template", ses.model);
  std::fprintf(stderr, "kestrel: chat template: %s\n", origin);

  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = o.n_ctx;
  if (o.threads > 0) cp.n_threads = o.threads;
  ses.n_batch = cp.n_batch;
  if (kestrel_status s = kestrel_context_create(ses.model, &cp, &ses.ctx); s != KESTREL_OK)
    return report(s, "cannot create a context", nullptr);
  std::unique_ptr<kestrel_context, void (*)(kestrel_context*)> ctx_guard(ses.ctx, kestrel_context_free);

  kestrel_sampler_params sp = kestrel_sampler_default_params();
  sp.temperature = o.temp;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.min_p = o.min_p;
  sp.repeat_penalty = o.repeat_penalty;
  sp.seed = o.seed >= 0 ? static_cast<uint32_t>(o.seed)
                        : static_cast<uint32_t>(Clock::now().time_since_epoch().count());
  if (kestrel_status s = kestrel_sampler_create(ses.model, &sp, &ses.sampler); s != KESTREL_OK)
    return report(s, "cannot create a sampler", nullptr);
  std::unique_ptr<kestrel_sampler, void (*)(kestrel_sampler*)> smp_guard(ses.sampler, kestrel_sampler_free);

  auto start_conversation = [&] {
    ses.roles.clear();
    ses.contents.clear();
    if (!system_prompt.empty()) {
      ses.roles.push_back("system");
      ses.contents.push_back(system_prompt);
    }
  };
  start_conversation();
  const bool interactive = isatty(STDIN_FILENO) != 0;
  if (interactive)
    std::fprintf(stderr, "kestrel: chat with %s; /reset starts over, /exit quits, '\\' at a line's end continues it\n",
                 o.model.c_str());
  int turn = 0;
  std::string input;
  while (true) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!read_turn(input) || input == "/exit") break;
    if (input == "/reset") {
      start_conversation();
      ses.reset();
      std::fprintf(stderr, "kestrel: conversation reset\n");
      continue;
    }
    if (input.empty()) continue;
    ses.roles.push_back("user");
    ses.contents.push_back(input);
    clear_stop_request();
    std::string reply;
    TurnStats st;
    const kestrel_status s = ses.reply(o.n_predict, write_out, nullptr, reply, st);
    ++turn;
    if (s == KESTREL_ERR_TOO_LONG && st.context_full) {
      std::fprintf(stderr, "kestrel: context full: the conversation is %d tokens, the context holds %d; /reset starts over\n",
                   st.n_prompt, kestrel_context_n_ctx(ses.ctx));
      ses.roles.pop_back();
      ses.contents.pop_back();
      continue;
    }
    if (s != KESTREL_OK) {
      ses.roles.pop_back();
      ses.contents.pop_back();
      return report(s, "chat failed", s == KESTREL_ERR_INVALID_ARGUMENT || s == KESTREL_ERR_UNSUPPORTED
                                          ? static_cast<const void*>(ses.model)
                                          : static_cast<const void*>(ses.ctx));
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (st.interrupted) {
      clear_stop_request();
      std::fprintf(stderr, "kestrel: reply stopped\n");
    }
    if (st.context_full)
      std::fprintf(stderr, "kestrel: context full (%d tokens): the reply was cut; /reset starts over\n",
                   kestrel_context_n_ctx(ses.ctx));
    ses.roles.push_back("assistant");
    ses.contents.push_back(reply);
    if (o.verbose) {
      const auto tps = [](int32_t n, double ms) { return ms > 0.0 ? 1000.0 * n / ms : 0.0; };
      std::fprintf(stderr,
                   "kestrel: turn %d: prompt %d tokens, %d reused, %d new (%.2f ms, %.2f tokens/s); generated %d "
                   "(%.2f ms, %.2f tokens/s)\n",
                   turn, st.n_prompt, st.n_reused, st.n_decoded, st.t_prompt_ms, tps(st.n_decoded, st.t_prompt_ms),
                   st.n_generated, st.t_generate_ms, tps(st.n_generated, st.t_generate_ms));
    }
  }
  return kExitOk;
}

}  // namespace

kestrel_status chat_generate_once(kestrel_model* model, kestrel_context* ctx, const std::string& tmpl,
                                  const std::string& system_prompt, const std::string& prompt, int32_t n_predict,
                                  const kestrel_sampler_params& sp, kestrel_text_fn on_text, void* user,
                                  kestrel_timings* timings) {
  Session ses;
  ses.model = model;
  ses.ctx = ctx;
  ses.tmpl = tmpl;
  if (!system_prompt.empty()) {
    ses.roles.push_back("system");
    ses.contents.push_back(system_prompt);
  }
  ses.roles.push_back("user");
  ses.contents.push_back(prompt);
  if (kestrel_status s = kestrel_sampler_create(model, &sp, &ses.sampler); s != KESTREL_OK) return s;
  std::unique_ptr<kestrel_sampler, void (*)(kestrel_sampler*)> guard(ses.sampler, kestrel_sampler_free);
  (void)kestrel_kv_seq_rm(ctx, 0, 0, -1);
  std::string reply;
  TurnStats st;
  const kestrel_status s = ses.reply(n_predict, on_text, user, reply, st);
  if (timings) {
    timings->n_prompt_tokens = st.n_decoded;
    timings->t_prompt_ms = st.t_prompt_ms;
    timings->n_generated = st.n_generated;
    timings->t_generate_ms = st.t_generate_ms;
  }
  if (s == KESTREL_OK && st.interrupted) return KESTREL_ERR_CANCELLED;
  return s;
}

Command add_chat(CLI::App& app) {
  auto o = std::make_shared<ChatOptions>();
  CLI::App* sub = app.add_subcommand("chat", "chat with a model through its chat template (one turn per input line)");
  sub->add_option("-m,--model", o->model, "model file (GGUF)")->required();
  sub->add_option("--system-prompt", o->system_prompt, "system message (-sys)");
  sub->add_option("--system-prompt-file", o->system_prompt_file, "read the system message from a file");
  sub->add_option("--chat-template", o->chat_template,
                  "built-in template (chatml, gemma, llama3, llama2, phi3) or a Jinja file (default: the model's)");
  sub->add_option("-n,--n-predict", o->n_predict, "most tokens per reply (-1: until end of turn or a full context)")
      ->check(CLI::Range(-1, INT32_MAX));
  sub->add_option("-c,--ctx-size", o->n_ctx, "context size in tokens (0: the model's, at most 4096)")
      ->check(CLI::Range(0, INT32_MAX));
  sub->add_option("-t,--threads", o->threads, "threads")->check(CLI::Range(1, 1024));
  sub->add_option("-s,--seed", o->seed, "sampling seed (-1: random)");
  sub->add_option("--temp", o->temp, "temperature (<= 0: greedy)");
  sub->add_option("--top-k", o->top_k, "top-k (<= 0: off)");
  sub->add_option("--top-p", o->top_p, "top-p (1: off)");
  sub->add_option("--min-p", o->min_p, "min-p (0: off)");
  sub->add_option("--repeat-penalty", o->repeat_penalty, "repetition penalty (1: off)");
  sub->add_flag("-v,--verbose", o->verbose, "print one stats line per turn (prompt tokens reused / new, speed)");
  return {sub, [o] { return chat(*o); }};
}

}  // namespace kcli
