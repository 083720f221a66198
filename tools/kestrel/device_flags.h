// --device cpu|cuda|auto and --sched static|dynamic (device_flags.cpp), shared
// by run, bench and perplexity. cuda and auto use the GPU backend when this CLI was built with
// it (KESTREL_CUDA=ON links kestrel::cuda into it); auto falls back to the cpu
// when there is no GPU backend or no GPU, cuda fails with a message.
//
//   DeviceFlags dev;
//   add_device_flags(sub, dev);
//   apply_device_flags(dev, &cp);
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <kestrel/kestrel.h>

namespace kcli {

struct DeviceFlags {
  std::string device = "auto";
  bool no_graphs = false;
  int n_gpu_layers = -1;
  bool exact_f16 = false;
  std::string sched = "static";  // KESTREL_SCHED_STATIC / _DYNAMIC
};

void add_device_flags(CLI::App* sub, DeviceFlags& flags);
void apply_device_flags(const DeviceFlags& flags, kestrel_context_params* cp);

}  // namespace kcli
