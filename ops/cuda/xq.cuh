// 8-bit activation records (device code): the layout in which a decode
// matvec of quantized weights reads its one activation row (k_matvec.cu), and
// the warp-wide quantizer that kernels producing such a row use to write it
// directly (k_attention_decode.cu), so the matvec launch needs no quantize
// kernel of its own.
//
// A record is 32 consecutive elements: q = round(x / d), d = max|x| / 127 (the
// cpu kernels' scheme, q = round(x * (1 / d))), and d times the sums of q over
// its two halves (for the weight types' offsets). 48 bytes: three 16-byte loads.
#pragma once

#include <cstdint>

namespace kestrel::cuda {

struct XQ {
  int8_t q[32];
  float d;
  float ds0, ds1;  // d * sum q[0..15], d * sum q[16..31]
  float pad;
};
static_assert(sizeof(XQ) == 48, "record layout");

// Record r from the 32 lanes of a warp, lane l holding element l (every lane
// must call it).
__device__ __forceinline__ void quantize_record_warp(float v, XQ* r) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  float amax = fabsf(v);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float d = amax / 127.0f;
  const float id = amax == 0.0f ? 0.0f : 1.0f / d;
  const int q = __float2int_rn(v * id);
  int sum = q;
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);  // over each half
  r->q[lane] = static_cast<int8_t>(q);
  if (lane == 0) {
    r->d = d;
    r->ds0 = d * static_cast<float>(sum);
  }
  if (lane == 16) r->ds1 = d * static_cast<float>(sum);
}

}  // namespace kestrel::cuda
