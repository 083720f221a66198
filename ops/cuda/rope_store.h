// rope of a step's q and k (in place) with the K / V rows stored into their
// cache cells, in one kernel (k_rope_store.cu): the four plan nodes
// rope(q), rope(k), set_rows(K cache <- k), set_rows(V cache <- v) of an
// attention layer, bitwise their result.
//
//   launch_rope_store(view(q3), view(k3), view(v), pos, rows, DType::F16,
//                     view(k_cache_rows), view(v_cache_rows), rope_args, stream);
//
// q [D, Hq, M], k [D, Hkv, M] (F32, each token's heads contiguous: k's
// memory is the K rows [D * Hkv, M] that the cache receives), v [D * Hkv, M];
// kc / vc [D * Hkv, n_cells] of kv_type (F32 | F16 | BF16); pos, rows [M]
// (rows outside [0, n_cells) store nothing).
#pragma once

#include "ops/cuda/cuda_kernels.h"

namespace kestrel::cuda {

// Rotated pairs per head the kernel holds (n_dims / 2).
constexpr int64_t kRopeStoreMaxPairs = 256;

cudaError_t launch_rope_store(TV q, TV k, TV v, const int32_t* pos, const int32_t* rows, DType kv_type, TV kc, TV vc,
                              RopeArgs a, cudaStream_t s);

}  // namespace kestrel::cuda
