// Row gathers and row reductions: get_rows (dequantizing table rows), argmax,
// and rope (exact: angles and their sin/cos in double, then rounded).
#include "ops/cuda/cuda_common.cuh"

namespace kestrel::cuda {
namespace {

unsigned grid_for(int64_t nrows) { return static_cast<unsigned>(nrows < 65535 * 16 ? nrows : 65535 * 16); }

// An id outside [0, N) yields zeros (as the cpu kernel): no out-of-bounds read.
template <DType T>
__global__ void get_rows_kernel(TV table, const int32_t* ids, TV y, int64_t n_ids) {
  pdl_wait();
  for (int64_t m = blockIdx.x; m < n_ids; m += gridDim.x) {
    const int64_t id = ids[m];
    float* dst = reinterpret_cast<float*>(y.data + m * y.nb[1]);
    if (id < 0 || id >= table.ne[1]) {
      for (int64_t k = threadIdx.x; k < table.ne[0]; k += blockDim.x) dst[k] = 0.0f;
      continue;
    }
    const char* src = table.data + id * table.nb[1];
    for (int64_t k = threadIdx.x; k < table.ne[0]; k += blockDim.x) dst[k] = load_weight<T>(src, k);
  }
}

// (value, index) with index -1 = nothing seen. NaN never wins; ties go to the
// lower index; a row of -inf (or NaN and -inf) yields the first non-NaN index.
struct ArgBest {
  float v;
  int32_t i;
};
__device__ __forceinline__ ArgBest better(ArgBest a, ArgBest b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}

__global__ void argmax_kernel(TV x, TV y, int64_t nrows, bool strict) {
  pdl_wait();
  __shared__ float sv[32];
  __shared__ int32_t si[32];
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  for (int64_t r = blockIdx.x; r < nrows; r += gridDim.x) {
    const float* xr = reinterpret_cast<const float*>(x.data + r * x.nb[1]);
    ArgBest best{-INFINITY, -1};
    bool finite = true;
    for (int64_t j = threadIdx.x; j < x.ne[0]; j += blockDim.x) {
      const float v = xr[j];
      finite = finite && isfinite(v);
      if (!isnan(v)) best = better(best, ArgBest{v, static_cast<int32_t>(j)});
    }
    finite = __syncthreads_and(finite);
    for (int o = kWarp / 2; o > 0; o >>= 1) {
      ArgBest other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
      best = better(best, other);
    }
    __syncthreads();
    if (lane == 0) { sv[wid] = best.v; si[wid] = best.i; }
    __syncthreads();
    if (wid == 0) {
      best = lane < nw ? ArgBest{sv[lane], si[lane]} : ArgBest{-INFINITY, -1};
      for (int o = kWarp / 2; o > 0; o >>= 1) {
        ArgBest other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
        best = better(best, other);
      }
      if (lane == 0)
        *reinterpret_cast<int32_t*>(y.data + r * y.nb[0]) = strict && !finite ? -1 : best.i < 0 ? 0 : best.i;
    }
  }
}

// x [head_dim, n_head, n_tokens]: one block per (head, token) row.
__global__ void rope_kernel(TV x, const int32_t* pos, TV y, RopeArgs a, int64_t nrows) {
  pdl_wait();
  const int64_t half = a.n_dims / 2;
  for (int64_t r = blockIdx.x; r < nrows; r += gridDim.x) {
    const int64_t t = r / x.ne[1];  // token index (ne[2]); x is 3-D
    const float* xr = reinterpret_cast<const float*>(row_ptr(x, r));
    float* yr = reinterpret_cast<float*>(row_ptr(y, r));
    const double p = static_cast<double>(pos[t]) * static_cast<double>(a.freq_scale);
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      const double theta = p * pow(static_cast<double>(a.theta_base), -2.0 * static_cast<double>(i) / a.n_dims);
      double sn, cs;
      sincos(theta, &sn, &cs);
      const int64_t i0 = a.neox ? i : 2 * i;
      const int64_t i1 = a.neox ? i + half : 2 * i + 1;
      const double x0 = xr[i0], x1 = xr[i1];
      yr[i0] = static_cast<float>(x0 * cs - x1 * sn);
      yr[i1] = static_cast<float>(x0 * sn + x1 * cs);
    }
    for (int64_t i = a.n_dims + threadIdx.x; i < x.ne[0]; i += blockDim.x) yr[i] = xr[i];
  }
}

}  // namespace

cudaError_t launch_get_rows(DType tt, TV table, const int32_t* ids, TV y, cudaStream_t s) {
  const int64_t n_ids = y.ne[1];
  if (n_ids == 0 || table.ne[0] == 0) return cudaSuccess;
  const unsigned g = grid_for(n_ids), t = row_threads(table.ne[0]);
  switch (tt) {
    case DType::F32: (void)launch_k(get_rows_kernel<DType::F32>, g, t, 0, s, table, ids, y, n_ids); break;
    case DType::F16: (void)launch_k(get_rows_kernel<DType::F16>, g, t, 0, s, table, ids, y, n_ids); break;
    case DType::BF16: (void)launch_k(get_rows_kernel<DType::BF16>, g, t, 0, s, table, ids, y, n_ids); break;
    case DType::Q8_0: (void)launch_k(get_rows_kernel<DType::Q8_0>, g, t, 0, s, table, ids, y, n_ids); break;
    case DType::Q4_0: (void)launch_k(get_rows_kernel<DType::Q4_0>, g, t, 0, s, table, ids, y, n_ids); break;
    case DType::Q5_0: (void)launch_k(get_rows_kernel<DType::Q5_0>, g, t, 0, s, table, ids, y, n_ids); break;
    case DType::Q4_K: (void)launch_k(get_rows_kernel<DType::Q4_K>, g, t, 0, s, table, ids, y, n_ids); break;
    case DType::Q5_K: (void)launch_k(get_rows_kernel<DType::Q5_K>, g, t, 0, s, table, ids, y, n_ids); break;
    case DType::Q6_K: (void)launch_k(get_rows_kernel<DType::Q6_K>, g, t, 0, s, table, ids, y, n_ids); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_argmax(TV x, TV y, bool strict, cudaStream_t s) {
  const int64_t nrows = x.ne[1];
  if (nrows == 0) return cudaSuccess;
  (void)launch_k(argmax_kernel, grid_for(nrows), row_threads(x.ne[0]), 0, s, x, y, nrows, strict);
  return cudaGetLastError();
}

cudaError_t launch_rope(TV x, const int32_t* pos, TV y, RopeArgs a, cudaStream_t s) {
  const int64_t nrows = x.ne[1] * x.ne[2] * x.ne[3];
  if (nrows == 0 || x.ne[0] == 0) return cudaSuccess;
  const int64_t work = x.ne[0] > a.n_dims / 2 ? x.ne[0] : a.n_dims / 2;
  (void)launch_k(rope_kernel, grid_for(nrows), row_threads(work), 0, s, x, pos, y, a, nrows);
  return cudaGetLastError();
}

}  // namespace kestrel::cuda
