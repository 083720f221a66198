// Device helpers shared by the kernel files: row addressing, element loads of
// every supported weight type, warp and block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <utility>

#include "ops/cuda/cuda_kernels.h"

namespace kestrel::cuda {

constexpr int kWarp = 32;

// Byte address of row r (rows counted over ne[1] * ne[2] * ne[3]).
__device__ __forceinline__ char* row_ptr(const TV& t, int64_t r) {
  const int64_t i1 = r % t.ne[1];
  const int64_t i23 = r / t.ne[1];
  const int64_t i2 = i23 % t.ne[2];
  const int64_t i3 = i23 / t.ne[2];
  return t.data + i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3];
}

__device__ __forceinline__ float half_bits_to_float(uint16_t h) {
  return __half2float(__ushort_as_half(h));
}

// 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block:
// sub-blocks 0..3 in the low 6 bits of bytes j / j+4; 4..7 in a nibble of
// byte j+4 plus the top 2 bits of bytes j-4 / j.
__device__ __forceinline__ void k_scale_min(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Element e (0..255) of a Q4_K / Q5_K super-block: x = d*sc*q - dmin*m, in
// that rounding order (explicit _rn ops keep nvcc from contracting to fma,
// so get_rows matches the reference dequantization bit for bit).
template <DType T>
__device__ __forceinline__ float load_k45(const char* blk, int e) {
  const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk));
  const float dmin = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk + 2));
  const uint8_t* scales = reinterpret_cast<const uint8_t*>(blk + 4);
  const int c = e / 64, hi = (e % 64) / 32, l = e % 32;
  int sc, m;
  k_scale_min(2 * c + hi, scales, &sc, &m);
  const uint8_t* qs = scales + kKScaleBytes + (T == DType::Q5_K ? kQKK / 8 : 0);
  const uint8_t byte = qs[32 * c + l];
  int q = hi ? (byte >> 4) : (byte & 0xF);
  if constexpr (T == DType::Q5_K) q |= ((scales[kKScaleBytes + l] >> (2 * c + hi)) & 1) << 4;
  return __fsub_rn(__fmul_rn(__fmul_rn(d, static_cast<float>(sc)), static_cast<float>(q)),
                   __fmul_rn(dmin, static_cast<float>(m)));
}

// Element e of a Q6_K super-block: per 128-element half h, element l + 32k
// (l < 32) takes ql[l + 32(k&1)]'s low (k < 2) or high nibble and bits
// 2k..2k+1 of qh[l]; x = d * sc * (q - 32).
__device__ __forceinline__ float load_q6_K(const char* blk, int e) {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(blk);
  const int h = e / 128, r = e % 128, kq = r / 32, l = r % 32;
  const uint8_t* ql = b + 64 * h;
  const uint8_t* qh = b + kQKK / 2 + 32 * h;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + kQKK / 2 + kQKK / 4) + 8 * h;
  const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(b + sizeof(BlockQ6_K) - 2));
  const uint8_t lb = ql[l + 32 * (kq & 1)];
  const int q = ((kq < 2 ? (lb & 0xF) : (lb >> 4)) | (((qh[l] >> (2 * kq)) & 3) << 4)) - 32;
  return __fmul_rn(__fmul_rn(d, static_cast<float>(sc[l / 16 + 2 * kq])), static_cast<float>(q));
}

