// Whether kernel launches ask for programmatic dependent launch (see
// launch_k in cuda_common.cuh): per device, from its compute capability.
// KESTREL_CUDA_PDL (read once): unset or 1 on, 0 off, "all" on for the
// float-weight matvecs too. On an H100 (TinyLlama shape, tg128, medians of 3,
// one binary) it gave Q4_0 1008 -> 1083 t/s, Q8_0 871 -> 926, Q4_K_M 841 ->
// 898 and F16 663 -> 648 (slower): float-weight matvecs launch plainly.
// Its first form, the trigger before the wait, had measured 705 -> 540 (Q4_0).
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "ops/cuda/cuda_kernels.h"

namespace kestrel::cuda {
namespace {

constexpr int kMaxDevices = 64;
std::atomic<int> g_capable[kMaxDevices];  // 0 unknown, 1 no, 2 yes
const char* pdl_env() {
  const char* e = std::getenv("KESTREL_CUDA_PDL");
  return e ? e : "1";
}
std::atomic<bool> g_enabled{std::strcmp(pdl_env(), "0") != 0};
const bool g_float_matvecs = std::strcmp(pdl_env(), "all") == 0;

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

bool programmatic_float_matvecs() { return g_float_matvecs && programmatic_launch(); }

void set_programmatic_launch(bool on) { g_enabled.store(on, std::memory_order_relaxed); }

}  // namespace kestrel::cuda
