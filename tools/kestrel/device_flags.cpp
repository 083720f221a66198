#include "device_flags.h"

#ifdef KESTREL_CLI_CUDA
#include <kestrel/kestrel_cuda.h>
#endif

namespace kcli {

void add_device_flags(CLI::App* sub, DeviceFlags& flags) {
  sub->add_option("--device", flags.device,
                  "where the model runs: cpu, cuda (weights, KV cache and every step on the GPU) or auto (the GPU "
                  "when this build has the CUDA backend and a GPU is present)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  sub->add_flag("--no-graphs", flags.no_graphs, "cuda: launch each step's kernels one by one instead of replaying a graph");
  sub->add_option("--n-gpu-layers", flags.n_gpu_layers,
                  "cuda (-ngl N): layers on the GPU, the last ones; more than the model's layers (or -1): the whole model; "
                  "fewer keep the embedding, the first layers and the output head on the cpu")
      ->check(CLI::Range(-1, 1 << 20))
      ->capture_default_str();
  sub->add_flag("--exact-f16", flags.exact_f16,
                "cuda: prompt GEMMs on F16 weights keep ~22 bits of the activations (two tensor-core passes) "
                "instead of rounding them to F16");
  sub->add_option("--sched", flags.sched,
                  "cpu matmul kernels and threads: static (fixed row thresholds) or dynamic (per step, the candidate "
                  "that wins at the step's rows in this machine's calibration, measured on first use and cached; "
                  "see kestrel calibrate). Same outputs either way")
      ->check(CLI::IsMember({"static", "dynamic"}))
      ->capture_default_str();
}

void apply_device_flags(const DeviceFlags& flags, kestrel_context_params* cp) {
  cp->device = flags.device == "cuda"   ? KESTREL_DEVICE_CUDA
               : flags.device == "auto" ? KESTREL_DEVICE_AUTO
                                        : KESTREL_DEVICE_CPU;
#ifdef KESTREL_CLI_CUDA
  cp->gpu_backend = kestrel_backend_cuda();
#endif
  cp->gpu_graphs = flags.no_graphs ? 0 : 1;
  cp->n_gpu_layers = flags.n_gpu_layers;
  cp->gpu_exact_f16 = flags.exact_f16 ? 1 : 0;
  cp->sched = flags.sched == "dynamic" ? KESTREL_SCHED_DYNAMIC : KESTREL_SCHED_STATIC;
}

}  // namespace kcli
