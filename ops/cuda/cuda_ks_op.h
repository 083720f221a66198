// ks_matmul as an op of the cuda backend: the support test and the launch of one
// validated OpCall (the kernel and tuner are in cuda_ks.h). Internal to ops/cuda.
//
//   if (ks_matmul_supported(call)) KESTREL_TRY(run_ks_matmul(call, stream));
#pragma once

#include <cuda_runtime_api.h>

#include "ops/op_table.h"
#include "platform/status.h"

namespace kestrel::cuda {

// F32 | F16 | BF16 weights with contiguous elements along b, F32 x and y with
// contiguous elements (row strides free): every call validate_op() accepts otherwise.
bool ks_matmul_supported(const OpCall& call);
// Picks the tile (tuning a new shape first, see ks_pick_config) and enqueues the kernel.
Status run_ks_matmul(const OpCall& call, cudaStream_t s);

}  // namespace kestrel::cuda
