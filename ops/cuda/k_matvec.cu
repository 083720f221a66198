// Decode matvec: one warp per W row, float activations (see matvec.h).
//
// Units a lane takes per step, by weight type (the row is walked unit by unit,
// lane l on units l, l + 32, ...):
//   F32 4 elements, F16 / BF16 8 (one 16-byte load);
//   Q4_0 / Q8_0 one 32-element block (18 / 34 bytes, only 2-byte aligned: the
//     block is read as the aligned 32-bit words that hold it, and each word of
//     quants is a funnel shift of two of them);
//   Q4_K a quarter super-block (64 elements: 32 quant bytes, its two scales);
//   Q6_K a quarter super-block (elements l + 32k of one 128-element half, l in
//     a 16-lane range, k = 0..3: 16 bytes each of ql, ql + 32 and qh).
// Element order inside a unit follows the GGUF layouts (ops/dtype.h); the
// dequantized weight equals the reference dequantization before the product.
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_exp.cuh"
#include "ops/cuda/matvec.h"

namespace kestrel::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ uint32_t ldg32(const uint8_t* p) { return __ldg(reinterpret_cast<const uint32_t*>(p)); }

// The 32-bit word of bytes [base + off, base + off + 4) given the aligned
// words w[] from base & ~3: `odd` says base sits 2 bytes past a word boundary.
__device__ __forceinline__ uint32_t word_at(uint32_t lo, uint32_t hi, bool odd) {
  return odd ? __funnelshift_r(lo, hi, 16) : lo;
}

__device__ __forceinline__ float4 ld4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }

// Where the activations are read from: global memory (through L1), or a copy
// of the row in shared memory padded by 4 floats after every 32, so that the
// lanes of a warp, each at the start of its own unit (units 32 to 256 bytes
// apart), hit different banks. Lane-strided float reads of one row in global
// memory touch one cache line per lane and load instruction: for a Q4_0 row
// that is 8x the L1 wavefronts of the row's bytes, which bound the kernel.
struct XGlobal {
  __device__ static float4 ld(const float* x, int64_t off) { return ld4(x + off); }
};
struct XShared {
  __device__ static int64_t at(int64_t off) { return off + (off >> 5) * 4; }
  __device__ static float4 ld(const float* x, int64_t off) {
    return *reinterpret_cast<const float4*>(x + at(off));
  }
};

// acc += sum over 4 bytes of (nibble - off) * x, nibbles of byte i at shift sh.
__device__ __forceinline__ float nib4(uint32_t q, int sh, float off, float4 x, float acc) {
  acc = fmaf(static_cast<float>((q >> sh) & 15u) - off, x.x, acc);
  acc = fmaf(static_cast<float>((q >> (sh + 8)) & 15u) - off, x.y, acc);
  acc = fmaf(static_cast<float>((q >> (sh + 16)) & 15u) - off, x.z, acc);
  return fmaf(static_cast<float>((q >> (sh + 24)) & 15u) - off, x.w, acc);
}

__device__ __forceinline__ float i8x4(uint32_t q, float4 x, float acc) {
  acc = fmaf(static_cast<float>(static_cast<int8_t>(q)), x.x, acc);
  acc = fmaf(static_cast<float>(static_cast<int8_t>(q >> 8)), x.y, acc);
  acc = fmaf(static_cast<float>(static_cast<int8_t>(q >> 16)), x.z, acc);
  return fmaf(static_cast<float>(static_cast<int8_t>(q >> 24)), x.w, acc);
}

// A block of an f16 scale then NQ words of quants at a 2-byte aligned p (Q4_0 /
// Q8_0): the NQ + 1 aligned 32-bit words holding it, each word of quants a
// funnel shift of two of them when p sits 2 bytes past a word boundary.
template <int NQ>
__device__ __forceinline__ float scaled_block(const uint8_t* p, uint32_t (&q)[NQ]) {
  const bool odd = reinterpret_cast<uintptr_t>(p) & 2;
  const uint8_t* b = p - (odd ? 2 : 0);
  uint32_t w[NQ + 1];
#pragma unroll
  for (int i = 0; i < NQ + 1; ++i) w[i] = ldg32(b + 4 * i);
#pragma unroll
  for (int i = 0; i < NQ; ++i) q[i] = odd ? w[i + 1] : __funnelshift_r(w[i], w[i + 1], 16);
  return half_bits_to_float(static_cast<uint16_t>(odd ? w[0] >> 16 : w[0]));
}

