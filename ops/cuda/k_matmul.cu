// Matmul kernels that read weights in their stored type.
//
// matmul_direct: one block of kSplitWarps warps per output row n of W, threads
// striding over k, up to MC activation rows per pass so W is read once per MC
// rows; accumulation in float, warp-shuffle then shared-memory reduction. Quant blocks are dequantized
// element by element in registers, never to memory. This is the decode path
// (M small) and the fallback for layouts cuBLAS cannot take. Q8_0 / Q4_0 use
// matmul_quad, the same scheme four weights per lane step.
// dequant_rows: expands a chunk of W rows to float (or F16) in scratch for the
// cuBLAS path used when M is large (a bounded tile, not a copy of the model).
#include "ops/cuda/cuda_common.cuh"

namespace kestrel::cuda {
namespace {

constexpr int kThreads = kSplitWarps * kWarp;  // one W row per block

template <DType T, int MC>
__global__ void matmul_direct(TV w, TV x, TV y, int64_t m_total) {
  const int64_t n = blockIdx.x;
  if (n >= w.ne[1]) return;  // the whole block leaves
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
    for (int64_t k = threadIdx.x; k < K; k += kThreads) {
      const float wv = load_weight<T>(wr, k);
#pragma unroll
      for (int c = 0; c < MC; ++c)
        if (xr[c]) acc[c] = fmaf(wv, xr[c][k], acc[c]);
    }
    store_row_sums<MC>(acc, xr, y, m0, n);
  }
}

// Four consecutive weights k = 4q .. 4q+3 of a Q8_0 / Q4_0 row (one block
// holds 8 such quads). The quants sit 2 bytes into an 18 / 34-byte block, so
// they are read as two 16-bit loads (the only width the layout guarantees).
template <DType T>
__device__ __forceinline__ void load_quad(const char* row, int64_t q, float w[4]) {
  const int64_t b = q / 8;
  const int j = static_cast<int>(q % 8) * 4;
  const char* blk = row + b * static_cast<int64_t>(T == DType::Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0));
  const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk));
  const uint16_t* p = reinterpret_cast<const uint16_t*>(blk + 2 + (T == DType::Q8_0 ? j : (j & 15)));
  const uint32_t u = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 16);
  if constexpr (T == DType::Q8_0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = d * static_cast<float>(static_cast<int8_t>(u >> (8 * i)));
  } else {  // element j < 16: low nibbles of bytes j..j+3; j >= 16: high nibbles of bytes j-16..
    const int shift = j < 16 ? 0 : 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = d * static_cast<float>(static_cast<int>((u >> (8 * i + shift)) & 15u) - 8);
  }
}

// matmul_direct for Q8_0 / Q4_0: each lane takes four weights per step (a
// quarter of the instructions of the element-wise loop); XV: activation rows
// are 16-byte aligned and read as float4.
template <DType T, int MC, bool XV>
__global__ void matmul_quad(TV w, TV x, TV y, int64_t m_total) {
  const int64_t n = blockIdx.x;
  if (n >= w.ne[1]) return;
  const int64_t n_quads = w.ne[0] / 4;
  const char* wr = w.data + n * w.nb[1];
  for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * MC; m0 < m_total; m0 += static_cast<int64_t>(gridDim.y) * MC) {
    const float* xr[MC];
    float acc[MC];
#pragma unroll
    for (int c = 0; c < MC; ++c) {
      acc[c] = 0.0f;
      xr[c] = m0 + c < m_total ? reinterpret_cast<const float*>(row_ptr(x, m0 + c)) : nullptr;
    }
#pragma unroll 4
    for (int64_t q = threadIdx.x; q < n_quads; q += kThreads) {
      float wq[4];
      load_quad<T>(wr, q, wq);
#pragma unroll
      for (int c = 0; c < MC; ++c) {
        if (!xr[c]) continue;
        float4 xv;
        if constexpr (XV) {
          xv = reinterpret_cast<const float4*>(xr[c])[q];
        } else {
          xv = make_float4(xr[c][4 * q], xr[c][4 * q + 1], xr[c][4 * q + 2], xr[c][4 * q + 3]);
        }
        acc[c] = fmaf(wq[0], xv.x, fmaf(wq[1], xv.y, fmaf(wq[2], xv.z, fmaf(wq[3], xv.w, acc[c]))));
      }
    }
    store_row_sums<MC>(acc, xr, y, m0, n);
  }
}

bool rows_aligned16(const TV& t) {
  if (reinterpret_cast<uintptr_t>(t.data) % 16) return false;
  for (int i = 1; i < 4; ++i)
    if (t.ne[i] > 1 && t.nb[i] % 16) return false;
  return true;
}

