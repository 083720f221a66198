// softmax: one block per row, three passes over the row (max, sum of exp,
// write), recomputing the scaled / capped / masked logit each pass instead of
// storing it. exp of (logit - max) through the op's exp tier (ops/cuda/cuda_exp.cuh:
// expf, max 2 ulp, on the exact tier, not __expf). A row whose every key is
// masked (max = -inf) is written as zeros, as the op contract says.
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_exp.cuh"

namespace kestrel::cuda {
namespace {

struct RowCtx {
  const float* x;
  const float* m;  // null without mask
  int64_t q;       // query position for causal / window
};

__device__ __forceinline__ float logit(const RowCtx& c, const SoftmaxArgs& a, int64_t j) {
  if (a.causal && j > c.q) return -INFINITY;
  if (a.window > 0 && c.q - j >= a.window) return -INFINITY;
  float v = c.x[j] * a.scale;
  if (a.soft_cap > 0.0f) v = a.soft_cap * tanhf(v / a.soft_cap);
  if (c.m) v += c.m[j];
  return v;
}

template <ExpTier T>
__global__ void softmax_f32(TV x, TV mask, TV y, SoftmaxArgs a, int64_t nrows) {
  __shared__ float scratch[32];
  const int64_t n = x.ne[0];
  for (int64_t r = blockIdx.x; r < nrows; r += gridDim.x) {
    RowCtx c;
    c.x = reinterpret_cast<const float*>(row_ptr(x, r));
    // The mask is [n, rows] over a 2-D input: its row index is r itself.
    c.m = mask.data ? reinterpret_cast<const float*>(mask.data + r * mask.nb[1]) : nullptr;
    c.q = static_cast<int64_t>(a.pos_offset) + r % x.ne[1];
    float* yr = reinterpret_cast<float*>(row_ptr(y, r));

    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, logit(c, a, j));
    mx = block_max(mx, scratch);
    if (mx == -INFINITY) {
      __syncthreads();  // all threads must read the logits before y (in place) is written
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = 0.0f;
      __syncthreads();
      continue;
    }
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) sum += exp_scaled<T>(logit(c, a, j) - mx, 1.0);
    sum = block_sum(sum, scratch);
    const float inv = 1.0f / sum;
    // In place: each element is read and written by the same thread in this
    // last pass, and the two earlier passes are complete (block_sum syncs).
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = exp_scaled<T>(logit(c, a, j) - mx, 1.0) * inv;
    __syncthreads();
  }
}

}  // namespace

cudaError_t launch_softmax(TV x, TV mask, TV y, SoftmaxArgs a, cudaStream_t s) {
  const int64_t nrows = x.ne[1] * x.ne[2] * x.ne[3];
  if (nrows == 0 || x.ne[0] == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(nrows < 65535 * 16 ? nrows : 65535 * 16);
  with_tier(a.exp, [&](auto tc) {
    softmax_f32<decltype(tc)::value><<<grid, row_threads(x.ne[0]), 0, s>>>(x, mask, y, a, nrows);
  });
  return cudaGetLastError();
}

}  // namespace kestrel::cuda
