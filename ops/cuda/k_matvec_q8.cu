// Decode matvec for Q4_0 / Q8_0 weights on 8-bit activations (dp4a), the
// scheme the cpu kernels use for quantized weights:
//   1. quantize_x: each activation row is cut into blocks of 32, each stored
//      as int8 q = round(x / d), d = max|x| / 127, with d and d * sum(q);
//   2. matvec_dp4a: one block of kSplitWarps warps per W row; a thread takes
//      half a weight block (16 weights: 8 quant bytes of Q4_0 or 16 of Q8_0,
//      read as 16-bit words, all the layout guarantees) against the matching
//      16 activation bytes, with __dp4a integer dot products:
//        Q8_0: d_w d_x sum(q_w q_x)
//        Q4_0: d_w (d_x sum(q_w q_x) - 8 d_x sum(q_x)), q_w in [0, 15]
//      (the -8 offset folded into the precomputed activation sum).
// Error: the activation rounding, |x - d q| <= d / 2 = max|x| / 254 per
// element of its block (test_cuda bounds each output by it); the integer
// dot products are exact, the rest float.
#include "ops/cuda/cuda_common.cuh"

namespace kestrel::cuda {
namespace {

constexpr int kThreads = kSplitWarps * kWarp;

// One warp per 32-element block of one activation row.
__global__ void quantize_x(TV x, int64_t m_total, int8_t* qx, float2* ds) {
  const int64_t nb = x.ne[0] / kQK;
  const int64_t g = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (g >= nb * m_total) return;
  const int64_t m = g / nb, b = g % nb;
  const float v = reinterpret_cast<const float*>(row_ptr(x, m))[b * kQK + lane];
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.0f;
  const int q = amax == 0.0f ? 0 : __float2int_rn(v / d);
  qx[m * x.ne[0] + b * kQK + lane] = static_cast<int8_t>(q);
  const float s = warp_sum(static_cast<float>(q));
  if (lane == 0) ds[m * nb + b] = make_float2(d, d * s);
}

__device__ __forceinline__ int load_i32_b2(const uint8_t* p) {  // a 2-byte aligned 32-bit word
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  return static_cast<int>(static_cast<uint32_t>(h[0]) | (static_cast<uint32_t>(h[1]) << 16));
}

template <DType T, int MC>
__global__ void matvec_dp4a(TV w, const int8_t* qx, const float2* ds, int64_t K, TV y, int64_t m_total) {
  const int64_t n = blockIdx.x;
  if (n >= w.ne[1]) return;
  const int64_t nb = K / kQK;
  constexpr int64_t kBlock = T == DType::Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
  const uint8_t* wr = reinterpret_cast<const uint8_t*>(w.data + n * w.nb[1]);
  for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * MC; m0 < m_total; m0 += static_cast<int64_t>(gridDim.y) * MC) {
    const float* xr[MC];  // non-null for the rows that exist (store_row_sums)
    float acc[MC];
#pragma unroll
    for (int c = 0; c < MC; ++c) {
      acc[c] = 0.0f;
      xr[c] = m0 + c < m_total ? reinterpret_cast<const float*>(ds) : nullptr;
    }
    for (int64_t t = threadIdx.x; t < 2 * nb; t += kThreads) {
      const int64_t b = t / 2;
      const int half = static_cast<int>(t % 2);
      const uint8_t* blk = wr + b * kBlock;
      const float dw = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk));
      int wq[4];
      if constexpr (T == DType::Q8_0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) wq[i] = load_i32_b2(blk + 2 + 16 * half + 4 * i);
      } else {
        // 8 quant bytes: low nibbles are elements 8h .. 8h+7, high nibbles 16 + 8h ..
        const int u0 = load_i32_b2(blk + 2 + 8 * half), u1 = load_i32_b2(blk + 2 + 8 * half + 4);
        wq[0] = u0 & 0x0F0F0F0F;
        wq[1] = u1 & 0x0F0F0F0F;
        wq[2] = (u0 >> 4) & 0x0F0F0F0F;
        wq[3] = (u1 >> 4) & 0x0F0F0F0F;
      }
#pragma unroll
      for (int c = 0; c < MC; ++c) {
        if (!xr[c]) continue;
        const int8_t* xq = qx + (m0 + c) * K + b * kQK;
        const float2 dx = ds[(m0 + c) * nb + b];
        int sumi = 0;
        if constexpr (T == DType::Q8_0) {
          const int4 v = *reinterpret_cast<const int4*>(xq + 16 * half);
          sumi = __dp4a(wq[0], v.x, sumi);
          sumi = __dp4a(wq[1], v.y, sumi);
          sumi = __dp4a(wq[2], v.z, sumi);
          sumi = __dp4a(wq[3], v.w, sumi);
          acc[c] += dw * dx.x * static_cast<float>(sumi);
        } else {
          const int2 lo = *reinterpret_cast<const int2*>(xq + 8 * half);
          const int2 hi = *reinterpret_cast<const int2*>(xq + 16 + 8 * half);
          sumi = __dp4a(wq[0], lo.x, sumi);
          sumi = __dp4a(wq[1], lo.y, sumi);
          sumi = __dp4a(wq[2], hi.x, sumi);
          sumi = __dp4a(wq[3], hi.y, sumi);
          // The -8 offset of the block's 32 weights against its whole
          // activation sum, counted once per block (by half 0).
          acc[c] += dw * (dx.x * static_cast<float>(sumi) - (half == 0 ? 8.0f * dx.y : 0.0f));
        }
      }
    }
    store_row_sums<MC>(acc, xr, y, m0, n);
  }
}

