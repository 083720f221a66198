// Kronecker-sparse matmul on the GPU (ks_matmul, see ops/op_table.h): the tiled
// kernel of k_ks_matmul.cu, its tile configurations, and the tuner that picks one per
// shape (cuda_ks_tuner.cpp). The op-level entry (an OpCall on the backend's stream) is
// in cuda_ks_op.h; this header is plain C++17 so that bench/ device programs can use it.
//
//   KsArgs k{w, w_nb1, w_nb2, w_nb3, x, y, x_ld, y_ld, a, b, c, d, M, batch_last, DType::BF16};
//   int config = 0;
//   cudaError_t e = ks_pick_config(k, stream, &config);   // tunes once per shape and device
//   if (e == cudaSuccess) e = launch_ks_matmul(k, config, stream);
//
// Two kinds of configuration. CUDA-core tiles (F32, F16, BF16 weights): each output is the
// same F32 fma chain over the inputs in order, x used as F32. Tensor-core tiles (BF16
// weights only, k_ks_matmul_mma.cu): x rounded to BF16 on its way into shared memory,
// BF16 products accumulated in F32, |y - y_f32| <= (2^-8 + c * 2^-22) * sum_l |w_l x_l|.
// The tuner times only the kind fixed by the weight type (tensor cores for BF16, CUDA
// cores otherwise), and within a kind every configuration gives the same bits: the
// choice changes the speed, never the result.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "ops/dtype.h"

namespace kestrel::cuda {

// One factor y = K x of pattern (a, b, c, d) over M tokens; pointers are device memory.
struct KsArgs {
  const void* w = nullptr;  // weights {b, c, d, a}, elements contiguous along b
  size_t w_nb1 = 0, w_nb2 = 0, w_nb3 = 0;  // weight strides in bytes (l, j, i)
  const float* x = nullptr;
  float* y = nullptr;
  int64_t x_ld = 0, y_ld = 0;  // row strides of x and y in floats
  int32_t a = 1, b = 1, c = 1, d = 1;
  int64_t M = 0;            // tokens
  bool batch_last = false;  // false: token_major (one row per token); true: one row per feature
  DType wt = DType::F32;    // F32 | F16 | BF16
};

// Tile configurations: index 0 .. ks_config_count() - 1, CUDA-core ones first.
int ks_config_count();
// "BMxBNxBK/TMxTN" (CUDA cores: outputs x tokens x inputs per block tile, outputs x tokens
// per thread) or "mma BMxBN/WMxWN" (tensor cores: block tile, warps along each side).
const char* ks_config_name(int config);
// Whether the configuration uses tensor cores (rounds x to BF16).
bool ks_config_tensor_cores(int config);
// Whether launch_ks_matmul runs this configuration with weights of type wt (tensor-core
// ones: BF16 only).
bool ks_config_runs(int config, DType wt);
// Whether the tuner times this configuration for this shape: the kind of the weight type
// (see above) and a tile that fits the shape (all are correct for any shape).
bool ks_config_candidate(int config, const KsArgs& k);
// The configuration used without tuning (shapes not yet timed, and inside a graph capture).
int ks_heuristic_config(const KsArgs& k);
// Enqueues the kernel; cudaErrorInvalidValue for a bad config (or one that does not run
// wt) or a grid past 2^31 - 1 blocks. M == 0 launches nothing.
cudaError_t launch_ks_matmul(const KsArgs& k, int config, cudaStream_t s);

// The configuration for k's shape on the current device: from the in-memory cache; else,
// outside a stream capture, every candidate is timed on k's own tensors (y is written,
// x and w are only read) and the fastest is cached; during a capture, the heuristic.
// Tuning synchronizes the stream.
cudaError_t ks_pick_config(const KsArgs& k, cudaStream_t s, int* config);

}  // namespace kestrel::cuda