template <DType T, int MC>
void quad_launch(dim3 grid, TV w, TV x, TV y, int64_t m_total, cudaStream_t s) {
  if (rows_aligned16(x))
    matmul_quad<T, MC, true><<<grid, kThreads, 0, s>>>(w, x, y, m_total);
  else
    matmul_quad<T, MC, false><<<grid, kThreads, 0, s>>>(w, x, y, m_total);
}

template <DType T, typename O>
__global__ void dequant_rows(TV w, int64_t n0, int64_t n_rows, O* out) {
  const int64_t K = w.ne[0];
  for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
    const char* wr = w.data + (n0 + r) * w.nb[1];
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
      if constexpr (sizeof(O) == 4) out[r * K + k] = load_weight<T>(wr, k);
      else out[r * K + k] = __float2half_rn(load_weight<T>(wr, k));
    }
  }
}

template <typename O>
cudaError_t dequant_to(DType wt, TV w, int64_t n0, int64_t n_rows, O* out, cudaStream_t s) {
  if (n_rows == 0 || w.ne[0] == 0) return cudaSuccess;
  const unsigned g = static_cast<unsigned>(n_rows < 65535 * 16 ? n_rows : 65535 * 16);
  const unsigned t = row_threads(w.ne[0]);
  switch (wt) {
    case DType::F32: dequant_rows<DType::F32><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::F16: dequant_rows<DType::F16><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::BF16: dequant_rows<DType::BF16><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::Q8_0: dequant_rows<DType::Q8_0><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::Q4_0: dequant_rows<DType::Q4_0><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::Q5_0: dequant_rows<DType::Q5_0><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::Q4_K: dequant_rows<DType::Q4_K><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::Q5_K: dequant_rows<DType::Q5_K><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    case DType::Q6_K: dequant_rows<DType::Q6_K><<<g, t, 0, s>>>(w, n0, n_rows, out); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <DType T>
cudaError_t direct(TV w, TV x, TV y, cudaStream_t s) {
  const int64_t m_total = x.ne[1] * x.ne[2] * x.ne[3];
  const int64_t gx = w.ne[1];
  constexpr bool kQuad = T == DType::Q8_0 || T == DType::Q4_0;
  if (kQuad && m_total == 1) {
    quad_launch<T, 1>(dim3(static_cast<unsigned>(gx), 1), w, x, y, m_total, s);
  } else if (kQuad) {
    constexpr int kMC = 4;
    const int64_t chunks = (m_total + kMC - 1) / kMC;
    const unsigned gy = static_cast<unsigned>(chunks < 65535 ? chunks : 65535);
    quad_launch<T, kMC>(dim3(static_cast<unsigned>(gx), gy), w, x, y, m_total, s);
  } else if (m_total == 1) {
    matmul_direct<T, 1><<<dim3(static_cast<unsigned>(gx), 1), kThreads, 0, s>>>(w, x, y, m_total);
  } else {
    constexpr int kMC = 4;
    const int64_t chunks = (m_total + kMC - 1) / kMC;
    const unsigned gy = static_cast<unsigned>(chunks < 65535 ? chunks : 65535);
    matmul_direct<T, kMC><<<dim3(static_cast<unsigned>(gx), gy), kThreads, 0, s>>>(w, x, y, m_total);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_matmul_direct(DType wt, TV w, TV x, TV y, cudaStream_t s) {
  if (w.ne[1] == 0 || x.ne[1] * x.ne[2] * x.ne[3] == 0) return cudaSuccess;
  if (matmul_kquant_fits(wt, w)) return launch_matmul_kquant(wt, w, x, y, s);
  switch (wt) {
    case DType::F32: return direct<DType::F32>(w, x, y, s);
    case DType::F16: return direct<DType::F16>(w, x, y, s);
    case DType::BF16: return direct<DType::BF16>(w, x, y, s);
    case DType::Q8_0: return direct<DType::Q8_0>(w, x, y, s);
    case DType::Q4_0: return direct<DType::Q4_0>(w, x, y, s);
    case DType::Q5_0: return direct<DType::Q5_0>(w, x, y, s);
    case DType::Q4_K: return direct<DType::Q4_K>(w, x, y, s);
    case DType::Q5_K: return direct<DType::Q5_K>(w, x, y, s);
    case DType::Q6_K: return direct<DType::Q6_K>(w, x, y, s);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_dequant_rows(DType wt, TV w, int64_t n0, int64_t n_rows, float* out, cudaStream_t s) {
  return dequant_to(wt, w, n0, n_rows, out, s);
}

cudaError_t launch_dequant_rows_f16(DType wt, TV w, int64_t n0, int64_t n_rows, void* out, cudaStream_t s) {
  return dequant_to(wt, w, n0, n_rows, static_cast<__half*>(out), s);
}

}  // namespace kestrel::cuda
