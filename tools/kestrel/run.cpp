// kestrel run: generate text from a prompt (-p, or -f FILE; --chat wraps it in
// the model's chat template as one user turn). stdout carries only the generated
// text, streamed and flushed per piece; stderr carries logs and the timing
// summary. Ctrl-C stops after the current token (summary, exit 130); a closed
// stdout ends quietly.
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "cli.h"
#include "device_flags.h"
#include "step_trace.h"

namespace kcli {
namespace {

struct RunOptions {
  std::string model, prompt, tokenizer;
  std::string prompt_file;              // -f: the prompt from a file
  bool chat = false;                    // --chat: the prompt as one user turn of the chat template
  std::string chat_template, system_prompt;
  int32_t n_predict = -1;
  int32_t n_ctx = 0;
  int32_t threads = 0;        // 0: the library's default
  int32_t threads_batch = 0;  // 0: = threads
  int64_t seed = -1;          // -1: random
  float temp = 0.8f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  int32_t repeat_last_n = 64;
  bool no_mmap = false;
  bool verbose = false;
  ExpFlags exp;
  DeviceFlags device;
  SpecFlags spec;
  std::string trace_steps;
};

struct Output {
  bool broken = false;  // stdout closed (EPIPE) or failing
  bool any = false;     // some text was written
};

int on_text(const char* text, size_t len, kestrel_token, void* user) {
  auto* out = static_cast<Output*>(user);
  if (std::fwrite(text, 1, len, stdout) != len || std::fflush(stdout) != 0) {
    out->broken = true;
    return 0;
  }
  out->any = true;
  return stop_requested() ? 0 : 1;
}

void print_summary(const kestrel_timings& t) {
  const auto tps = [](int32_t n, double ms) { return ms > 0.0 ? 1000.0 * n / ms : 0.0; };
  std::fprintf(stderr, "\nkestrel: load      %10.2f ms\n", t.t_load_ms);
  std::fprintf(stderr, "kestrel: prompt    %10.2f ms / %5d tokens (%8.2f tokens/s)\n", t.t_prompt_ms,
               t.n_prompt_tokens, tps(t.n_prompt_tokens, t.t_prompt_ms));
  std::fprintf(stderr, "kestrel: generate  %10.2f ms / %5d tokens (%8.2f tokens/s)\n", t.t_generate_ms,
               t.n_generated, tps(t.n_generated, t.t_generate_ms));
}

int run(const RunOptions& o) {
  if (o.seed < -1 || o.seed > static_cast<int64_t>(UINT32_MAX))
    return usage_error("-s/--seed: " + std::to_string(o.seed) + " is outside [-1, 4294967295]");
  std::string prompt = o.prompt, tmpl, error;
  if (!o.prompt_file.empty()) {
    if (!o.prompt.empty()) return usage_error("-p and -f both give the prompt: use one");
    if (!read_text_file(o.prompt_file, prompt, error)) return usage_error("-f: " + error);
  }
  if (!o.chat && (!o.chat_template.empty() || !o.system_prompt.empty()))
    return usage_error("--chat-template and --system-prompt need --chat");
  if (o.chat && !o.spec.mode.empty()) return usage_error("--chat and --spec cannot be combined yet");
  if (!chat_template_arg(o.chat_template, tmpl, error)) return usage_error("--chat-template: " + error);

  kestrel_model_params mp = kestrel_model_default_params();
  mp.use_mmap = o.no_mmap ? 0 : 1;
  if (!o.tokenizer.empty()) mp.llama2c_tokenizer = o.tokenizer.c_str();
  kestrel_model* model = nullptr;
  if (int rc = load_model(o.model, mp, &model); rc != kExitOk) return rc;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> model_guard(model, kestrel_model_free);

  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = o.n_ctx;
  if (o.threads > 0) cp.n_threads = o.threads;
  cp.n_threads_batch = o.threads_batch;
  apply_exp_flags(o.exp, &cp, nullptr);
  apply_device_flags(o.device, &cp);
  StepTraceFile trace;  // outlives the context
  if (!trace.attach(o.trace_steps, &cp, &error)) return usage_error(error);
  if (o.verbose) {
    // The context's messages (with --sched dynamic: the calibration and each change of matmul kernel).
    cp.log_callback = [](void*, int32_t, const char* msg) { std::fprintf(stderr, "kestrel: %s\n", msg); };
    cp.log_level = KESTREL_LOG_INFO;
  }
  kestrel_context* ctx = nullptr;
  if (kestrel_status s = kestrel_context_create(model, &cp, &ctx); s != KESTREL_OK)
    return report(s, "cannot create a context", nullptr);
  std::unique_ptr<kestrel_context, void (*)(kestrel_context*)> ctx_guard(ctx, kestrel_context_free);

  kestrel_sampler_params sp = kestrel_sampler_default_params();
  sp.temperature = o.temp;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.min_p = o.min_p;
  sp.repeat_penalty = o.repeat_penalty;
  sp.repeat_last_n = o.repeat_last_n;
  apply_exp_flags(o.exp, nullptr, &sp);
  sp.seed = o.seed >= 0 ? static_cast<uint32_t>(o.seed)
                        : static_cast<uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  if (o.verbose) {
    char desc[512];
    kestrel_model_desc(model, desc, sizeof desc);
    std::fprintf(stderr, "kestrel: %s\nkestrel: %s\nkestrel: backend %s, n_ctx %d, seed %u\n", kestrel_system_info(),
                 desc, kestrel_context_backend(ctx), kestrel_context_n_ctx(ctx), sp.seed);
  }

  Output out;
  kestrel_status s = KESTREL_OK;
  kestrel_timings t{};
  if (o.chat) {
    char origin[512];
    const char* targ = tmpl.empty() ? nullptr : tmpl.c_str();
    if (kestrel_status st = kestrel_chat_template_info(model, targ, origin, sizeof origin, nullptr, 0, nullptr);
        st != KESTREL_OK)
      return report(st, "cannot choose a chat template", model);
    std::fprintf(stderr, "kestrel: chat template: %s\n", origin);
    s = chat_generate_once(model, ctx, tmpl, o.system_prompt, prompt, o.n_predict, sp, on_text, &out, &t);
    kestrel_timings lt;
    kestrel_get_timings(ctx, &lt);
    t.t_load_ms = lt.t_load_ms;
  } else if (!o.spec.mode.empty()) {
    SpecFlags spec = o.spec;
    spec.use_mmap = !o.no_mmap;
    if (int rc = spec_generate(spec, ctx, cp, prompt.c_str(), o.n_predict, &sp, on_text, &out, &s); rc >= 0)
      return rc;
    kestrel_get_timings(ctx, &t);
  } else {
    s = kestrel_generate(ctx, prompt.c_str(), o.n_predict, &sp, on_text, &out);
    kestrel_get_timings(ctx, &t);
  }
  if (out.broken) return kExitOk;  // the reader went away: end quietly
  if (s == KESTREL_ERR_CANCELLED) {  // only our callback stops generation: Ctrl-C
    print_summary(t);
    std::fprintf(stderr, "kestrel: interrupted\n");
    return kExitInterrupted;
  }
  if (s != KESTREL_OK) {
    if (out.any) std::fputc('\n', stdout);
    return report(s, "generation failed", o.chat && (s == KESTREL_ERR_INVALID_ARGUMENT || s == KESTREL_ERR_UNSUPPORTED)
                                              ? static_cast<const void*>(model)
                                              : static_cast<const void*>(ctx));
  }
  std::fputc('\n', stdout);
  std::fflush(stdout);
  print_summary(t);
  return kExitOk;
}

}  // namespace

Command add_run(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* sub = app.add_subcommand("run", "generate text from a prompt (text on stdout, logs on stderr)");
  sub->add_option("-m,--model", o->model, "model file (GGUF, or llama2.c .bin with --tokenizer)")->required();
  sub->add_option("-p,--prompt", o->prompt, "prompt text (empty: start from BOS)");
  sub->add_option("-f,--file", o->prompt_file, "read the prompt from a file (- for stdin)");
  sub->add_flag("--chat", o->chat, "apply the model's chat template to the prompt as one user turn");
  sub->add_option("--chat-template", o->chat_template,
                  "with --chat: built-in template (chatml, gemma, llama3, llama2, phi3) or a Jinja file");
  sub->add_option("--system-prompt", o->system_prompt, "with --chat: a system message first (-sys)");
  sub->add_option("-n,--n-predict", o->n_predict, "tokens to generate (-1: until end of text or a full context)")
      ->check(CLI::Range(-1, INT32_MAX));
  sub->add_option("-c,--ctx-size", o->n_ctx, "context size in tokens (0: the model's, at most 4096)")
      ->check(CLI::Range(0, INT32_MAX));
  sub->add_option("-t,--threads", o->threads, "threads for generation")->check(CLI::Range(1, 1024));
  sub->add_option("--threads-batch", o->threads_batch, "threads for the prompt (-tb; default: --threads)")
      ->check(CLI::Range(1, 1024));
  sub->add_option("-s,--seed", o->seed, "sampling seed (-1: random)");
  sub->add_option("--temp", o->temp, "temperature (<= 0: greedy)");
  sub->add_option("--top-k", o->top_k, "top-k (<= 0: off)");
  sub->add_option("--top-p", o->top_p, "top-p (1: off)");
  sub->add_option("--min-p", o->min_p, "min-p (0: off)");
  sub->add_option("--repeat-penalty", o->repeat_penalty, "repetition penalty (1: off)");
  sub->add_option("--repeat-last-n", o->repeat_last_n, "tokens the penalty looks back over")
      ->check(CLI::Range(0, 1 << 20));
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer.bin for a llama2.c .bin model");
  sub->add_flag("--no-mmap", o->no_mmap, "read the model into memory instead of mapping it");
  add_device_flags(sub, o->device);
  add_exp_flags(sub, o->exp);
  add_spec_flags(sub, o->spec);
  add_step_trace_flag(sub, o->trace_steps);
  sub->add_flag("-v,--verbose", o->verbose, "print system and model information");
  return {sub, [o] { return run(*o); }};
}

}  // namespace kcli
