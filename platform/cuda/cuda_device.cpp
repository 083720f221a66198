#include "platform/cuda/cuda_device.h"

#include <cuda_runtime_api.h>

#include "platform/cuda/cuda_status.h"

namespace kestrel {

Expected<int> cuda_device_count() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    // Clear the sticky-free error so later runtime calls start clean.
    (void)cudaGetLastError();
    return Status::unsupported("no CUDA device: %s", cudaGetErrorName(err));
  }
  if (n <= 0) return Status::unsupported("no CUDA device: the runtime reports 0 devices");
  return n;
}

Expected<CudaDeviceInfo> cuda_device_info(int ordinal) {
  KESTREL_TRY_ASSIGN(const int n, cuda_device_count());
  if (ordinal < 0 || ordinal >= n)
    return Status::invalid_argument("CUDA device %d out of range (%d devices)", ordinal, n);
  cudaDeviceProp p{};
  KESTREL_TRY(cuda_check(cudaGetDeviceProperties(&p, ordinal), "cudaGetDeviceProperties"));
  CudaDeviceInfo info;
  info.ordinal = ordinal;
  info.name = p.name;
  info.cc_major = p.major;
  info.cc_minor = p.minor;
  info.sm_count = p.multiProcessorCount;
  info.global_mem_bytes = p.totalGlobalMem;
  info.l2_bytes = static_cast<size_t>(p.l2CacheSize);
  info.smem_per_block_optin = p.sharedMemPerBlockOptin;
  return info;
}

Status cuda_select_device(int ordinal) {
  KESTREL_TRY_ASSIGN(const int n, cuda_device_count());
  if (ordinal < 0 || ordinal >= n)
    return Status::invalid_argument("CUDA device %d out of range (%d devices)", ordinal, n);
  return cuda_check(cudaSetDevice(ordinal), "cudaSetDevice");
}

}  // namespace kestrel