template <DType T>
void launch(TV w, const int8_t* qx, const float2* ds, TV y, int64_t m_total, cudaStream_t s) {
  const unsigned gx = static_cast<unsigned>(w.ne[1]);
  if (m_total == 1) {
    matvec_dp4a<T, 1><<<dim3(gx, 1), kThreads, 0, s>>>(w, qx, ds, w.ne[0], y, m_total);
  } else {
    constexpr int kMC = 4;
    const int64_t chunks = (m_total + kMC - 1) / kMC;
    const unsigned gy = static_cast<unsigned>(chunks < 65535 ? chunks : 65535);
    matvec_dp4a<T, kMC><<<dim3(gx, gy), kThreads, 0, s>>>(w, qx, ds, w.ne[0], y, m_total);
  }
}

}  // namespace

bool matvec_q8_fits(DType wt, const TV& w) {
  return (wt == DType::Q4_0 || wt == DType::Q8_0) && w.ne[0] % kQK == 0 && w.nb[1] % 2 == 0 &&
         reinterpret_cast<uintptr_t>(w.data) % 2 == 0;
}

size_t matvec_q8_scratch_bytes(int64_t K, int64_t m_total) {
  const size_t q = (static_cast<size_t>(K) * static_cast<size_t>(m_total) + 255) / 256 * 256;
  return q + static_cast<size_t>(K / kQK) * static_cast<size_t>(m_total) * sizeof(float2);
}

cudaError_t launch_matvec_q8(DType wt, TV w, TV x, TV y, void* scratch, cudaStream_t s, bool quantize) {
  const int64_t m_total = x.ne[1] * x.ne[2] * x.ne[3], K = w.ne[0];
  if (w.ne[1] == 0 || m_total == 0) return cudaSuccess;
  int8_t* qx = static_cast<int8_t*>(scratch);
  float2* ds = reinterpret_cast<float2*>(static_cast<char*>(scratch) +
                                         (static_cast<size_t>(K) * static_cast<size_t>(m_total) + 255) / 256 * 256);
  const int64_t warps = K / kQK * m_total;
  if (quantize) quantize_x<<<static_cast<unsigned>((warps + 7) / 8), 256, 0, s>>>(x, m_total, qx, ds);
  if (wt == DType::Q8_0) launch<DType::Q8_0>(w, qx, ds, y, m_total, s);
  else launch<DType::Q4_0>(w, qx, ds, y, m_total, s);
  return cudaGetLastError();
}

}  // namespace kestrel::cuda
