// The tensor-core kernel of ks_matmul for BF16 weights (k_ks_matmul_mma.cu): its tile
// configurations, numbered 0 .. ks_mma_config_count() - 1 here and placed after the
// CUDA-core ones in cuda_ks.h's numbering. Internal to ops/cuda (k_ks_matmul.cu calls it).
//
//   if (k.wt == DType::BF16) e = launch_ks_matmul_mma(k, ks_mma_heuristic_config(k), stream);
#pragma once

#include <cuda_runtime_api.h>

#include "ops/cuda/cuda_ks.h"

namespace kestrel::cuda {

int ks_mma_config_count();
// "mma BMxBN/WMxWN": outputs x tokens per block tile, warps along outputs x tokens.
const char* ks_mma_config_name(int config);
// Tile-size filter as for the CUDA-core tiles (every configuration is correct for any shape).
bool ks_mma_config_candidate(int config, const KsArgs& k);
int ks_mma_heuristic_config(const KsArgs& k);
// k.wt must be BF16 (cudaErrorInvalidValue otherwise, and for a bad config or grid).
cudaError_t launch_ks_matmul_mma(const KsArgs& k, int config, cudaStream_t s);

}  // namespace kestrel::cuda
