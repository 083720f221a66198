#include "step_trace.h"

#include <cerrno>
#include <cstring>

namespace kcli {

void add_step_trace_flag(CLI::App* sub, std::string& path) {
  sub->add_option("--trace-steps", path,
                  "write one line per micro-batch, \"N out\" (its tokens, those that kept logits), to this file: "
                  "a trace of the rows each step's matmuls saw, for bench_sched_trace --trace-file");
}

bool StepTraceFile::attach(const std::string& path, kestrel_context_params* cp, std::string* err) {
  if (path.empty()) return true;
  file_.reset(std::fopen(path.c_str(), "w"));
  if (!file_) {
    *err = "--trace-steps: cannot write " + path + ": " + std::strerror(errno);
    return false;
  }
  cp->step_callback = [](void* user, int32_t n_tokens, int32_t n_outputs) {
    std::fprintf(static_cast<std::FILE*>(user), "%d %d\n", n_tokens, n_outputs);
  };
  cp->step_user_data = file_.get();
  return true;
}

}  // namespace kcli