template <DType T>
struct Unit;

template <>
struct Unit<DType::F32> {
  static constexpr int kElems = 4;
  struct Raw {
    float4 v;
  };
  __device__ static Raw load(const char* row, int64_t u) { return {ld4(reinterpret_cast<const float*>(row) + 4 * u)}; }
  template <class X>
  __device__ static float dot(const Raw& r, const float* x, int64_t u) {
    const float4 a = X::ld(x, 4 * u);
    return fmaf(r.v.x, a.x, fmaf(r.v.y, a.y, fmaf(r.v.z, a.z, r.v.w * a.w)));
  }
};

template <DType T>
struct Unit16 {  // F16 / BF16: 8 elements in one 16-byte load
  static constexpr int kElems = 8;
  struct Raw {
    uint4 v;
  };
  __device__ static Raw load(const char* row, int64_t u) {
    return {__ldg(reinterpret_cast<const uint4*>(row) + u)};
  }
  __device__ static float2 pair(uint32_t w) {
    if constexpr (T == DType::F16) {
      return __half22float2(*reinterpret_cast<const __half2*>(&w));
    } else {
      return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
    }
  }
  template <class X>
  __device__ static float dot(const Raw& r, const float* x, int64_t u) {
    const float4 a = X::ld(x, 8 * u), b = X::ld(x, 8 * u + 4);
    const float2 p0 = pair(r.v.x), p1 = pair(r.v.y), p2 = pair(r.v.z), p3 = pair(r.v.w);
    float s = p0.x * a.x;
    s = fmaf(p0.y, a.y, s);
    s = fmaf(p1.x, a.z, s);
    s = fmaf(p1.y, a.w, s);
    s = fmaf(p2.x, b.x, s);
    s = fmaf(p2.y, b.y, s);
    s = fmaf(p3.x, b.z, s);
    return fmaf(p3.y, b.w, s);
  }
};
template <>
struct Unit<DType::F16> : Unit16<DType::F16> {};
template <>
struct Unit<DType::BF16> : Unit16<DType::BF16> {};

template <>
struct Unit<DType::Q4_0> {
  static constexpr int kElems = 32;
  struct Raw {
    float d;
    uint32_t q[4];  // byte j: element j (low nibble), j + 16 (high)
  };
  __device__ static Raw load(const char* row, int64_t u) {
    Raw r;
    r.d = scaled_block(reinterpret_cast<const uint8_t*>(row) + u * static_cast<int64_t>(sizeof(BlockQ4_0)), r.q);
    return r;
  }
  template <class X>
  __device__ static float dot(const Raw& r, const float* x, int64_t u) {
    const int64_t xb = 32 * u;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s = nib4(r.q[i], 0, 8.0f, X::ld(x, xb + 4 * i), s);
      s = nib4(r.q[i], 4, 8.0f, X::ld(x, xb + 16 + 4 * i), s);
    }
    return r.d * s;
  }
};

template <>
struct Unit<DType::Q8_0> {
  static constexpr int kElems = 32;
  struct Raw {
    float d;
    uint32_t q[8];
  };
  __device__ static Raw load(const char* row, int64_t u) {
    Raw r;
    r.d = scaled_block(reinterpret_cast<const uint8_t*>(row) + u * static_cast<int64_t>(sizeof(BlockQ8_0)), r.q);
    return r;
  }
  template <class X>
  __device__ static float dot(const Raw& r, const float* x, int64_t u) {
    const int64_t xb = 32 * u;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) s = i8x4(r.q[i], X::ld(x, xb + 4 * i), s);
    return r.d * s;
  }
};

