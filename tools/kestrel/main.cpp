// kestrel: run, chat, bench, tokenize, inspect and convert models from the command
// line, in llama.cpp's dialect (-m -p -n -c -t -tb -s --temp --top-k ...).
#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#include "cli.h"

namespace kcli {

namespace {
std::atomic<int> g_sigint_count{0};

void on_sigint(int) {
  if (g_sigint_count.fetch_add(1) >= 1) _exit(kExitInterrupted);
}

struct LoadProgress {
  bool show;
  int last_percent;
};

int progress_cb(float fraction, void* user) {
  auto* p = static_cast<LoadProgress*>(user);
  if (p->show) {
    const int pct = static_cast<int>(fraction * 100.0f);
    if (pct != p->last_percent) {
      std::fprintf(stderr, "\rkestrel: loading %3d%%", pct);
      p->last_percent = pct;
    }
  }
  return stop_requested() ? 0 : 1;
}
}  // namespace

int exit_code_for(kestrel_status s) {
  switch (s) {
    case KESTREL_OK:
      return kExitOk;
    case KESTREL_ERR_INVALID_ARGUMENT:
    case KESTREL_ERR_BAD_FILE:
    case KESTREL_ERR_UNSUPPORTED:
    case KESTREL_ERR_IO:
    case KESTREL_ERR_TOO_LONG:
      return kExitUsage;
    case KESTREL_ERR_CANCELLED:
      return kExitInterrupted;
    default:
      return kExitRuntime;
  }
}

int report(kestrel_status s, const std::string& what, const void* handle) {
  const char* msg = kestrel_last_error(handle);
  std::fprintf(stderr, "kestrel: %s: %s: %s\n", what.c_str(), kestrel_status_name(s), msg && *msg ? msg : "(no message)");
  return exit_code_for(s);
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "kestrel: error: %s\n", message.c_str());
  return kExitUsage;
}

void install_signal_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: a write blocked on a full stdout pipe resumes after the first
  // Ctrl-C instead of failing with EINTR, which would read as a reader gone away
  // (exit 0, no summary); the run then stops after that token as documented.
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

bool stop_requested() { return g_sigint_count.load() > 0; }
void clear_stop_request() { g_sigint_count.store(0); }

int load_model(const std::string& path, kestrel_model_params params, kestrel_model** out) {
  LoadProgress progress{isatty(STDERR_FILENO) != 0, -1};
  params.progress = progress_cb;
  params.progress_user_data = &progress;
  const kestrel_status s = kestrel_model_load(path.c_str(), &params, out);
  if (progress.show && progress.last_percent >= 0) std::fputc('\n', stderr);
  if (s == KESTREL_ERR_CANCELLED && stop_requested()) {
    std::fprintf(stderr, "kestrel: interrupted while loading\n");
    return kExitInterrupted;
  }
  if (s != KESTREL_OK) return report(s, "cannot load model", nullptr);
  return kExitOk;
}

bool parse_int_list(const std::string& text, const char* flag, std::vector<int>& out, std::string& error) {
  out.clear();
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    errno = 0;
    char* end = nullptr;
    const long v = item.empty() ? 0 : std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE || v < 1 || v > 1024) {
      error = std::string(flag) + ": '" + item + "' is not a positive integer (1..1024)";
      return false;
    }
    out.push_back(static_cast<int>(v));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return true;
}

}  // namespace kcli

int main(int argc, char** argv) {
  // llama.cpp's multi-letter single-dash flags, which CLI11 cannot declare.
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "-tb") args[i] = "--threads-batch";
    else if (args[i].rfind("-tb=", 0) == 0) args[i] = "--threads-batch=" + args[i].substr(4);
    else if (args[i] == "-md") args[i] = "--model-draft";
    else if (args[i] == "-sys") args[i] = "--system-prompt";
    else if (args[i] == "-np") args[i] = "--parallel";
    else if (args[i] == "-ngl") args[i] = "--n-gpu-layers";
    else if (args[i].rfind("-ngl=", 0) == 0) args[i] = "--n-gpu-layers=" + args[i].substr(5);
  }
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());

  CLI::App app{"kestrel: run, benchmark and inspect LLMs on the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("kestrel ") + kestrel_version());
  std::vector<kcli::Command> commands = {kcli::add_run(app), kcli::add_bench(app), kcli::add_tokenize(app),
                                         kcli::add_inspect(app), kcli::add_convert(app), kcli::add_perplexity(app), kcli::add_quantize(app),
                                         kcli::add_ks_factorize(app), kcli::add_chat(app), kcli::add_template(app),
                                         kcli::add_calibrate(app)};
#ifdef KESTREL_CLI_SERVE
  commands.push_back(kcli::add_serve(app));
#endif
  if (args.size() > 1 && !args[1].empty() && args[1][0] != '-') {
    bool known = false;
    for (const auto& c : commands) known = known || c.app->get_name() == args[1];
    if (!known)
      return kcli::usage_error("unknown command '" + args[1] + "' (run, chat, template, serve, bench, tokenize, inspect, convert, perplexity, quantize, ks-factorize)");
  }
  try {
    app.parse(static_cast<int>(cargs.size()), cargs.data());
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "kestrel: error: %s\n", e.what());
    std::fprintf(stderr, "Run with --help for usage.\n");
    return kcli::kExitUsage;
  }
  kcli::install_signal_handlers();
  for (auto& c : commands)
    if (c.app->parsed()) {
      try {
        return c.action();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "kestrel: error: %s\n", e.what());
        return kcli::kExitRuntime;
      }
    }
  return kcli::kExitUsage;
}
