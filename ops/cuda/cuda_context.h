// What the CUDA backend's op implementations share: device, stream, cuBLAS
// handle and a growable device scratch area. Internal to ops/cuda.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "ops/cuda/cuda_kernels.h"
#include "ops/op_table.h"
#include "platform/status.h"

namespace kestrel::cuda {

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  void* scratch = nullptr;
  size_t scratch_size = 0;

  // Device scratch of at least `bytes`, grown on demand (never shrunk); the
  // previous area is freed only after the stream has drained.
  Expected<void*> get_scratch(size_t bytes);
  void release();
};

// A device view of a tensor (data, element counts, byte strides).
TV view(const Tensor& t);

bool matmul_supported(const OpCall& call);
Status run_matmul(Context& ctx, const OpCall& call);

}  // namespace kestrel::cuda