template <>
struct Unit<DType::Q4_K> {
  static constexpr int kElems = 64;
  struct Raw {
    float a0, b0, a1, b1;  // d*sc and dmin*m of sub-blocks 2c, 2c + 1
    uint32_t q[8];         // byte j: element 64c + j (low nibble), 64c + 32 + j (high)
  };
  __device__ static Raw load(const char* row, int64_t u) {
    const uint8_t* b = reinterpret_cast<const uint8_t*>(row) + (u / 4) * static_cast<int64_t>(sizeof(BlockQ4_K));
    const int c = static_cast<int>(u % 4);
    const uint32_t dd = ldg32(b);
    uint8_t sc[kKScaleBytes];
#pragma unroll
    for (int i = 0; i < kKScaleBytes / 4; ++i) {
      const uint32_t v = ldg32(b + 4 + 4 * i);
#pragma unroll
      for (int k = 0; k < 4; ++k) sc[4 * i + k] = static_cast<uint8_t>(v >> (8 * k));
    }
    Raw r;
#pragma unroll
    for (int i = 0; i < 8; ++i) r.q[i] = ldg32(b + 4 + kKScaleBytes + 32 * c + 4 * i);
    const float d = half_bits_to_float(static_cast<uint16_t>(dd)), dmin = half_bits_to_float(static_cast<uint16_t>(dd >> 16));
    int s0, m0, s1, m1;
    k_scale_min(2 * c, sc, &s0, &m0);
    k_scale_min(2 * c + 1, sc, &s1, &m1);
    r.a0 = __fmul_rn(d, static_cast<float>(s0));
    r.b0 = __fmul_rn(dmin, static_cast<float>(m0));
    r.a1 = __fmul_rn(d, static_cast<float>(s1));
    r.b1 = __fmul_rn(dmin, static_cast<float>(m1));
    return r;
  }
  template <class X>
  __device__ static float dot(const Raw& r, const float* x, int64_t u) {
    const int64_t xb = 256 * (u / 4) + 64 * (u % 4);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float4 lo = X::ld(x, xb + 4 * i), hi = X::ld(x, xb + 32 + 4 * i);
      // Each weight as the reference forms it: d*sc*q - dmin*m.
      const uint32_t q = r.q[i];
      s = fmaf(__fsub_rn(__fmul_rn(r.a0, static_cast<float>(q & 15u)), r.b0), lo.x, s);
      s = fmaf(__fsub_rn(__fmul_rn(r.a0, static_cast<float>((q >> 8) & 15u)), r.b0), lo.y, s);
      s = fmaf(__fsub_rn(__fmul_rn(r.a0, static_cast<float>((q >> 16) & 15u)), r.b0), lo.z, s);
      s = fmaf(__fsub_rn(__fmul_rn(r.a0, static_cast<float>((q >> 24) & 15u)), r.b0), lo.w, s);
      s = fmaf(__fsub_rn(__fmul_rn(r.a1, static_cast<float>((q >> 4) & 15u)), r.b1), hi.x, s);
      s = fmaf(__fsub_rn(__fmul_rn(r.a1, static_cast<float>((q >> 12) & 15u)), r.b1), hi.y, s);
      s = fmaf(__fsub_rn(__fmul_rn(r.a1, static_cast<float>((q >> 20) & 15u)), r.b1), hi.z, s);
      s = fmaf(__fsub_rn(__fmul_rn(r.a1, static_cast<float>((q >> 28) & 15u)), r.b1), hi.w, s);
    }
    return s;
  }
};

template <>
struct Unit<DType::Q6_K> {
  static constexpr int kElems = 64;
  struct Raw {
    float ds[4];   // d * scale of the unit's elements l + 32k, k = 0..3
    uint32_t ql0[4], ql1[4], qh[4];
  };
  // 16 bytes at a 2-byte aligned p (the words holding them, shifted).
  __device__ static void load16(const uint8_t* p, uint32_t out[4]) {
    const bool odd = reinterpret_cast<uintptr_t>(p) & 2;
    const uint8_t* b = p - (odd ? 2 : 0);
    uint32_t w[5];
    w[0] = ldg32(b);
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i + 1] = ldg32(b + 4 * (i + 1));
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = word_at(w[i], w[i + 1], odd);
  }
  __device__ static Raw load(const char* row, int64_t u) {
    const uint8_t* b = reinterpret_cast<const uint8_t*>(row) + (u / 4) * static_cast<int64_t>(sizeof(BlockQ6_K));
    const int h = static_cast<int>(u / 2 % 2), g = static_cast<int>(u % 2);
    Raw r;
    load16(b + 64 * h + 16 * g, r.ql0);
    load16(b + 64 * h + 32 + 16 * g, r.ql1);
    load16(b + kQKK / 2 + 32 * h + 16 * g, r.qh);
    const uint8_t* sp = b + kQKK / 2 + kQKK / 4 + 8 * h + g;
    const uint16_t* dp = reinterpret_cast<const uint16_t*>(b + sizeof(BlockQ6_K) - 2);
    const float d = half_bits_to_float(__ldg(dp));
#pragma unroll
    for (int k = 0; k < 4; ++k) r.ds[k] = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(__ldg(sp + 2 * k))));
    return r;
  }
  template <class X>
  __device__ static float dot(const Raw& r, const float* x, int64_t u) {
    const int h = static_cast<int>(u / 2 % 2), g = static_cast<int>(u % 2);
    const int64_t xb = 256 * (u / 4) + 128 * h + 16 * g;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t* ql = k & 1 ? r.ql1 : r.ql0;
      const int nsh = k < 2 ? 0 : 4;
      float sk = 0.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float4 xv = X::ld(x, xb + 32 * k + 4 * i);
        const uint32_t lq = ql[i] >> nsh, hq = r.qh[i] >> (2 * k);
        const float xs[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int q = static_cast<int>(((lq >> (8 * j)) & 15u) | (((hq >> (8 * j)) & 3u) << 4)) - 32;
          sk = fmaf(static_cast<float>(q), xs[j], sk);
        }
      }
      s = fmaf(r.ds[k], sk, s);
    }
    return s;
  }
};

