// Decode matvec: one warp per W row, float or staged 8-bit activations (see matvec.h).
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
// dequantized weight equals the reference dequantization before the product
// (float x); with staged x each unit's quants meet the matching XQ records.
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_exp.cuh"
#include "ops/cuda/matvec.h"
#include "ops/cuda/xq.cuh"

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

// Float activations are read from global memory (through L1).
struct XGlobal {
  __device__ static float4 ld(const float* x, int64_t off) { return ld4(x + off); }
};

// A record read from global memory (three 16-byte loads through L1).
struct XR {
  int4 lo, hi;  // q[0..15], q[16..31]
  float d, ds0, ds1;
};
__device__ __forceinline__ XR ldxq(const XQ* p) {
  const int4* v = reinterpret_cast<const int4*>(p);
  const int4 t = __ldg(v + 2);
  return {__ldg(v), __ldg(v + 1), __int_as_float(t.x), __int_as_float(t.y), __int_as_float(t.z)};
}

struct XStaged {};  // row_dots' marker: x as XQ records (quantize_xq's output)

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
  // d_w (d_x sum(q_w q_x) - 8 d_x sum(q_x)), q_w in [0, 15].
  __device__ static float dotq(const Raw& r, const XQ* x, int64_t u) {
    const XR b = ldxq(x + u);
    const int4 lo = b.lo, hi = b.hi;
    const int xl[4] = {lo.x, lo.y, lo.z, lo.w}, xh[4] = {hi.x, hi.y, hi.z, hi.w};
    int acc = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc = __dp4a(static_cast<int>(r.q[i] & 0x0f0f0f0fu), xl[i], acc);
      acc = __dp4a(static_cast<int>((r.q[i] >> 4) & 0x0f0f0f0fu), xh[i], acc);
    }
    return r.d * fmaf(b.d, static_cast<float>(acc), -8.0f * (b.ds0 + b.ds1));
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
  __device__ static float dotq(const Raw& r, const XQ* x, int64_t u) {
    const XR b = ldxq(x + u);
    const int4 lo = b.lo, hi = b.hi;
    const int xv[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    int acc = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc = __dp4a(static_cast<int>(r.q[i]), xv[i], acc);
    return r.d * b.d * static_cast<float>(acc);
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
  // Sub-block 2c (low nibbles) and 2c + 1 (high): a (d_x sum(q q_x)) - b d_x sum(q_x) each.
  __device__ static float dotq(const Raw& r, const XQ* x, int64_t u) {
    const XR b0 = ldxq(x + 8 * (u / 4) + 2 * (u % 4));
    const XR b1 = ldxq(x + 8 * (u / 4) + 2 * (u % 4) + 1);
    const int4 l0 = b0.lo, l1 = b0.hi, h0 = b1.lo, h1 = b1.hi;
    const int xl[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
    const int xh[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
    int al = 0, ah = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      al = __dp4a(static_cast<int>(r.q[i] & 0x0f0f0f0fu), xl[i], al);
      ah = __dp4a(static_cast<int>((r.q[i] >> 4) & 0x0f0f0f0fu), xh[i], ah);
    }
    const float s0 = fmaf(r.a0, b0.d * static_cast<float>(al), -r.b0 * (b0.ds0 + b0.ds1));
    return s0 + fmaf(r.a1, b1.d * static_cast<float>(ah), -r.b1 * (b1.ds0 + b1.ds1));
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
  // Group k: 16 weights (6-bit, offset 32) of half g of record 8(u/4) + 4h + k.
  __device__ static float dotq(const Raw& r, const XQ* x, int64_t u) {
    const int h = static_cast<int>(u / 2 % 2), g = static_cast<int>(u % 2);
    const XQ* xb = x + 8 * (u / 4) + 4 * h;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t* ql = k & 1 ? r.ql1 : r.ql0;
      const int nsh = k < 2 ? 0 : 4;
      const XR b = ldxq(xb + k);
      const int4 xv4 = g ? b.hi : b.lo;
      const int xv[4] = {xv4.x, xv4.y, xv4.z, xv4.w};
      int acc = 0;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t w = ((ql[i] >> nsh) & 0x0f0f0f0fu) | (((r.qh[i] >> (2 * k)) & 0x03030303u) << 4);
        acc = __dp4a(static_cast<int>(w), xv[i], acc);
      }
      s = fmaf(r.ds[k], fmaf(b.d, static_cast<float>(acc), -32.0f * (g ? b.ds1 : b.ds0)), s);
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
// q / k / v segments with rope and the K / V cache store as the epilogue
// (pos null: none); see MatvecRope.
struct RopeArg {
  const int32_t* pos = nullptr;
  const int32_t* rows = nullptr;
  TV kc, vc;
  int32_t kv_type = 0;  // 0 F32, 1 F16, 2 BF16
  RopeArgs a{};
};

// Element i of a cache row of the given type (0 F32, 1 F16, 2 BF16), converted
// as set_rows converts it.
__device__ __forceinline__ void store_cell(char* row, int32_t type, int64_t i, float v) {
  if (type == 0) reinterpret_cast<float*>(row)[i] = v;
  else if (type == 1) reinterpret_cast<__half*>(row)[i] = __float2half_rn(v);
  else reinterpret_cast<__nv_bfloat16*>(row)[i] = __float2bfloat16_rn(v);
}

// The rope epilogue of a warp holding rows n0, n1 of segment seg (q, k, v): q
// and k rows are one rotation pair (n_dims = D: pair i of head h is rows hD +
// i, hD + i + D / 2 for neox, hD + 2i, hD + 2i + 1 otherwise), rotated as
// rope_store_kernel rotates them (double-precision angle and rotation);
// k and v also go to their cache row. One lane calls it.
__device__ void rope_epilogue(const RopeArg& ro, int seg, int64_t n0, int64_t n1, float y[2]) {
  const int64_t D = ro.a.n_dims;
  if (seg < 2) {
    const int64_t i = ro.a.neox ? n0 % D : (n0 % D) / 2;
    const double p = static_cast<double>(ro.pos[0]) * static_cast<double>(ro.a.freq_scale);
    const double theta = p * pow(static_cast<double>(ro.a.theta_base), -2.0 * static_cast<double>(i) / ro.a.n_dims);
    double sn, cs;
    sincos(theta, &sn, &cs);
    const double x0 = y[0], x1 = y[1];
    y[0] = static_cast<float>(x0 * cs - x1 * sn);
    y[1] = static_cast<float>(x0 * sn + x1 * cs);
  }
  const int32_t id = ro.rows[0];
  const TV& c = seg == 1 ? ro.kc : ro.vc;
  if (seg > 0 && id >= 0 && id < c.ne[1]) {
    char* row = c.data + static_cast<int64_t>(id) * c.nb[1];
    store_cell(row, ro.kv_type, n0, y[0]);
    store_cell(row, ro.kv_type, n1, y[1]);
  }
}

// Units a lane loads before it computes on any of them, per weight row: for
// one activation row, as many as the registers take, so that a decode row's
// weights are all in flight at once (a 2048-wide Q4_0 row is 2 units a lane);
// two of the small units when 8 activation rows hold the registers.
template <DType T, int MC, int NR>
constexpr int batch_units() {
  const int regs = static_cast<int>(sizeof(typename Unit<T>::Raw) / 4) * NR;  // per unit of each row
  if (MC != 1) return regs <= 12 ? 2 : 1;
  return regs <= 12 ? 4 : regs <= 40 ? 2 : 1;
}

// acc[r][c] = W row r . x row c over the row's units.
template <DType T, int MC, int R, class X>
__device__ __forceinline__ void row_dots(const char* const wr[R], int64_t n_units, const float* const xr[MC],
                                         int lane, float acc[R][MC]) {
  using U = Unit<T>;
  constexpr int NB = batch_units<T, MC, R>();
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < MC; ++c) acc[r][c] = 0.0f;
  for (int64_t u0 = lane; u0 < n_units; u0 += NB * kWarp) {
    typename U::Raw raw[NB][R];
#pragma unroll
    for (int b = 0; b < NB; ++b)
      if (u0 + b * kWarp < n_units)
#pragma unroll
        for (int r = 0; r < R; ++r) raw[b][r] = U::load(wr[r], u0 + b * kWarp);
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      const int64_t u = u0 + b * kWarp;
      if (u >= n_units) break;
#pragma unroll
      for (int c = 0; c < MC; ++c) {
        if (!xr[c]) continue;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          if constexpr (std::is_same_v<X, XStaged>)
            acc[r][c] += U::dotq(raw[b][r], reinterpret_cast<const XQ*>(xr[c]), u);
          else
            acc[r][c] += U::template dot<X>(raw[b][r], xr[c], u);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < MC; ++c) acc[r][c] = warp_sum(acc[r][c]);
}

// quantize_xq: x row blockIdx.y as XQ records at xq + blockIdx.y * K / 32,
// normalised first when nm.on (one row only: sum of squares in float by each
// thread over its float4 slices, one block reduction, x / sqrt(mean + eps) * w:
// the rms_norm formula; the normalised row also goes to nm.y). Each block quantizes 16 records (512 elements), each
// record by 8 consecutive threads (4 elements each: max and sums by shuffles);
// with a norm every block first sums the whole row. K is a multiple of 32.
constexpr int kQuantThreads = 128;
constexpr int kQuantRecords = kQuantThreads / 8;

__global__ void __launch_bounds__(kQuantThreads) quantize_xq(TV xt, int64_t K, NormArg nm, XQ* xq) {
  __shared__ float scratch[32];
  pdl_wait();
  const float* x = reinterpret_cast<const float*>(row_ptr(xt, blockIdx.y));
  xq += static_cast<int64_t>(blockIdx.y) * (K / 32);
  float inv = 1.0f;
  if (nm.on) {
    float ss = 0.0f;
    for (int64_t e = 4 * static_cast<int64_t>(threadIdx.x); e < K; e += 4 * kQuantThreads) {
      const float4 v = ld4(x + e);
      ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, ss))));
    }
    ss = block_sum(ss, scratch);
    inv = 1.0f / sqrtf(ss / static_cast<float>(K) + nm.eps);
  }
  const int sub = threadIdx.x % 8;  // the thread's 4 elements within its record
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kQuantRecords * 32 + 4 * static_cast<int64_t>(threadIdx.x);
  const bool in = e < K;  // whole records in or out (K % 32 == 0)
  float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (in) {
    const float4 f = ld4(x + e);
    v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
    if (nm.on) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[j] *= inv;
        if (nm.w) v[j] *= nm.one_plus ? 1.0f + __ldg(nm.w + e + j) : __ldg(nm.w + e + j);
      }
      if (nm.y.data) *reinterpret_cast<float4*>(reinterpret_cast<float*>(nm.y.data) + e) = make_float4(v[0], v[1], v[2], v[3]);
    }
  }
  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
  for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float d = amax / 127.0f;
  const float id = amax == 0.0f ? 0.0f : 1.0f / d;
  int q[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) q[j] = __float2int_rn(v[j] * id);
  int sum = q[0] + q[1] + q[2] + q[3];
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  sum += __shfl_xor_sync(0xffffffffu, sum, 2);  // over the 4 threads of a half record
  if (in) {
    XQ& r = xq[e / 32];
    *reinterpret_cast<int*>(r.q + 4 * sub) =
        (q[0] & 0xff) | ((q[1] & 0xff) << 8) | ((q[2] & 0xff) << 16) | (static_cast<int>(q[3] & 0xff) << 24);
    if (sub == 0) {
      r.d = d;
      r.ds0 = d * static_cast<float>(sum);
    }
    if (sub == 4) r.ds1 = d * static_cast<float>(sum);
  }
}

