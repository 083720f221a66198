// --trace-steps FILE (run, serve): one "N out" line per micro-batch the context
// runs (the rows every weight-bearing matmul saw, and those that kept logits),
// the format bench_sched_trace --trace-file replays. Draft contexts are not
// traced: detach() the params they are made from.
//
//   add_step_trace_flag(sub, o.trace_steps);
//   StepTraceFile trace;   // outlives the context
//   if (!trace.attach(o.trace_steps, &cp, &err)) return usage_error(err);
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <kestrel/kestrel.h>

namespace kcli {

void add_step_trace_flag(CLI::App* sub, std::string& path);

class StepTraceFile {
 public:
  // Opens path (truncated) and points cp's step callback at it; nothing for an
  // empty path. False when the file cannot be written (*err says why).
  bool attach(const std::string& path, kestrel_context_params* cp, std::string* err);
  static void detach(kestrel_context_params* cp) {
    cp->step_callback = nullptr;
    cp->step_user_data = nullptr;
  }

 private:
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file_{nullptr, std::fclose};
};

}  // namespace kcli