// NR weight rows per warp (R rows of one matrix, or R of gate then R of up
// for GLU), MC activation rows; `first`: the warp's first row in its matrix.
struct SegsArg {
  TV w[kMatvecMaxSegs];
  TV y[kMatvecMaxSegs];
  int64_t warp_end[kMatvecMaxSegs];  // cumulative warps per segment
  int n;
};

// The prologue and epilogue the plan may fold into a launch (matvec.h).
struct NormArg {
  const float* w = nullptr;  // norm weights (null: none)
  float eps = 0.0f;
  bool one_plus = false;
  bool on = false;
  TV y;  // the norm's own output, written by block 0 (data null: not written)
};
struct AddArg {
  TV r, s;  // s = r + y of segment 0 (s.data null: no add)
};

template <DType T, int MC, int R, class X>
__device__ __forceinline__ void row_dots(const char* const wr[R], int64_t n_units, const float* const xr[MC],
                                         int lane, float acc[R][MC]) {
  using U = Unit<T>;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < MC; ++c) acc[r][c] = 0.0f;
  // Two units in flight per lane for one activation row; with eight the
  // registers are full already.
#pragma unroll(MC == 1 ? 2 : 1)
  for (int64_t u = lane; u < n_units; u += kWarp) {
    typename U::Raw raw[R];
#pragma unroll
    for (int r = 0; r < R; ++r) raw[r] = U::load(wr[r], u);
#pragma unroll
    for (int c = 0; c < MC; ++c) {
      if (!xr[c]) continue;
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r][c] += U::template dot<X>(raw[r], xr[c], u);
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < MC; ++c) acc[r][c] = warp_sum(acc[r][c]);
}

// x row 0 into shared memory (XShared's padded layout), normalised there when
// nm.on: sum of squares in float by each thread over its float4 slices, one
// block reduction, y = x / sqrt(mean + eps) * w (the rms_norm formula; block 0
// also writes it to nm.y). Every thread of the block must call it.
__device__ __forceinline__ void stage_x(const float* x, int64_t K, const NormArg& nm, float* xs) {
  __shared__ float scratch[32];
  float ss = 0.0f;
  for (int64_t e = 4 * static_cast<int64_t>(threadIdx.x); e < K; e += 4 * static_cast<int64_t>(blockDim.x)) {
    const float4 v = ld4(x + e);
    *reinterpret_cast<float4*>(xs + XShared::at(e)) = v;
    if (nm.on) ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, ss))));
  }
  if (nm.on) {
    ss = block_sum(ss, scratch);
    const float inv = 1.0f / sqrtf(ss / static_cast<float>(K) + nm.eps);
    float* yo = blockIdx.x == 0 && nm.y.data ? reinterpret_cast<float*>(nm.y.data) : nullptr;
    for (int64_t e = 4 * static_cast<int64_t>(threadIdx.x); e < K; e += 4 * static_cast<int64_t>(blockDim.x)) {
      float4 v = *reinterpret_cast<float4*>(xs + XShared::at(e));  // this thread's own slice
      float o[4] = {v.x * inv, v.y * inv, v.z * inv, v.w * inv};
      if (nm.w)
#pragma unroll
        for (int j = 0; j < 4; ++j) o[j] *= nm.one_plus ? 1.0f + __ldg(nm.w + e + j) : __ldg(nm.w + e + j);
      v = make_float4(o[0], o[1], o[2], o[3]);
      *reinterpret_cast<float4*>(xs + XShared::at(e)) = v;
      if (yo) *reinterpret_cast<float4*>(yo + e) = v;
    }
  }
  __syncthreads();
}

