// Whether kernel launches ask for programmatic dependent launch (see
// launch_k in cuda_common.cuh): per device, from its compute capability.
// Off unless KESTREL_CUDA_PDL=1 is in the environment: on an H100 it made the
// decode step slower (TinyLlama-shape Q4_0 tg128 540 t/s with it, 705 without;
// the early trigger lets the next grid's blocks sit on the SMs while they wait).
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "ops/cuda/cuda_kernels.h"

namespace kestrel::cuda {
namespace {

constexpr int kMaxDevices = 64;
std::atomic<int> g_capable[kMaxDevices];  // 0 unknown, 1 no, 2 yes
bool enabled_by_env() {
  const char* e = std::getenv("KESTREL_CUDA_PDL");
  return e && std::strcmp(e, "1") == 0;
}
std::atomic<bool> g_enabled{enabled_by_env()};

}  // namespace

bool programmatic_launch() {
  if (!g_enabled.load(std::memory_order_relaxed)) return false;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) {
    (void)cudaGetLastError();
    return false;
  }
  int c = g_capable[dev].load(std::memory_order_relaxed);
  if (c == 0) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      major = 0;
    }
    c = major >= 9 ? 2 : 1;
    g_capable[dev].store(c, std::memory_order_relaxed);
  }
  return c == 2;
}

void set_programmatic_launch(bool on) { g_enabled.store(on, std::memory_order_relaxed); }

}  // namespace kestrel::cuda