// Element k of a weight row of type T, as float. Quant blocks are 2-byte
// aligned (18 / 34 / 144 / 176 / 210-byte structs), so each f16 scale is one
// 16-bit load.
template <DType T>
__device__ __forceinline__ float load_weight(const char* row, int64_t k) {
  if constexpr (T == DType::F32) {
    return reinterpret_cast<const float*>(row)[k];
  } else if constexpr (T == DType::F16) {
    return half_bits_to_float(reinterpret_cast<const uint16_t*>(row)[k]);
  } else if constexpr (T == DType::BF16) {
    return __uint_as_float(static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[k]) << 16);
  } else if constexpr (T == DType::Q8_0) {
    const char* blk = row + (k / kQK) * sizeof(BlockQ8_0);
    const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk));
    return d * static_cast<float>(reinterpret_cast<const int8_t*>(blk + 2)[k % kQK]);
  } else if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
    return load_k45<T>(row + (k / kQKK) * static_cast<int64_t>(T == DType::Q4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ5_K)),
                       static_cast<int>(k % kQKK));
  } else if constexpr (T == DType::Q6_K) {
    return load_q6_K(row + (k / kQKK) * static_cast<int64_t>(sizeof(BlockQ6_K)), static_cast<int>(k % kQKK));
  } else if constexpr (T == DType::Q5_0) {  // Q4_0's nibbles, bit 4 of element j = bit j of qh
    const char* blk = row + (k / kQK) * sizeof(BlockQ5_0);
    const uint16_t* h16 = reinterpret_cast<const uint16_t*>(blk);
    const float d = half_bits_to_float(h16[0]);
    const uint32_t qh = static_cast<uint32_t>(h16[1]) | (static_cast<uint32_t>(h16[2]) << 16);
    const int j = static_cast<int>(k % kQK);
    const uint8_t b = reinterpret_cast<const uint8_t*>(blk + 6)[j & 15];
    const int q = (j < 16 ? (b & 0x0f) : (b >> 4)) | static_cast<int>(((qh >> j) & 1u) << 4);
    return d * static_cast<float>(q - 16);
  } else {  // Q4_0: byte j holds element j (low nibble) and j + 16 (high nibble)
    const char* blk = row + (k / kQK) * sizeof(BlockQ4_0);
    const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk));
    const int j = static_cast<int>(k % kQK);
    const uint8_t b = reinterpret_cast<const uint8_t*>(blk + 2)[j & 15];
    const int q = j < 16 ? (b & 0x0f) : (b >> 4);
    return d * static_cast<float>(q - 8);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum / max over the whole block (blockDim.x a multiple of 32, <= 1024); every
// thread gets the result. `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[wid] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[wid] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// Decode matvecs: kSplitWarps warps share one W row (each takes a stride of
// its k range), so a small matrix still fills the GPU with warps and each
// warp has few dependent loads; their partial sums meet in shared memory.
constexpr int kSplitWarps = 4;

// y[m0 + c][n] = the block's sum of acc[c] over all threads, for the MC rows
// that exist (xr[c] != nullptr). Every thread of the block must call it.
template <int MC>
__device__ __forceinline__ void store_row_sums(float acc[MC], const float* const xr[MC], const TV& y, int64_t m0,
                                               int64_t n) {
  __shared__ float part[kSplitWarps][MC];
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
#pragma unroll
  for (int c = 0; c < MC; ++c) {
    const float v = warp_sum(acc[c]);
    if (lane == 0) part[wid][c] = v;
  }
  __syncthreads();
  if (threadIdx.x < MC && xr[threadIdx.x]) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) v += part[w][threadIdx.x];
    reinterpret_cast<float*>(row_ptr(y, m0 + threadIdx.x))[n] = v;
  }
  __syncthreads();  // part is reused by the next pass
}

// Threads per block for a row of n elements: a multiple of 32 in [32, 256].
inline unsigned row_threads(int64_t n) {
  int64_t t = (n + 31) / 32 * 32;
  return static_cast<unsigned>(t < 32 ? 32 : (t > 256 ? 256 : t));
}

// Programmatic dependent launch (sm_90 on): a kernel started by launch_k may
// be scheduled while the kernel before it on the stream is still running, so
// the launch gap between the small kernels of a decode step overlaps work.
// Every kernel launched by launch_k calls pdl_wait() before it touches memory
// another kernel writes or reads (weights may be read before it): the wait
// returns once the previous grid has completed and its writes are visible.
// The trigger comes after the wait: the next grid may be scheduled once every
// block of this one is past its wait, so at most one grid waits ahead of the
// running one (triggered before the wait, grids piled up on the SMs, each
// waiting for the one before). Launched plainly, both are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// launch_k with programmatic launch asked for only when `programmatic`.
template <typename... KA, typename... A>
cudaError_t launch_kp(bool programmatic, void (*kernel)(KA...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                      A&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  if (programmatic && programmatic_launch()) {
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
}

template <typename... KA, typename... A>
cudaError_t launch_k(void (*kernel)(KA...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A&&... args) {
  return launch_kp(true, kernel, grid, block, smem, s, std::forward<A>(args)...);
}

// Rows run one per block along grid.x (up to 2^31 - 1 blocks).
constexpr int64_t kMaxGridX = 2147483647;

}  // namespace kestrel::cuda