// XS: x (one row, MC == 1) staged in shared memory, optionally normalised.
template <DType T, int MC, int R, bool XS>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarp)
    matvec_kernel(SegsArg s, TV x, int64_t m_total, NormArg nm, AddArg ad) {
  extern __shared__ __align__(16) float xs[];
  pdl_wait();
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if constexpr (XS) stage_x(reinterpret_cast<const float*>(x.data), x.ne[0], nm, xs);
  int seg = 0;
  while (seg < s.n && warp >= s.warp_end[seg]) ++seg;
  if (seg == s.n) return;
  const TV& w = s.w[seg];
  const int64_t n0 = (warp - (seg ? s.warp_end[seg - 1] : 0)) * R;
  const char* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w.data + (n0 + r < w.ne[1] ? n0 + r : n0) * w.nb[1];
  const float* xr[MC];
#pragma unroll
  for (int c = 0; c < MC; ++c)
    xr[c] = c >= m_total ? nullptr : XS ? xs : reinterpret_cast<const float*>(row_ptr(x, c));
  float acc[R][MC];
  using XA = std::conditional_t<XS, XShared, XGlobal>;
  row_dots<T, MC, R, XA>(wr, w.ne[0] / Unit<T>::kElems, xr, lane, acc);
  const bool add = ad.s.data && seg == 0;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < MC; ++c)
      if (lane == r * MC + c && xr[c] && n0 + r < w.ne[1]) {
        reinterpret_cast<float*>(row_ptr(s.y[seg], c))[n0 + r] = acc[r][c];
        if (add)
          reinterpret_cast<float*>(row_ptr(ad.s, c))[n0 + r] =
              reinterpret_cast<const float*>(row_ptr(ad.r, c))[n0 + r] + acc[r][c];
      }
}

template <ExpTier E>
__device__ __forceinline__ float glu_t(Binary op, float g, float u) {
  if (op == Binary::swiglu) return silu_t<E>(g) * u;
  if (op == Binary::geglu_tanh) return gelu_tanh_t<E>(g) * u;
  if (op == Binary::geglu_sigmoid) return gelu_sigmoid_t<E>(g) * u;
  return gelu_erf_t<E>(g) * u;
}

// The activation and its exp tier are run-time values: they cost one branch
// per output, and one kernel per weight type and row count serves them all.
__device__ __forceinline__ float glu(Binary op, ExpTier e, float g, float u) {
  if (e == ExpTier::quake2) return glu_t<ExpTier::quake2>(op, g, u);
  if (e == ExpTier::quake1) return glu_t<ExpTier::quake1>(op, g, u);
  return glu_t<ExpTier::exact>(op, g, u);
}

// R rows of the gate and the same R rows of up per warp.
template <DType T, int MC, int R, bool XS>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarp)
    matvec_glu_kernel(TV wg, TV wu, TV x, TV y, TV yg, TV yu, Binary op, ExpTier e, int64_t m_total, NormArg nm) {
  extern __shared__ __align__(16) float xs[];
  pdl_wait();
  const int lane = threadIdx.x % kWarp;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp) * R;
  if constexpr (XS) stage_x(reinterpret_cast<const float*>(x.data), x.ne[0], nm, xs);
  if (n0 >= wg.ne[1]) return;
  const char* wr[2 * R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t n = n0 + r < wg.ne[1] ? n0 + r : n0;
    wr[r] = wg.data + n * wg.nb[1];
    wr[R + r] = wu.data + n * wu.nb[1];
  }
  const float* xr[MC];