// XS: x (m_total rows) as quantize_xq's records xs, K / 32 a row. ROPE: the q / k / v
// launch with ro's epilogue (R == 2, MC == 1: a warp's rows are a rotation
// pair, remapped for neox).
template <DType T, int MC, int R, bool XS, bool ROPE = false>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarp)
    matvec_kernel(SegsArg s, TV x, int64_t m_total, const XQ* xs, AddArg ad, RopeArg ro) {
  static_assert(!ROPE || (R == 2 && MC == 1), "rope pairs are two rows of one activation row");
  pdl_wait();
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  int seg = 0;
  while (seg < s.n && warp >= s.warp_end[seg]) ++seg;
  if (seg == s.n) return;
  const TV& w = s.w[seg];
  int64_t n0 = (warp - (seg ? s.warp_end[seg - 1] : 0)) * R;
  int64_t rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rows[r] = n0 + r;
  if constexpr (ROPE) {
    if (seg < 2 && ro.a.neox) {  // pair n0 / 2 of the segment: head h, index i
      const int64_t half = ro.a.n_dims / 2, pair = n0 / 2;
      n0 = pair / half * ro.a.n_dims + pair % half;
      rows[0] = n0;
      rows[1] = n0 + half;
    }
  }
  const char* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w.data + (rows[r] < w.ne[1] ? rows[r] : n0) * w.nb[1];
  const float* xr[MC];
#pragma unroll
  for (int c = 0; c < MC; ++c)
    xr[c] = c >= m_total ? nullptr
            : XS         ? reinterpret_cast<const float*>(xs + c * (x.ne[0] / 32))
                         : reinterpret_cast<const float*>(row_ptr(x, c));
  float acc[R][MC];
  using XA = std::conditional_t<XS, XStaged, XGlobal>;
  row_dots<T, MC, R, XA>(wr, w.ne[0] / Unit<T>::kElems, xr, lane, acc);
  if constexpr (ROPE) {
    if (lane == 0) {  // every lane holds both sums
      float y[2] = {acc[0][0], acc[1][0]};
      rope_epilogue(ro, seg, rows[0], rows[1], y);
      float* yo = reinterpret_cast<float*>(s.y[seg].data);
      yo[rows[0]] = y[0];
      yo[rows[1]] = y[1];
    }
    return;
  }
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
    matvec_glu_kernel(TV wg, TV wu, TV x, TV y, TV yg, TV yu, Binary op, ExpTier e, int64_t m_total, const XQ* xs) {
  pdl_wait();
  const int lane = threadIdx.x % kWarp;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp) * R;
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
    xr[c] = c >= m_total ? nullptr
            : XS         ? reinterpret_cast<const float*>(xs + c * (x.ne[0] / 32))
                         : reinterpret_cast<const float*>(row_ptr(x, c));
  float acc[2 * R][MC];
  using XA = std::conditional_t<XS, XStaged, XGlobal>;
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

// Quantized weights take x staged as XQ records (every row); float weights
// always read float x from global memory (staging a float copy measured
// slower for F16: its 16-byte units keep the lanes' x reads within few lines).
template <DType T>
constexpr bool kStages = T == DType::Q4_0 || T == DType::Q8_0 || T == DType::Q4_K || T == DType::Q6_K;

// Scratch of the staged x rows (m of them, each quantized once for the launch:
// a weight unit is loaded once and dotted with every row's records, and each
// row's sums are those of a one-row launch, bit for bit), 0 when x is read from
// global memory: float weights, K past kMatvecMaxStagedK, or staging turned off
// (KESTREL_CUDA_MATVEC=global, read once: the float path, for comparisons in
// one binary).
size_t staged_bytes(DType wt, int64_t K, int64_t m) {
  static const bool off = [] {
    const char* e = std::getenv("KESTREL_CUDA_MATVEC");
    return e && std::strcmp(e, "global") == 0;
  }();
  if (off || m < 1 || m > kMatvecMaxRows || K > kMatvecMaxStagedK || dtype_block_size(wt) == 1) return 0;
  return static_cast<size_t>(m) * static_cast<size_t>(K / 32) * sizeof(XQ);
}

// x's m rows into records at xq, normalised on the way when nm.on (m == 1).
cudaError_t run_quantize(TV x, int64_t m, const NormArg& nm, XQ* xq, cudaStream_t s) {
  if (nm.on && m != 1) return cudaErrorInvalidValue;
  const int64_t records = x.ne[0] / 32;
  const dim3 blocks(static_cast<unsigned>((records + kQuantRecords - 1) / kQuantRecords), static_cast<unsigned>(m));
  (void)launch_k(quantize_xq, blocks, kQuantThreads, 0, s, x, x.ne[0], nm, xq);
  return cudaGetLastError();
}

template <DType T, int MC, int R>
cudaError_t segs_r(const MatvecSegs& segs, TV x, int64_t m, const NormArg& nm, const AddArg& ad, const RopeArg& ro,
                   void* scratch, bool x_quantized, cudaStream_t s) {
  {
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
    const bool staged = staged_bytes(T, x.ne[0], m) > 0 && scratch;
    if ((nm.on || x_quantized) && !staged) return cudaErrorInvalidValue;
    if constexpr (kStages<T>) {
      if (staged) {
        XQ* xq = static_cast<XQ*>(scratch);
        if (!x_quantized) {
          const cudaError_t q = run_quantize(x, m, nm, xq, s);
          if (q != cudaSuccess) return q;
        }
        if constexpr (MC == 1 && R == 2) {
          if (ro.pos) {
            (void)launch_k(matvec_kernel<T, MC, R, true, true>, blocks, kWarpsPerBlock * kWarp, 0, s, a, x, m,
                           static_cast<const XQ*>(xq), ad, ro);
            return cudaGetLastError();
          }
        }
        (void)launch_k(matvec_kernel<T, MC, R, true>, blocks, kWarpsPerBlock * kWarp, 0, s, a, x, m,
                       static_cast<const XQ*>(xq), ad, RopeArg{});
        return cudaGetLastError();
      }
    }
    const bool pdl = kStages<T> || programmatic_float_matvecs();
    if constexpr (MC == 1 && R == 2) {
      if (ro.pos) {
        (void)launch_kp(pdl, matvec_kernel<T, MC, R, false, true>, blocks, kWarpsPerBlock * kWarp, 0, s, a, x, m,
                        static_cast<const XQ*>(nullptr), ad, ro);
        return cudaGetLastError();
      }
    }
    (void)launch_kp(pdl, matvec_kernel<T, MC, R, false>, blocks, kWarpsPerBlock * kWarp, 0, s, a, x, m,
                    static_cast<const XQ*>(nullptr), ad, RopeArg{});
    return cudaGetLastError();
  }
}

template <DType T, int MC, int R>
cudaError_t glu_r(TV g, TV u, TV x, TV y, TV yg, TV yu, Binary op, ExpTier e, int64_t m, const NormArg& nm,
                  void* scratch, cudaStream_t s) {
  {
    const int64_t warps = (g.ne[1] + R - 1) / R;
    if (warps == 0) return cudaSuccess;
    const unsigned blocks = static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
    const bool staged = staged_bytes(T, x.ne[0], m) > 0 && scratch;
    if (nm.on && !staged) return cudaErrorInvalidValue;
    if constexpr (kStages<T>) {
      if (staged) {
        XQ* xq = static_cast<XQ*>(scratch);
        const cudaError_t q = run_quantize(x, m, nm, xq, s);
        if (q != cudaSuccess) return q;
        (void)launch_k(matvec_glu_kernel<T, MC, R, true>, blocks, kWarpsPerBlock * kWarp, 0, s, g, u, x, y, yg, yu,
                       op, e, m, static_cast<const XQ*>(xq));
        return cudaGetLastError();
      }
    }
    (void)launch_kp(kStages<T> || programmatic_float_matvecs(), matvec_glu_kernel<T, MC, R, false>, blocks,
                    kWarpsPerBlock * kWarp, 0, s, g, u, x, y, yg, yu, op, e, m, static_cast<const XQ*>(nullptr));
    return cudaGetLastError();
  }
}

// Weight rows per warp at one activation row: 1, so that the small decode
// matrices still give every scheduler a few warps (measured faster than 2 for
// every type on an H100: Q4_0 tg128 +2.6%, F16 +3.5%);
// KESTREL_CUDA_MATVEC_ROWS=2 for comparisons in one binary (read once).
bool one_row_per_warp() {
  static const bool one = [] {
    const char* e = std::getenv("KESTREL_CUDA_MATVEC_ROWS");
    return !(e && std::strcmp(e, "2") == 0);
  }();
  return one;
}

template <DType T>
cudaError_t run_segs(const MatvecSegs& segs, TV x, int64_t m, const NormArg& nm, const AddArg& ad, const RopeArg& ro,
                     void* scratch, bool x_quantized, cudaStream_t s) {
  return by_rows(m, [&](auto mc) {
    constexpr int MC = decltype(mc)::value;
    if constexpr (MC == 1) {
      if (one_row_per_warp() && !ro.pos) return segs_r<T, 1, 1>(segs, x, m, nm, ad, ro, scratch, x_quantized, s);
      return segs_r<T, 1, 2>(segs, x, m, nm, ad, ro, scratch, x_quantized, s);
    } else {
      if (ro.pos) return cudaErrorInvalidValue;
      return segs_r<T, MC, 1>(segs, x, m, nm, ad, ro, scratch, x_quantized, s);
    }
  });
}

template <DType T>
cudaError_t run_glu(TV g, TV u, TV x, TV y, TV yg, TV yu, Binary op, ExpTier e, int64_t m, const NormArg& nm,
                    void* scratch, cudaStream_t s) {
  return by_rows(m, [&](auto mc) {
    constexpr int MC = decltype(mc)::value;
    if constexpr (MC == 1) {
      if (one_row_per_warp()) return glu_r<T, 1, 1>(g, u, x, y, yg, yu, op, e, m, nm, scratch, s);
      return glu_r<T, 1, 2>(g, u, x, y, yg, yu, op, e, m, nm, scratch, s);
    } else {
      return glu_r<T, MC, 1>(g, u, x, y, yg, yu, op, e, m, nm, scratch, s);
    }
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
  return m == 1 && x.ne[0] % 32 == 0 && unit_elems(wt) > 0 && staged_bytes(wt, x.ne[0], m) > 0;
}

size_t matvec_scratch_bytes(DType wt, const TV& x) {
  return unit_elems(wt) ? staged_bytes(wt, x.ne[0], x.ne[1] * x.ne[2] * x.ne[3]) : 0;
}

bool matvec_can_rope(const MatvecSegs& segs, const TV& x, int64_t n_dims, int64_t heads_q, int64_t heads_kv) {
  if (x.ne[1] * x.ne[2] * x.ne[3] != 1 || segs.n != 3 || n_dims <= 0 || n_dims % 2) return false;
  if (segs.w[0].ne[1] != n_dims * heads_q || segs.w[1].ne[1] != n_dims * heads_kv ||
      segs.w[2].ne[1] != n_dims * heads_kv)
    return false;
  for (int i = 0; i < 3; ++i) {
    const TV& y = segs.y[i];
    if (y.ne[0] * y.ne[1] * y.ne[2] * y.ne[3] != segs.w[i].ne[1] || y.nb[0] != 4) return false;
  }
  return true;
}

cudaError_t launch_matvec(DType wt, const MatvecSegs& segs, TV x, void* scratch, cudaStream_t s,
                          const MatvecNorm* norm, const MatvecAdd* add, bool x_quantized, const MatvecRope* rope) {
  const int64_t m = x.ne[1] * x.ne[2] * x.ne[3];
  if (m == 0 || segs.n == 0) return cudaSuccess;
  if (norm && !matvec_can_norm(wt, x)) return cudaErrorInvalidValue;
  AddArg ad;
  if (add) {
    ad.r = add->r;
    ad.s = add->s;
  }
  const NormArg nm = norm_arg(norm);
  if (x_quantized && (norm || !matvec_scratch_bytes(wt, x))) return cudaErrorInvalidValue;
  RopeArg ro;
  if (rope) {
    if (add || !rope->pos || !rope->rows || rope->args.n_dims <= 0 ||
        !matvec_can_rope(segs, x, rope->args.n_dims, segs.w[0].ne[1] / rope->args.n_dims,
                         segs.w[1].ne[1] / rope->args.n_dims) ||
        rope->kc.ne[0] != segs.w[1].ne[1] || rope->vc.ne[0] != segs.w[2].ne[1] || rope->kc.ne[1] != rope->vc.ne[1])
      return cudaErrorInvalidValue;
    ro.pos = rope->pos;
    ro.rows = rope->rows;
    ro.kc = rope->kc;
    ro.vc = rope->vc;
    ro.a = rope->args;
    switch (rope->kv_type) {
      case DType::F32: ro.kv_type = 0; break;
      case DType::F16: ro.kv_type = 1; break;
      case DType::BF16: ro.kv_type = 2; break;
      default: return cudaErrorInvalidValue;
    }
  }
  return by_type(wt, [&](auto tc) {
    return run_segs<decltype(tc)::value>(segs, x, m, nm, ad, ro, scratch, x_quantized, s);
  });
}

cudaError_t launch_matvec_glu(DType wt, TV g, TV u, TV x, TV y, TV yg, TV yu, Binary glu, ExpTier tier,
                              void* scratch, cudaStream_t s, const MatvecNorm* norm) {
  const int64_t m = x.ne[1] * x.ne[2] * x.ne[3];
  if (m == 0 || g.ne[1] == 0) return cudaSuccess;
  if (glu != Binary::swiglu && glu != Binary::geglu_tanh && glu != Binary::geglu_erf && glu != Binary::geglu_sigmoid)
    return cudaErrorInvalidValue;
  if (norm && !matvec_can_norm(wt, x)) return cudaErrorInvalidValue;
  const NormArg nm = norm_arg(norm);
  return by_type(wt, [&](auto tc) {
    return run_glu<decltype(tc)::value>(g, u, x, y, yg, yu, glu, tier, m, nm, scratch, s);
  });
}

}  // namespace kestrel::cuda
