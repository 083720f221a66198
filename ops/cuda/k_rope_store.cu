// rope of q and k in place and the step's K / V rows into their cache cells,
// in one kernel: what a plan's four nodes rope(q), rope(k), set_rows(K cache
// <- k), set_rows(V cache <- v) do, bitwise (the same double-precision angles
// and rotation as rope_kernel, the same conversion to the cache type as
// set_rows_kernel, the same rule for repeated cells: the last row wins).
//
// One block per token: its rotation angles are computed once into shared
// memory and used by every q and k head (the separate kernels compute them
// per head row).
#include <algorithm>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/rope_store.h"

namespace kestrel::cuda {
namespace {

constexpr int kThreads = 256;

template <DType YT>
__device__ __forceinline__ void store(char* row, int64_t i, float v) {
  if constexpr (YT == DType::F32) reinterpret_cast<float*>(row)[i] = v;
  else if constexpr (YT == DType::F16) reinterpret_cast<__half*>(row)[i] = __float2half_rn(v);
  else reinterpret_cast<__nv_bfloat16*>(row)[i] = __float2bfloat16_rn(v);
}

// Rotates pair i of row r (in place) and returns the two results.
__device__ __forceinline__ float2 rotate(float* r, int64_t i, int64_t half, bool neox, double cs, double sn) {
  const int64_t i0 = neox ? i : 2 * i;
  const int64_t i1 = neox ? i + half : 2 * i + 1;
  const double x0 = r[i0], x1 = r[i1];
  const float y0 = static_cast<float>(x0 * cs - x1 * sn);
  const float y1 = static_cast<float>(x0 * sn + x1 * cs);
  r[i0] = y0;
  r[i1] = y1;
  return make_float2(y0, y1);
}

template <DType YT>
__global__ void rope_store_kernel(TV q, TV k, TV v, const int32_t* pos, const int32_t* rows, TV kc, TV vc, RopeArgs a,
                                  int64_t M) {
  __shared__ double cs[kRopeStoreMaxPairs], sn[kRopeStoreMaxPairs];
  pdl_wait();
  const int64_t D = q.ne[0], Hq = q.ne[1], Hkv = k.ne[1], half = a.n_dims / 2;
  const bool neox = a.neox != 0;
  // Blocks along y share a token's elements (each computes the token's angles).
  const int64_t t0 = threadIdx.x + static_cast<int64_t>(blockIdx.y) * blockDim.x;
  const int64_t tn = static_cast<int64_t>(blockDim.x) * gridDim.y;
  for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
    const double p = static_cast<double>(pos[m]) * static_cast<double>(a.freq_scale);
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      const double theta = p * pow(static_cast<double>(a.theta_base), -2.0 * static_cast<double>(i) / a.n_dims);
      sincos(theta, &sn[i], &cs[i]);
    }
    // The cell of this row, unless out of range or a later row names it too
    // (the later rows scanned by the block's threads together).
    const int32_t id = rows[m];
    bool later = false;
    for (int64_t j = m + 1 + threadIdx.x; j < M && !later; j += blockDim.x) later = rows[j] == id;
    const bool keep = id >= 0 && id < kc.ne[1] && !__syncthreads_or(later);
    char* krow = keep ? kc.data + static_cast<int64_t>(id) * kc.nb[1] : nullptr;
    char* vrow = keep ? vc.data + static_cast<int64_t>(id) * vc.nb[1] : nullptr;
    __syncthreads();
    for (int64_t e = t0; e < Hq * half; e += tn) {
      const int64_t h = e / half, i = e % half;
      rotate(reinterpret_cast<float*>(q.data + h * q.nb[1] + m * q.nb[2]), i, half, neox, cs[i], sn[i]);
    }
    for (int64_t e = t0; e < Hkv * half; e += tn) {
      const int64_t h = e / half, i = e % half;
      const float2 y = rotate(reinterpret_cast<float*>(k.data + h * k.nb[1] + m * k.nb[2]), i, half, neox, cs[i], sn[i]);
      if (krow) {
        store<YT>(krow, h * D + (neox ? i : 2 * i), y.x);
        store<YT>(krow, h * D + (neox ? i + half : 2 * i + 1), y.y);
      }
    }
    if (krow) {
      // Dimensions past n_dims pass through rope unchanged.
      const int64_t tail = D - a.n_dims;
      for (int64_t e = t0; e < Hkv * tail; e += tn) {
        const int64_t h = e / tail, i = a.n_dims + e % tail;
        store<YT>(krow, h * D + i, reinterpret_cast<const float*>(k.data + h * k.nb[1] + m * k.nb[2])[i]);
      }
      const float* vr = reinterpret_cast<const float*>(v.data + m * v.nb[1]);
      for (int64_t e = t0; e < v.ne[0]; e += tn) store<YT>(vrow, e, vr[e]);
    }
    __syncthreads();  // cs / sn are rewritten for the next token
  }
}

}  // namespace

cudaError_t launch_rope_store(TV q, TV k, TV v, const int32_t* pos, const int32_t* rows, DType kv_type, TV kc, TV vc,
                              RopeArgs a, cudaStream_t s) {
  const int64_t M = q.ne[2];
  if (M == 0) return cudaSuccess;
  if (a.n_dims / 2 > kRopeStoreMaxPairs) return cudaErrorInvalidValue;
  // Few tokens (decode): the heads of a token over several blocks.
  const int64_t per_token = q.ne[1] * (a.n_dims / 2);
  const unsigned gy = M >= 64 ? 1u : static_cast<unsigned>(std::min<int64_t>(8, (per_token + kThreads - 1) / kThreads));
  const dim3 g(static_cast<unsigned>(M < 65535 * 16 ? M : 65535 * 16), gy < 1 ? 1u : gy);
  switch (kv_type) {
    case DType::F32: return launch_k(rope_store_kernel<DType::F32>, g, kThreads, 0, s, q, k, v, pos, rows, kc, vc, a, M);
    case DType::F16: return launch_k(rope_store_kernel<DType::F16>, g, kThreads, 0, s, q, k, v, pos, rows, kc, vc, a, M);
    case DType::BF16:
      return launch_k(rope_store_kernel<DType::BF16>, g, kThreads, 0, s, q, k, v, pos, rows, kc, vc, a, M);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace kestrel::cuda