#pragma unroll
  for (int c = 0; c < MC; ++c)
    xr[c] = c >= m_total ? nullptr : XS ? xs : reinterpret_cast<const float*>(row_ptr(x, c));
  float acc[2 * R][MC];
  using XA = std::conditional_t<XS, XShared, XGlobal>;
  row_dots<T, MC, 2 * R, XA>(wr, wg.ne[0] / Unit<T>::kElems, xr, lane, acc);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < MC; ++c)
      if (lane == r * MC + c && xr[c] && n0 + r < wg.ne[1]) {
        if (yg.data) reinterpret_cast<float*>(row_ptr(yg, c))[n0 + r] = acc[r][c];
        if (yu.data) reinterpret_cast<float*>(row_ptr(yu, c))[n0 + r] = acc[R + r][c];
        reinterpret_cast<float*>(row_ptr(y, c))[n0 + r] = glu(op, e, acc[r][c], acc[R + r][c]);
      }
}

int unit_elems(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16:
    case DType::BF16: return 8;
    case DType::Q4_0:
    case DType::Q8_0: return 32;
    case DType::Q4_K:
    case DType::Q6_K: return 64;
    default: return 0;
  }
}

// The m rows the kernels take: MC 1 (decode of one sequence) or 8 (rows
// past m are skipped at run time; fewer instantiations keep the code small).
template <typename F>
cudaError_t by_rows(int64_t m, F&& f) {
  if (m <= 1) return f(std::integral_constant<int, 1>{});
  return f(std::integral_constant<int, 8>{});
}

// Shared memory of a staged x row (XShared layout), 0 when x is read from
// global memory: more than one row, K past kMatvecMaxStagedK, or staging
// turned off (KESTREL_CUDA_MATVEC=global, read once: the previous path, for
// comparisons in one binary).
// Float weights read x from global memory: staging measured slower for F16
// (its 16-byte units already keep the lanes' x reads within few lines).
size_t staged_bytes(DType wt, int64_t K, int64_t m) {
  static const bool off = [] {
    const char* e = std::getenv("KESTREL_CUDA_MATVEC");
    return e && std::strcmp(e, "global") == 0;
  }();
  if (off || m != 1 || K > kMatvecMaxStagedK || dtype_block_size(wt) == 1) return 0;
  return static_cast<size_t>((K + 31) / 32 * 36) * sizeof(float);
}

template <DType T>
cudaError_t run_segs(const MatvecSegs& segs, TV x, int64_t m, const NormArg& nm, const AddArg& ad, cudaStream_t s) {
  return by_rows(m, [&](auto mc) {
    constexpr int MC = decltype(mc)::value;
    constexpr int R = MC == 1 ? 2 : 1;
    SegsArg a{};
    int64_t warps = 0;
    for (int i = 0; i < segs.n; ++i) {
      a.w[i] = segs.w[i];
      a.y[i] = segs.y[i];
      warps += (segs.w[i].ne[1] + R - 1) / R;
      a.warp_end[i] = warps;
    }
    a.n = segs.n;
    if (warps == 0) return cudaSuccess;
    const unsigned blocks = static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
    const size_t sm = MC == 1 ? staged_bytes(T, x.ne[0], m) : 0;
    if (nm.on && !sm) return cudaErrorInvalidValue;
    if (sm)
      (void)launch_k(matvec_kernel<T, MC, R, true>, blocks, kWarpsPerBlock * kWarp, sm, s, a, x, m, nm, ad);
    else
      (void)launch_k(matvec_kernel<T, MC, R, false>, blocks, kWarpsPerBlock * kWarp, 0, s, a, x, m, nm, ad);
    return cudaGetLastError();
  });
}

template <DType T>
cudaError_t run_glu(TV g, TV u, TV x, TV y, TV yg, TV yu, Binary op, ExpTier e, int64_t m, const NormArg& nm,
                    cudaStream_t s) {
  return by_rows(m, [&](auto mc) {
    constexpr int MC = decltype(mc)::value;
    constexpr int R = MC == 1 ? 2 : 1;
    const int64_t warps = (g.ne[1] + R - 1) / R;
    if (warps == 0) return cudaSuccess;
    const unsigned blocks = static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
    const size_t sm = MC == 1 ? staged_bytes(T, x.ne[0], m) : 0;
    if (nm.on && !sm) return cudaErrorInvalidValue;
    if (sm)
      (void)launch_k(matvec_glu_kernel<T, MC, R, true>, blocks, kWarpsPerBlock * kWarp, sm, s, g, u, x, y, yg, yu, op,
                     e, m, nm);
    else
      (void)launch_k(matvec_glu_kernel<T, MC, R, false>, blocks, kWarpsPerBlock * kWarp, 0, s, g, u, x, y, yg, yu, op,
                     e, m, nm);
    return cudaGetLastError();
  });
}

