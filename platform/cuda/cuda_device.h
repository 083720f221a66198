// CUDA device discovery and selection.
//
// The only place that asks the CUDA runtime which GPUs exist. A machine
// without a GPU or without a driver is an `unsupported` status, never a crash:
//
//   KESTREL_TRY_ASSIGN(int n, cuda_device_count());   // unsupported when none
//   KESTREL_TRY_ASSIGN(CudaDeviceInfo info, cuda_device_info(0));
//   KESTREL_TRY(cuda_select_device(0));
#pragma once

#include <cstddef>
#include <string>

#include "platform/status.h"

namespace kestrel {

struct CudaDeviceInfo {
  int ordinal = 0;
  std::string name;           // "NVIDIA H100 80GB HBM3"
  int cc_major = 0;           // compute capability, 9.0 for Hopper
  int cc_minor = 0;
  int sm_count = 0;           // streaming multiprocessors
  size_t global_mem_bytes = 0;
  size_t l2_bytes = 0;
  size_t smem_per_block_optin = 0;  // largest dynamic shared memory a block may ask for
};

// Number of usable CUDA devices; `unsupported` ("no CUDA device: ...") when the
// runtime reports none or no driver is installed.
Expected<int> cuda_device_count();
// Properties of device `ordinal`; invalid_argument when out of range.
Expected<CudaDeviceInfo> cuda_device_info(int ordinal);
// Makes `ordinal` current for the calling thread.
Status cuda_select_device(int ordinal);

}  // namespace kestrel
