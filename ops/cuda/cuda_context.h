// What the CUDA backend's op implementations share: device, stream, cuBLAS
// handle and a growable device scratch area, and the dispatch from an OpCall
// to its kernel launch. Internal to ops/cuda.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <vector>

#include "ops/cuda/cuda_kernels.h"
#include "ops/cuda/cuda_residency.h"
#include "ops/op_table.h"
#include "platform/status.h"

namespace kestrel::cuda {

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  void* scratch = nullptr;
  size_t scratch_size = 0;
  // Areas scratch grew out of: captured graphs of earlier plans may still use
  // them, so they are freed only by release().
  std::vector<void*> retired;
  void* cublas_workspace = nullptr;
  Residency resident;  // weights and step memory kept across plans
  bool graphs = true;  // prepared plans replay their step as a CUDA graph
  bool exact_f16_x = false;  // F16-weight GEMMs on x as hi + lo (BackendOptions)
  AttnSplitWs attn_ws;       // split decode attention's workspace (one allocation, counters zeroed)

  // Device scratch of at least `bytes`, grown on demand (never shrunk, never
  // moved under a prepared plan: the old area is retired, not freed).
  Expected<void*> get_scratch(size_t bytes);
  void release();
};

// A device view of a tensor (data, element counts, byte strides).
TV view(const Tensor& t);

bool matmul_supported(const OpCall& call);
Status run_matmul(Context& ctx, const OpCall& call);
// True when run_matmul takes the 8-bit activation path for the call: x is
// quantized into the scratch area first, and a following such call on the
// same x (nothing else touches the scratch in between) may skip that with
// run_matmul_quantized_x().
bool matmul_quantizes_x(const OpCall& call);
// True when run_matmul takes the warp-per-row matvec (matvec.h) for the call:
// a plan may then launch it together with neighbours on the same x.
bool matmul_uses_matvec(const OpCall& call);
Status run_matmul_quantized_x(Context& ctx, const OpCall& call);
// Device scratch run_matmul asks for (0 unless it dequantizes W for cuBLAS).
size_t matmul_scratch_bytes(const OpCall& call);

// Enqueues one op on ctx.stream. The call has passed validate_op() and the
// backend's supports(), and every tensor is device memory of ctx.device (the
// current device): nothing is checked, synchronized or read back here, so a
// plan's step is a run of these. Allocates only when the scratch area is
// smaller than dispatch_scratch_bytes(call) (a prepared plan reserves it).
Status dispatch(Context& ctx, const OpCall& call);
// Device scratch dispatch(call) needs.
size_t dispatch_scratch_bytes(const OpCall& call);

}  // namespace kestrel::cuda
