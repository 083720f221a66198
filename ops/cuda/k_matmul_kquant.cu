// Decode matvec for Q4_K and Q6_K weights (the bulk of a Q4_K_M model file),
// walking super-blocks in their stored order instead of decoding each
// element's scale separately as the generic direct kernel does.
//
// One block of kSplitWarps warps per W row, each warp on one 256-element
// super-block at a time (warp w takes super-blocks w, w + kSplitWarps, ...):
//   Q4_K: lane l reads 4 quant bytes (one 32-bit load; blocks are 144 bytes,
//         so 4-byte aligned when the row is): elements p..p+3 of sub-blocks
//         2c and 2c+1 (c = l / 8, p = 4 (l % 8)). Per sub-block the sum is
//         d*sc * sum(q x) - dmin*m * sum(x), two products instead of eight.
//   Q6_K: per 128-element half, lane l reads ql[l], ql[l+32], qh[l] and
//         produces elements l, l+32, l+64, l+96 (byte loads; 210-byte blocks
//         guarantee no more).
// Float accumulation, warp-shuffle reduction: error as the direct kernel
// (test_cuda / test_backend_ops compare with the double reference).
#include "ops/cuda/cuda_common.cuh"

namespace kestrel::cuda {
namespace {

constexpr int kThreads = kSplitWarps * kWarp;

template <int MC>
__device__ __forceinline__ void q4_K_superblock(const char* blk, int lane, const float* const xr[MC], int64_t base,
                                                float acc[MC]) {
  const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk));
  const float dmin = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk + 2));
  const uint8_t* scales = reinterpret_cast<const uint8_t*>(blk + 4);
  const int c = lane / 8, p = 4 * (lane % 8);
  const uint32_t qw = *reinterpret_cast<const uint32_t*>(blk + 4 + kKScaleBytes + 4 * lane);
  int sc0, m0, sc1, m1;
  k_scale_min(2 * c, scales, &sc0, &m0);
  k_scale_min(2 * c + 1, scales, &sc1, &m1);
  const float a0 = d * sc0, b0 = dmin * m0, a1 = d * sc1, b1 = dmin * m1;
#pragma unroll
  for (int mc = 0; mc < MC; ++mc) {
    if (!xr[mc]) continue;
    const float* x0 = xr[mc] + base + 64 * c + p;  // sub-block 2c
    const float* x1 = x0 + 32;                      // sub-block 2c + 1
    float qx0 = 0.0f, sx0 = 0.0f, qx1 = 0.0f, sx1 = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t byte = (qw >> (8 * i)) & 0xffu;
      qx0 = fmaf(static_cast<float>(byte & 0xf), x0[i], qx0);
      qx1 = fmaf(static_cast<float>(byte >> 4), x1[i], qx1);
      sx0 += x0[i];
      sx1 += x1[i];
    }
    acc[mc] += a0 * qx0 - b0 * sx0 + a1 * qx1 - b1 * sx1;
  }
}

template <int MC>
__device__ __forceinline__ void q6_K_superblock(const char* blk, int lane, const float* const xr[MC], int64_t base,
                                                float acc[MC]) {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(blk);
  const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(b + sizeof(BlockQ6_K) - 2));
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint8_t l0 = b[64 * h + lane], l1 = b[64 * h + 32 + lane];
    const uint8_t hb = b[kQKK / 2 + 32 * h + lane];
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + kQKK / 2 + kQKK / 4) + 8 * h + lane / 16;
    const int q0 = ((l0 & 0xF) | ((hb & 3) << 4)) - 32;
    const int q1 = ((l1 & 0xF) | (((hb >> 2) & 3) << 4)) - 32;
    const int q2 = ((l0 >> 4) | (((hb >> 4) & 3) << 4)) - 32;
    const int q3 = ((l1 >> 4) | (((hb >> 6) & 3) << 4)) - 32;
    const float w0 = d * sc[0] * q0, w1 = d * sc[2] * q1, w2 = d * sc[4] * q2, w3 = d * sc[6] * q3;
#pragma unroll
    for (int mc = 0; mc < MC; ++mc) {
      if (!xr[mc]) continue;
      const float* x = xr[mc] + base + 128 * h + lane;
      acc[mc] = fmaf(w0, x[0], fmaf(w1, x[32], fmaf(w2, x[64], fmaf(w3, x[96], acc[mc]))));
    }
  }
}

template <DType T, int MC>
__global__ void matmul_kquant(TV w, TV x, TV y, int64_t m_total) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
  const int64_t n = blockIdx.x;
  if (n >= w.ne[1]) return;
  const int64_t n_sb = w.ne[0] / kQKK;
  constexpr int64_t kBlockBytes = T == DType::Q4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ6_K);
  const char* wr = w.data + n * w.nb[1];
  for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * MC; m0 < m_total; m0 += static_cast<int64_t>(gridDim.y) * MC) {
    const float* xr[MC];
    float acc[MC];
#pragma unroll
    for (int c = 0; c < MC; ++c) {
      acc[c] = 0.0f;
      xr[c] = m0 + c < m_total ? reinterpret_cast<const float*>(row_ptr(x, m0 + c)) : nullptr;
    }
#pragma unroll 2
    for (int64_t sb = wid; sb < n_sb; sb += kSplitWarps) {
      if constexpr (T == DType::Q4_K) q4_K_superblock<MC>(wr + sb * kBlockBytes, lane, xr, sb * kQKK, acc);
      else q6_K_superblock<MC>(wr + sb * kBlockBytes, lane, xr, sb * kQKK, acc);
    }
    store_row_sums<MC>(acc, xr, y, m0, n);
  }
}

template <DType T>
cudaError_t launch(TV w, TV x, TV y, cudaStream_t s) {
  const int64_t m_total = x.ne[1] * x.ne[2] * x.ne[3];
  const unsigned gx = static_cast<unsigned>(w.ne[1]);
  if (m_total == 1) {
    matmul_kquant<T, 1><<<dim3(gx, 1), kThreads, 0, s>>>(w, x, y, m_total);
  } else {
    constexpr int kMC = 4;
    const int64_t chunks = (m_total + kMC - 1) / kMC;
    const unsigned gy = static_cast<unsigned>(chunks < 65535 ? chunks : 65535);
    matmul_kquant<T, kMC><<<dim3(gx, gy), kThreads, 0, s>>>(w, x, y, m_total);
  }
  return cudaGetLastError();
}

}  // namespace

bool matmul_kquant_fits(DType wt, const TV& w) {
  if (wt == DType::Q6_K) return true;
  if (wt != DType::Q4_K) return false;
  // 32-bit quant loads: the row start and row stride must keep 4-byte alignment.
  return reinterpret_cast<uintptr_t>(w.data) % 4 == 0 && w.nb[1] % 4 == 0;
}

cudaError_t launch_matmul_kquant(DType wt, TV w, TV x, TV y, cudaStream_t s) {
  if (w.ne[1] == 0 || x.ne[1] * x.ne[2] * x.ne[3] == 0) return cudaSuccess;
  switch (wt) {
    case DType::Q4_K: return launch<DType::Q4_K>(w, x, y, s);
    case DType::Q6_K: return launch<DType::Q6_K>(w, x, y, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace kestrel::cuda
