// Matmul kernels that read weights in their stored type.
//
// matmul_direct: one warp per output row n of W, lanes striding over k, up to
// MC activation rows per pass so W is read once per MC rows; accumulation in
// float, warp-shuffle reduction (tree order). Quant blocks are dequantized
// element by element in registers, never to memory. This is the decode path
// (M small) and the fallback for layouts cuBLAS cannot take.
// dequant_rows: expands a chunk of W rows to float in scratch for the cuBLAS
// SGEMM path used when M is large (a bounded tile, not a copy of the model).
#include "ops/cuda/cuda_common.cuh"

namespace kestrel::cuda {
namespace {

constexpr int kRowsPerBlock = 4;  // warps per block, one W row each

template <DType T, int MC>
__global__ void matmul_direct(TV w, TV x, TV y, int64_t m_total) {
  const int lane = threadIdx.x % kWarp;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (n >= w.ne[1]) return;  // whole warp leaves; no block-level sync below
  const int64_t K = w.ne[0];
  const char* wr = w.data + n * w.nb[1];
  for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * MC; m0 < m_total; m0 += static_cast<int64_t>(gridDim.y) * MC) {
    const float* xr[MC];
    float acc[MC];
#pragma unroll
    for (int c = 0; c < MC; ++c) {
      acc[c] = 0.0f;
      xr[c] = m0 + c < m_total ? reinterpret_cast<const float*>(row_ptr(x, m0 + c)) : nullptr;
    }
    for (int64_t k = lane; k < K; k += kWarp) {
      const float wv = load_weight<T>(wr, k);
#pragma unroll
      for (int c = 0; c < MC; ++c)
        if (xr[c]) acc[c] = fmaf(wv, xr[c][k], acc[c]);
    }
#pragma unroll
    for (int c = 0; c < MC; ++c) {
      const float v = warp_sum(acc[c]);
      if (lane == 0 && xr[c]) reinterpret_cast<float*>(row_ptr(y, m0 + c))[n] = v;
    }
  }
}

template <DType T>
__global__ void dequant_rows(TV w, int64_t n0, int64_t n_rows, float* out) {
  const int64_t K = w.ne[0];
  for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
    const char* wr = w.data + (n0 + r) * w.nb[1];
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) out[r * K + k] = load_weight<T>(wr, k);
  }
}

template <DType T>
cudaError_t direct(TV w, TV x, TV y, cudaStream_t s) {
  const int64_t m_total = x.ne[1] * x.ne[2] * x.ne[3];
  const int64_t gx = (w.ne[1] + kRowsPerBlock - 1) / kRowsPerBlock;
  if (m_total == 1) {
    matmul_direct<T, 1><<<dim3(static_cast<unsigned>(gx), 1), kRowsPerBlock * kWarp, 0, s>>>(w, x, y, m_total);
  } else {
    constexpr int kMC = 4;
    const int64_t chunks = (m_total + kMC - 1) / kMC;
    const unsigned gy = static_cast<unsigned>(chunks < 65535 ? chunks : 65535);
    matmul_direct<T, kMC><<<dim3(static_cast<unsigned>(gx), gy), kRowsPerBlock * kWarp, 0, s>>>(w, x, y, m_total);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_matmul_direct(DType wt, TV w, TV x, TV y, cudaStream_t s) {
  if (w.ne[1] == 0 || x.ne[1] * x.ne[2] * x.ne[3] == 0) return cudaSuccess;
  switch (wt) {
    case DType::F32: return direct<DType::F32>(w, x, y, s);
    case DType::F16: return direct<DType::F16>(w, x, y, s);
    case DType::BF16: return direct<DType::BF16>(w, x, y, s);
    case DType::Q8_0: return direct<DType::Q8_0>(w, x, y, s);
    case DType::Q4_0: return direct<DType::Q4_0>(w, x, y, s);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_dequant_rows(DType wt, TV w, int64_t n0, int64_t n_rows, float* out, cudaStream_t s) {
  if (n_rows == 0 || w.ne[0] == 0) return cudaSuccess;
  const unsigned g = static_cast<unsigned>(n_rows < 65535 * 16 ? n_rows : 65535 * 16);
  const unsigned t = row_threads(w.ne[0]);
  switch (wt) {
    case DType::F32: dequant_rows<DType::F32><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::F16: dequant_rows<DType::F16><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::BF16: dequant_rows<DType::BF16><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::Q8_0: dequant_rows<DType::Q8_0><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::Q4_0: dequant_rows<DType::Q4_0><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace kestrel::cuda
