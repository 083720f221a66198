// The kestrel CLI: each subcommand registers its options on the CLI11 app and
// returns the action main() runs when that subcommand was given. Everything
// here uses the public C API only.
//
// Exit codes: 0 ok; 1 runtime failure; 2 bad usage or bad input file (the
// library's bad_file / io_error / invalid_argument / unsupported / too_long);
// 130 interrupted (Ctrl-C). A failure always prints a message on stderr.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <kestrel/kestrel.h>

namespace kcli {

using Action = std::function<int()>;

struct Command {
  CLI::App* app;
  Action action;
};

Command add_run(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_tokenize(CLI::App& app);
Command add_inspect(CLI::App& app);
Command add_convert(CLI::App& app);
Command add_perplexity(CLI::App& app);
Command add_quantize(CLI::App& app);
Command add_ks_factorize(CLI::App& app);
Command add_chat(CLI::App& app);
Command add_calibrate(CLI::App& app);
Command add_template(CLI::App& app);
Command add_serve(CLI::App& app);  // cmd_serve.cpp, built with cpp-httplib (KESTREL_CLI_SERVE)

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;

// 2 for statuses that mean bad input or usage, 1 for the others.
int exit_code_for(kestrel_status s);
// Prints "kestrel: <what>: <status>: <message>" on stderr and returns exit_code_for(s).
int report(kestrel_status s, const std::string& what, const void* handle);
// Prints "kestrel: error: <message>" and returns kExitUsage.
int usage_error(const std::string& message);

// Ctrl-C: the first sets the stop flag (checked by callbacks), the second
// exits 130 at once. SIGPIPE is ignored: writes to a closed stdout fail and
// the writer stops quietly.
void install_signal_handlers();
bool stop_requested();
// Forgets a Ctrl-C once it has been handled (kestrel chat: a reply stopped, back
// to the prompt), so that the next one stops again instead of exiting.
void clear_stop_request();

// Loads a model, showing progress on stderr when it is a terminal and
// cancelling on Ctrl-C. Returns an exit code (0 on success).
int load_model(const std::string& path, kestrel_model_params params, kestrel_model** out);

// --exp and its per-op overrides (exp_flags.cpp): each empty or
// exact|quake2|quake1, checked by CLI11. An override wins over --exp.
struct ExpFlags {
  std::string all, softmax, gelu, silu, sigmoid;
};
void add_exp_flags(CLI::App* sub, ExpFlags& flags);
// Sets the context's per-op tiers and the sampler's softmax tier (either may be NULL).
void apply_exp_flags(const ExpFlags& flags, kestrel_context_params* cp, kestrel_sampler_params* sp);
// "softmax quake2, gelu exact, ..." for logs.
std::string exp_flags_summary(const ExpFlags& flags);
// True when some op gets a tier other than exact.
bool exp_flags_any_quake(const ExpFlags& flags);

// kestrel run --spec (spec.cpp): speculative decoding flags.
struct SpecFlags {
  std::string mode;         // "", "self" or "draft"
  std::string draft_model;  // -md
  std::string skip = "auto";
  int32_t draft_max = 8;
  bool fixed = false, sigmoid = false, logprob = false;
  int32_t draft_vocab = 0;  // --draft-vocab
  float p_min = 0.0f;       // --draft-p-min
  bool autoregressive = false;  // --spec-autoregressive: no mask-token drafting
  bool use_mmap = true;     // the draft model is loaded as the target is (the command's --no-mmap)
};
void add_spec_flags(CLI::App* sub, SpecFlags& flags);
// Generates with kestrel_generate_spec (loading the draft model for mode draft)
// and prints the speculation summary. Returns an exit code when it failed
// before generating (usage, draft load), else -1 with the generation's status.
int spec_generate(const SpecFlags& flags, kestrel_context* ctx, const kestrel_context_params& cp, const char* prompt,
                  int32_t n_predict, const kestrel_sampler_params* sp, kestrel_text_fn on_text, void* user,
                  kestrel_status* status);

// --chat-template NAME|FILE (chat.cpp): the contents of FILE when it names a
// readable file, else the argument itself (a built-in name); "" stays "" (the
// model's own). False with a message when FILE exists but cannot be read.
bool chat_template_arg(const std::string& arg, std::string& out, std::string& error);
// Reads a whole file ("-": stdin); false with a message naming it.
bool read_text_file(const std::string& path, std::string& out, std::string& error);

// kestrel run --chat (chat.cpp): the prompt as one user turn of the model's chat
// template (system prompt first when not empty), generated with the context and
// sampler parameters given; text streamed to on_text. Returns the generation's
// status (KESTREL_ERR_CANCELLED when on_text asked to stop); fills the prompt and
// generation fields of timings (may be NULL).
kestrel_status chat_generate_once(kestrel_model* model, kestrel_context* ctx, const std::string& tmpl,
                                  const std::string& system_prompt, const std::string& prompt, int32_t n_predict,
                                  const kestrel_sampler_params& sp, kestrel_text_fn on_text, void* user,
                                  kestrel_timings* timings);

// Parses "1,2,8" into positive ints; false with a message naming the flag.
bool parse_int_list(const std::string& text, const char* flag, std::vector<int>& out, std::string& error);

}  // namespace kcli