NormArg norm_arg(const MatvecNorm* n) {
  NormArg a;
  if (!n) return a;
  a.w = n->w;
  a.eps = n->eps;
  a.one_plus = n->one_plus_weight;
  a.on = true;
  a.y = n->y;
  return a;
}

template <typename F>
cudaError_t by_type(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(std::integral_constant<DType, DType::F32>{});
    case DType::F16: return f(std::integral_constant<DType, DType::F16>{});
    case DType::BF16: return f(std::integral_constant<DType, DType::BF16>{});
    case DType::Q4_0: return f(std::integral_constant<DType, DType::Q4_0>{});
    case DType::Q8_0: return f(std::integral_constant<DType, DType::Q8_0>{});
    case DType::Q4_K: return f(std::integral_constant<DType, DType::Q4_K>{});
    case DType::Q6_K: return f(std::integral_constant<DType, DType::Q6_K>{});
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

bool matvec_fits(DType wt, const TV& w, const TV& x) {
  const int ue = unit_elems(wt);
  if (!ue || w.ne[0] % ue || w.ne[2] * w.ne[3] != 1) return false;
  const int64_t m = x.ne[1] * x.ne[2] * x.ne[3];
  if (m < 1 || m > kMatvecMaxRows || x.ne[0] != w.ne[0]) return false;
  // Weight rows: 16-byte aligned for the vector types, 4 for Q4_K (whole
  // words), 2 for the 2-byte aligned block types (read as the words holding them).
  const uintptr_t wa = reinterpret_cast<uintptr_t>(w.data);
  const size_t need = wt == DType::F32 || wt == DType::F16 || wt == DType::BF16 ? 16 : wt == DType::Q4_K ? 4 : 2;
  if (wa % need || (w.ne[1] > 1 && w.nb[1] % need)) return false;
  if (reinterpret_cast<uintptr_t>(x.data) % 16) return false;
  for (int i = 1; i < 4; ++i)
    if (x.ne[i] > 1 && x.nb[i] % 16) return false;
  return true;
}

bool matvec_can_norm(DType wt, const TV& x) {
  const int64_t m = x.ne[1] * x.ne[2] * x.ne[3];
  return m == 1 && x.ne[0] % 4 == 0 && unit_elems(wt) > 0 && staged_bytes(wt, x.ne[0], m) > 0;
}

cudaError_t launch_matvec(DType wt, const MatvecSegs& segs, TV x, cudaStream_t s, const MatvecNorm* norm,
                          const MatvecAdd* add) {
  const int64_t m = x.ne[1] * x.ne[2] * x.ne[3];
  if (m == 0 || segs.n == 0) return cudaSuccess;
  if (norm && !matvec_can_norm(wt, x)) return cudaErrorInvalidValue;
  AddArg ad;
  if (add) {
    ad.r = add->r;
    ad.s = add->s;
  }
  const NormArg nm = norm_arg(norm);
  return by_type(wt, [&](auto tc) { return run_segs<decltype(tc)::value>(segs, x, m, nm, ad, s); });
}

cudaError_t launch_matvec_glu(DType wt, TV g, TV u, TV x, TV y, TV yg, TV yu, Binary glu, ExpTier tier,
                              cudaStream_t s, const MatvecNorm* norm) {
  const int64_t m = x.ne[1] * x.ne[2] * x.ne[3];
  if (m == 0 || g.ne[1] == 0) return cudaSuccess;
  if (glu != Binary::swiglu && glu != Binary::geglu_tanh && glu != Binary::geglu_erf && glu != Binary::geglu_sigmoid)
    return cudaErrorInvalidValue;
  if (norm && !matvec_can_norm(wt, x)) return cudaErrorInvalidValue;
  const NormArg nm = norm_arg(norm);
  return by_type(wt, [&](auto tc) { return run_glu<decltype(tc)::value>(g, u, x, y, yg, yu, glu, tier, m, nm, s); });
}

}  // namespace kestrel::cuda
