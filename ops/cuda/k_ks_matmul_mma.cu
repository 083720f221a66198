// CUDA kernel: Kronecker-sparse matmul (ks_matmul) with BF16 weights on tensor cores.
//
// Same blocks and tiles as k_ks_matmul.cu: per block (i, j) of pattern (a, b, c, d) a GEMM
// Y_ij (b x M) = W_ij^T (b x c) X_ij (c x M), one thread block per output-stationary tile
// of BM outputs x BN tokens, x read and y written in place with stride d between the
// block's features, both layouts. The inputs are walked in steps of BK: the next step's
// weights and x are loaded into registers while the current step's tiles in shared memory
// feed the tensor cores, then stored into the other of two shared buffers; one barrier per
// step that every thread reaches (tiles past b, c or M are zero-filled loads and skipped
// stores), so any b, c, d and token count works.
// Math: mma.sync m16n8k16, BF16 x BF16 products accumulated in F32. Each warp holds a
// (BM / WM) x (BN / WN) tile of 16 x 8 accumulator fragments. x is F32 in memory and is
// rounded to BF16 (round to nearest even) on its way into shared memory; weights are BF16
// already. Two kernels, one result:
// - ks_matmul_mma_bf16: shared tiles hold pairs of consecutive inputs in one 32-bit word
//   ([l / 2][k] for the weights, [l / 2][m] for x), the order of the mma fragments, so that
//   each fragment register is one 32-bit load; row strides of 8 or 24 words mod 32 make
//   those loads conflict-free.
// - ks_matmul_ldsm_bf16: shared tiles as the data lie in memory (weights [l][k], x [l][m]
//   or [m][l]), copied without repacking, fragments read four registers at a time by
//   ldmatrix (.trans where the mma wants the other order); fewer instructions per mma.
// Error: x rounded to BF16 keeps 8 significant bits (unit roundoff u = 2^-8); products of
// two BF16 values are exact in F32, so against the F32 sum y = sum_l w_l x_l
//   |y_mma - y| <= (u + c * 2^-22) * sum_l |w_l x_l|
// (the second term: F32 accumulation over the c inputs, with slack for the tensor core's
// rounding of each 16-input partial sum). Each output is the same chain of 16-input mma
// steps in input order for every configuration: the tile changes the speed, not the bits.
// Non-finite inputs propagate (BF16 has F32's exponent range; values above the largest
// BF16 round to infinity, as F32 values within 2^-9 of FLT_MAX).
#include <cuda_bf16.h>

#include <cstdint>

#include "ops/cuda/cuda_ks_mma.h"
#include "ops/cuda/mma.cuh"

namespace kestrel::cuda {

namespace {

struct MmaDev {
  const char* w;  // BF16 weights {b, c, d, a}
  int64_t w_nb1, w_nb2, w_nb3;  // bytes
  const float* x;
  float* y;
  int64_t x_ld, y_ld;
  int32_t b, c, d;
  int64_t M;
  int64_t n_kt, n_mt;        // output tiles per block, token tiles
  bool w_vec, x_vec, y_vec;  // 4-weight, 4-float and (batch_last) 2-float vector accesses allowed
  bool w_vec8;               // 8-weight (16-byte) accesses allowed
};

// A shared row stride (in words) >= n, a multiple of 4 (16-byte stores), 8 or 24 mod 32
// (the 4 x 8 lanes of a fragment load hit 32 distinct banks).
constexpr int padded(int n) {
  int s = n;
  while (s % 4 != 0 || (s % 32 != 8 && s % 32 != 24)) ++s;
  return s;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
  return *reinterpret_cast<const uint32_t*>(&v);
}

// BF16 bits of weights k .. k+3 of a row (zeros past b).
__device__ __forceinline__ void ld_w4(const MmaDev& p, const char* row, int64_t k, uint32_t (&o)[4]) {
  const uint16_t* r = reinterpret_cast<const uint16_t*>(row);
  if (p.w_vec && k + 4 <= p.b) {
    const uint2 u = *reinterpret_cast<const uint2*>(r + k);
    o[0] = u.x & 0xffffu, o[1] = u.x >> 16, o[2] = u.y & 0xffffu, o[3] = u.y >> 16;
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q) o[q] = k + q < p.b ? r[k + q] : 0u;
  }
}

// x[m .. m+3] of a batch_last row (zeros past M).
__device__ __forceinline__ float4 ld_x4(const MmaDev& p, const float* row, int64_t m) {
  if (p.x_vec && m + 4 <= p.M) return *reinterpret_cast<const float4*>(row + m);
  float f[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) f[q] = m + q < p.M ? row[m + q] : 0.0f;
  return make_float4(f[0], f[1], f[2], f[3]);
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Two buffers of each shared tile.
template <int BM, int BN, int BK>
constexpr size_t smem_bytes() {
  return sizeof(uint32_t) * 2 * (BK / 2) * (padded(BM) + padded(BN));
}

// Blocks a multiprocessor must hold: 16 warps (128 registers a thread) to hide memory
// latency, 12 for warp tiles of 12 or more fragments (which would spill in 128).
constexpr int min_blocks(int bm, int bn, int wm, int wn) {
  const int warps = wm * wn, frags = (bm / wm / 16) * (bn / wn / 8);
  const int b = (frags >= 12 ? 12 : 16) / warps;
  return b > 0 ? b : 1;
}

template <bool BL, int BM, int BN, int WM, int WN, int BK>
__global__ void __launch_bounds__(32 * WM * WN, min_blocks(BM, BN, WM, WN)) ks_matmul_mma_bf16(MmaDev p) {
  constexpr int NT = 32 * WM * WN;
  constexpr int KP = BK / 2;                   // input pairs per step
  static_assert(BK % 16 == 0, "whole mma steps");
  constexpr int WTM = BM / WM, WTN = BN / WN;  // warp tile
  constexpr int MI = WTM / 16, NI = WTN / 8;   // fragments per warp tile
  static_assert(WTM % 16 == 0 && WTN % 8 == 0 && BM % 4 == 0 && BN % 4 == 0, "tile shape");
  constexpr int SA = padded(BM), SB = padded(BN);
  constexpr int IA = KP * BM / 4;                    // weight items: an input pair x 4 outputs
  constexpr int IB = BL ? KP * BN / 4 : BN * BK / 4;  // x items: a pair x 4 tokens | a token x 4 inputs
  constexpr int NA = (IA + NT - 1) / NT, NB = (IB + NT - 1) / NT;
  extern __shared__ __align__(16) uint32_t smem[];  // smem_bytes<BM, BN, BK>()
  uint32_t(*As)[KP][SA] = reinterpret_cast<uint32_t(*)[KP][SA]>(smem);  // (w[l][k], w[l+1][k]) at [l / 2][k]
  uint32_t(*Bs)[KP][SB] = reinterpret_cast<uint32_t(*)[KP][SB]>(smem + 2 * KP * SA);  // (x[l][m], x[l+1][m]) at [l / 2][m]

  const int tid = threadIdx.x;
  // Block order as in k_ks_matmul.cu (token_major: the d blocks j of a tile side by side).
  int64_t t = blockIdx.x, kt, mt, i, j;
  if constexpr (BL) {
    kt = t % p.n_kt;
    t /= p.n_kt;
    mt = t % p.n_mt;
    t /= p.n_mt;
    i = t / p.d, j = t % p.d;
  } else {
    j = t % p.d;
    t /= p.d;
    kt = t % p.n_kt;
    t /= p.n_kt;
    mt = t % p.n_mt;
    i = t / p.n_mt;
  }
  const int64_t k0 = kt * BM, m0 = mt * BN;
  const char* wb = p.w + j * p.w_nb2 + i * p.w_nb3;

  uint4 ra[NA], rb[NB];
  // Global -> registers (packed BF16 pairs) for the step starting at input l0.
  auto load = [&](int64_t l0) {
#pragma unroll
    for (int s = 0; s < NA; ++s) {
      const int v = tid + s * NT;
      uint4 r = make_uint4(0u, 0u, 0u, 0u);
      if (v < IA) {
        const int64_t l = l0 + 2 * (v / (BM / 4)), k = k0 + (v % (BM / 4)) * 4;
        uint32_t lo[4] = {0u, 0u, 0u, 0u}, hi[4] = {0u, 0u, 0u, 0u};
        if (l < p.c) ld_w4(p, wb + l * p.w_nb1, k, lo);
        if (l + 1 < p.c) ld_w4(p, wb + (l + 1) * p.w_nb1, k, hi);
        r = make_uint4(lo[0] | hi[0] << 16, lo[1] | hi[1] << 16, lo[2] | hi[2] << 16, lo[3] | hi[3] << 16);
      }
      ra[s] = r;
    }
#pragma unroll
    for (int s = 0; s < NB; ++s) {
      const int v = tid + s * NT;
      uint4 r = make_uint4(0u, 0u, 0u, 0u);
      if (v < IB) {
        if constexpr (BL) {  // 4 tokens of input rows l and l + 1
          const int64_t l = l0 + 2 * (v / (BN / 4)), m = m0 + (v % (BN / 4)) * 4;
          float4 f0 = make_float4(0.f, 0.f, 0.f, 0.f), f1 = f0;
          if (l < p.c) f0 = ld_x4(p, p.x + ((i * p.c + l) * p.d + j) * p.x_ld, m);
          if (l + 1 < p.c) f1 = ld_x4(p, p.x + ((i * p.c + l + 1) * p.d + j) * p.x_ld, m);
          r = make_uint4(pack_bf16(f0.x, f1.x), pack_bf16(f0.y, f1.y), pack_bf16(f0.z, f1.z), pack_bf16(f0.w, f1.w));
        } else {  // inputs l .. l+3 of one token
          const int64_t m = m0 + v / (BK / 4), l = l0 + (v % (BK / 4)) * 4;
          float f[4] = {0.f, 0.f, 0.f, 0.f};
          if (m < p.M) {
            const float* base = p.x + m * p.x_ld + (i * p.c) * p.d + j;
            if (p.x_vec && l + 4 <= p.c) {
              const float4 u = *reinterpret_cast<const float4*>(base + l);
              f[0] = u.x, f[1] = u.y, f[2] = u.z, f[3] = u.w;
            } else {
#pragma unroll
              for (int q = 0; q < 4; ++q)
                if (l + q < p.c) f[q] = base[(l + q) * p.d];
            }
          }
          r.x = pack_bf16(f[0], f[1]);
          r.y = pack_bf16(f[2], f[3]);
        }
      }
      rb[s] = r;
    }
  };
  // Registers -> shared buffer `buf`.
  auto store = [&](int buf) {
#pragma unroll
    for (int s = 0; s < NA; ++s) {
      const int v = tid + s * NT;
      if (v < IA) *reinterpret_cast<uint4*>(&As[buf][v / (BM / 4)][(v % (BM / 4)) * 4]) = ra[s];
    }
#pragma unroll
    for (int s = 0; s < NB; ++s) {
      const int v = tid + s * NT;
      if (v < IB) {
        if constexpr (BL) {
          *reinterpret_cast<uint4*>(&Bs[buf][v / (BN / 4)][(v % (BN / 4)) * 4]) = rb[s];
        } else {
          const int m = v / (BK / 4), lp = (v % (BK / 4)) * 2;
          Bs[buf][lp][m] = rb[s].x;
          Bs[buf][lp + 1][m] = rb[s].y;
        }
      }
    }
  };

  const int warp = tid / 32, lane = tid % 32, g = lane >> 2, tg = lane & 3;
  const int wm = warp % WM, wn = warp / WM;
  float acc[MI][NI][4];
#pragma unroll
  for (int a = 0; a < MI; ++a)
#pragma unroll
    for (int b = 0; b < NI; ++b)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[a][b][q] = 0.0f;

  load(0);
  store(0);
  __syncthreads();
  int buf = 0;
  for (int64_t l0 = 0; l0 < p.c; l0 += BK) {
    const bool next = l0 + BK < p.c;  // the same for every thread
    if (next) load(l0 + BK);
#pragma unroll
    for (int kp = 0; kp < KP; kp += 8) {  // one m16n8k16 step: input pairs kp .. kp+7
      uint32_t af[MI][4], bf[NI][2];
#pragma unroll
      for (int a = 0; a < MI; ++a) {
        const int r = wm * WTM + a * 16 + g;
        af[a][0] = As[buf][kp + tg][r];
        af[a][1] = As[buf][kp + tg][r + 8];
        af[a][2] = As[buf][kp + tg + 4][r];
        af[a][3] = As[buf][kp + tg + 4][r + 8];
      }
#pragma unroll
      for (int b = 0; b < NI; ++b) {
        const int n = wn * WTN + b * 8 + g;
        bf[b][0] = Bs[buf][kp + tg][n];
        bf[b][1] = Bs[buf][kp + tg + 4][n];
      }
#pragma unroll
      for (int a = 0; a < MI; ++a)
#pragma unroll
        for (int b = 0; b < NI; ++b) mma_bf16(acc[a][b], af[a], bf[b]);
    }
    if (next) store(buf ^ 1);
    __syncthreads();
    buf ^= 1;
  }

  // Fragment (a, b): acc[0], acc[1] = output k, tokens m, m + 1; acc[2], acc[3] = output k + 8.
#pragma unroll
  for (int a = 0; a < MI; ++a)
#pragma unroll
    for (int b = 0; b < NI; ++b)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t k = k0 + wm * WTM + a * 16 + g + 8 * h;
        const int64_t m = m0 + wn * WTN + b * 8 + 2 * tg;
        const float v0 = acc[a][b][2 * h], v1 = acc[a][b][2 * h + 1];
        if (k >= p.b) continue;
        if constexpr (BL) {
          float* row = p.y + ((i * p.b + k) * p.d + j) * p.y_ld;
          if (p.y_vec && m + 2 <= p.M) {
            *reinterpret_cast<float2*>(row + m) = make_float2(v0, v1);
          } else {
            if (m < p.M) row[m] = v0;
            if (m + 1 < p.M) row[m + 1] = v1;
          }
        } else {
          const int64_t f = (i * p.b + k) * p.d + j;
          if (m < p.M) p.y[m * p.y_ld + f] = v0;
          if (m + 1 < p.M) p.y[(m + 1) * p.y_ld + f] = v1;
        }
      }
}

template <int BM, int BN, int BK, bool BL>
constexpr size_t ldsm_smem_bytes() {
  return 2 * 2 * (size_t(BK) * ldsm_stride(BM) + (BL ? size_t(BK) * ldsm_stride(BN) : size_t(BN) * ldsm_stride(BK)));
}

// The same product as ks_matmul_mma_bf16 (same mma chain per output, so the same bits)
// with the tiles kept in shared memory as they lie in global memory: weights [l][k] copied
// 8 at a time, x [l][m] (batch_last) or [m][l] (token_major) converted 4 at a time, and
// the fragments read by ldmatrix (.trans where the mma wants the other order). Tiles that
// lie wholly inside b, c and M (and aligned) are loaded without per-element checks.
template <bool BL, int BM, int BN, int WM, int WN, int BK>
__global__ void __launch_bounds__(32 * WM * WN, min_blocks(BM, BN, WM, WN)) ks_matmul_ldsm_bf16(MmaDev p) {
  constexpr int NT = 32 * WM * WN;
  constexpr int WTM = BM / WM, WTN = BN / WN;
  constexpr int MI = WTM / 16, NI = WTN / 8;
  static_assert(WTM % 16 == 0 && WTN % 16 == 0 && BK % 16 == 0 && BM % 8 == 0, "tile shape");
  constexpr int SW = ldsm_stride(BM);                      // weights [BK][SW]
  constexpr int SX = BL ? ldsm_stride(BN) : ldsm_stride(BK);  // x [BK][SX] or [BN][SX]
  constexpr int XROWS = BL ? BK : BN;
  constexpr int IA = BK * BM / 8;  // weight items: 8 outputs of one input
  constexpr int IB = BK * BN / 4;  // x items: 4 tokens of one input | 4 inputs of one token
  constexpr int NA = (IA + NT - 1) / NT, NB = (IB + NT - 1) / NT;
  extern __shared__ __align__(16) uint16_t lsm[];  // ldsm_smem_bytes<BM, BN, BK, BL>()
  uint16_t(*Ws)[BK][SW] = reinterpret_cast<uint16_t(*)[BK][SW]>(lsm);
  uint16_t(*Xs)[XROWS][SX] = reinterpret_cast<uint16_t(*)[XROWS][SX]>(lsm + 2 * BK * SW);

  const int tid = threadIdx.x;
  int64_t t = blockIdx.x, kt, mt, i, j;
  if constexpr (BL) {
    kt = t % p.n_kt;
    t /= p.n_kt;
    mt = t % p.n_mt;
    t /= p.n_mt;
    i = t / p.d, j = t % p.d;
  } else {
    j = t % p.d;
    t /= p.d;
    kt = t % p.n_kt;
    t /= p.n_kt;
    mt = t % p.n_mt;
    i = t / p.n_mt;
  }
  const int64_t k0 = kt * BM, m0 = mt * BN;
  const char* wb = p.w + j * p.w_nb2 + i * p.w_nb3;
  // Tiles inside b and M with 16-byte weight rows and vector x: no per-element checks
  // for steps inside c either (the same for every thread of the block).
  const bool inner = p.w_vec8 && p.x_vec && k0 + BM <= p.b && m0 + BN <= p.M;
  const float* xb = BL ? p.x + ((i * p.c) * p.d + j) * p.x_ld : p.x + (i * p.c) * p.d + j;
  const int64_t x_row = BL ? p.d * p.x_ld : p.d;  // x distance between inputs l and l + 1

  uint4 ra[NA];
  uint2 rb[NB];
  auto load = [&](int64_t l0) {
    const bool fast = inner && l0 + BK <= p.c;
#pragma unroll
    for (int s = 0; s < NA; ++s) {
      const int v = tid + s * NT;
      if (v >= IA) break;
      const int64_t l = l0 + v / (BM / 8), k = k0 + (v % (BM / 8)) * 8;
      const uint16_t* row = reinterpret_cast<const uint16_t*>(wb + l * p.w_nb1);
      if (fast) {
        ra[s] = *reinterpret_cast<const uint4*>(row + k);
      } else {
        uint32_t h[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) h[q] = l < p.c && k + q < p.b ? row[k + q] : 0u;
        ra[s] = make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
      }
    }
#pragma unroll
    for (int s = 0; s < NB; ++s) {
      const int v = tid + s * NT;
      if (v >= IB) break;
      float4 f;
      if constexpr (BL) {  // 4 tokens of input l
        const int64_t l = l0 + v / (BN / 4), m = m0 + (v % (BN / 4)) * 4;
        const float* row = xb + l * x_row;
        if (fast) {
          f = *reinterpret_cast<const float4*>(row + m);
        } else {
          const bool in = l < p.c;
          f.x = in && m < p.M ? row[m] : 0.0f;
          f.y = in && m + 1 < p.M ? row[m + 1] : 0.0f;
          f.z = in && m + 2 < p.M ? row[m + 2] : 0.0f;
          f.w = in && m + 3 < p.M ? row[m + 3] : 0.0f;
        }
      } else {  // inputs l .. l+3 of token m
        const int64_t m = m0 + v / (BK / 4), l = l0 + (v % (BK / 4)) * 4;
        const float* base = xb + m * p.x_ld;
        if (fast) {
          f = *reinterpret_cast<const float4*>(base + l);
        } else {
          const bool in = m < p.M;
          f.x = in && l < p.c ? base[l * x_row] : 0.0f;
          f.y = in && l + 1 < p.c ? base[(l + 1) * x_row] : 0.0f;
          f.z = in && l + 2 < p.c ? base[(l + 2) * x_row] : 0.0f;
          f.w = in && l + 3 < p.c ? base[(l + 3) * x_row] : 0.0f;
        }
      }
      rb[s] = make_uint2(pack_bf16(f.x, f.y), pack_bf16(f.z, f.w));
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int s = 0; s < NA; ++s) {
      const int v = tid + s * NT;
      if (v >= IA) break;
      *reinterpret_cast<uint4*>(&Ws[buf][v / (BM / 8)][(v % (BM / 8)) * 8]) = ra[s];
    }
#pragma unroll
    for (int s = 0; s < NB; ++s) {
      const int v = tid + s * NT;
      if (v >= IB) break;
      if constexpr (BL) *reinterpret_cast<uint2*>(&Xs[buf][v / (BN / 4)][(v % (BN / 4)) * 4]) = rb[s];
      else *reinterpret_cast<uint2*>(&Xs[buf][v / (BK / 4)][(v % (BK / 4)) * 4]) = rb[s];
    }
  };

  const int warp = tid / 32, lane = tid % 32;
  const int wm = warp % WM, wn = warp / WM;
  const int lr = lane & 7, lm = lane >> 3;  // row within an 8 x 8 matrix, matrix of the x4 load
  float acc[MI][NI][4];
#pragma unroll
  for (int a = 0; a < MI; ++a)
#pragma unroll
    for (int b = 0; b < NI; ++b)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[a][b][q] = 0.0f;

  load(0);
  store(0);
  __syncthreads();
  int buf = 0;
  for (int64_t l0 = 0; l0 < p.c; l0 += BK) {
    const bool next = l0 + BK < p.c;
    if (next) load(l0 + BK);
#pragma unroll
    for (int kc = 0; kc < BK; kc += 16) {
      uint32_t af[MI][4], bf[NI][2];
      // A (16 outputs x 16 inputs) from Ws[l][k]: matrices (k 0-7, l 0-7), (k 8-15, l 0-7),
      // (k 0-7, l 8-15), (k 8-15, l 8-15), transposed.
#pragma unroll
      for (int a = 0; a < MI; ++a)
        ldsm_x4_t(af[a], smem_u32(&Ws[buf][kc + lr + 8 * (lm >> 1)][wm * WTM + a * 16 + 8 * (lm & 1)]));
#pragma unroll
      for (int b = 0; b < NI; b += 2) {
        uint32_t r[4];
        const int n0 = wn * WTN + b * 8;
        if constexpr (BL) {  // Xs[l][m]: (l 0-7, m 0-7), (l 8-15, m 0-7), (l 0-7, m 8-15), (l 8-15, m 8-15), transposed
          ldsm_x4_t(r, smem_u32(&Xs[buf][kc + lr + 8 * (lm & 1)][n0 + 8 * (lm >> 1)]));
        } else {  // Xs[m][l]: (m 0-7, l 0-7), (m 0-7, l 8-15), (m 8-15, l 0-7), (m 8-15, l 8-15)
          ldsm_x4(r, smem_u32(&Xs[buf][n0 + lr + 8 * (lm >> 1)][kc + 8 * (lm & 1)]));
        }
        bf[b][0] = r[0], bf[b][1] = r[1], bf[b + 1][0] = r[2], bf[b + 1][1] = r[3];
      }
#pragma unroll
      for (int a = 0; a < MI; ++a)
#pragma unroll
        for (int b = 0; b < NI; ++b) mma_bf16(acc[a][b], af[a], bf[b]);
    }
    if (next) store(buf ^ 1);
    __syncthreads();
    buf ^= 1;
  }

  const int g = lane >> 2, tg = lane & 3;
#pragma unroll
  for (int a = 0; a < MI; ++a)
#pragma unroll
    for (int b = 0; b < NI; ++b)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t k = k0 + wm * WTM + a * 16 + g + 8 * h;
        const int64_t m = m0 + wn * WTN + b * 8 + 2 * tg;
        const float v0 = acc[a][b][2 * h], v1 = acc[a][b][2 * h + 1];
        if (k >= p.b) continue;
        if constexpr (BL) {
          float* row = p.y + ((i * p.b + k) * p.d + j) * p.y_ld;
          if (p.y_vec && m + 2 <= p.M) {
            *reinterpret_cast<float2*>(row + m) = make_float2(v0, v1);
          } else {
            if (m < p.M) row[m] = v0;
            if (m + 1 < p.M) row[m + 1] = v1;
          }
        } else {
          const int64_t f = (i * p.b + k) * p.d + j;
          if (m < p.M) p.y[m * p.y_ld + f] = v0;
          if (m + 1 < p.M) p.y[(m + 1) * p.y_ld + f] = v1;
        }
      }
}

struct MmaConfig {
  int bm, bn, wm, wn, bk;
  bool ldsm;  // ks_matmul_ldsm_bf16, else ks_matmul_mma_bf16
  const char* name;
};

// Warp tiles of 32 x 32 for large batches (16 accumulator fragments would be 64 x 32: more
// registers, fewer blocks); 48 rows for the b = 48 * 2^n patterns; 16 / 32 rows for small
// b; thin token tiles for decode. "ld" tiles: the ldmatrix kernel.
constexpr MmaConfig kMma[] = {
    {128, 128, 2, 4, 32, false, "mma 128x128x32/2x4"}, {64, 128, 2, 4, 32, false, "mma 64x128x32/2x4"},
    {128, 64, 4, 2, 32, false, "mma 128x64x32/4x2"},   {64, 64, 2, 2, 32, false, "mma 64x64x32/2x2"},
    {48, 128, 1, 4, 32, false, "mma 48x128x32/1x4"},   {32, 64, 2, 2, 32, false, "mma 32x64x32/2x2"},
    {16, 128, 1, 4, 32, false, "mma 16x128x32/1x4"},   {64, 32, 2, 2, 32, false, "mma 64x32x32/2x2"},
    {64, 16, 4, 1, 32, false, "mma 64x16x32/4x1"},     {128, 8, 4, 1, 32, false, "mma 128x8x32/4x1"},
    {32, 8, 2, 1, 32, false, "mma 32x8x32/2x1"},
    {128, 128, 2, 4, 32, true, "ld 128x128x32/2x4"},   {128, 128, 4, 2, 32, true, "ld 128x128x32/4x2"},
    {128, 64, 4, 2, 32, true, "ld 128x64x32/4x2"},     {64, 128, 2, 4, 32, true, "ld 64x128x32/2x4"},
    {64, 64, 2, 2, 32, true, "ld 64x64x32/2x2"},       {128, 64, 4, 2, 64, true, "ld 128x64x64/4x2"},
    {64, 128, 2, 4, 64, true, "ld 64x128x64/2x4"},     {48, 128, 1, 4, 32, true, "ld 48x128x32/1x4"},
    {32, 64, 2, 2, 32, true, "ld 32x64x32/2x2"},       {16, 128, 1, 4, 32, true, "ld 16x128x32/1x4"},
    {64, 32, 2, 2, 32, true, "ld 64x32x32/2x2"},       {128, 16, 4, 1, 32, true, "ld 128x16x32/4x1"},
    {64, 16, 4, 1, 32, true, "ld 64x16x32/4x1"},
};
constexpr int kNumMma = sizeof(kMma) / sizeof(kMma[0]);

template <bool BL, int BM, int BN, int WM, int WN, int BK>
cudaError_t launch_one(const MmaDev& p, int64_t n_blocks, cudaStream_t s) {
  constexpr size_t bytes = smem_bytes<BM, BN, BK>();
  if constexpr (bytes > 48 * 1024) {  // past the default limit (set per device, so every time)
    const cudaError_t set = cudaFuncSetAttribute(ks_matmul_mma_bf16<BL, BM, BN, WM, WN, BK>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (set != cudaSuccess) return set;
  }
  ks_matmul_mma_bf16<BL, BM, BN, WM, WN, BK><<<static_cast<unsigned>(n_blocks), 32 * WM * WN, bytes, s>>>(p);
  return cudaGetLastError();
}

template <bool BL, int BM, int BN, int WM, int WN, int BK>
cudaError_t launch_ldsm(const MmaDev& p, int64_t n_blocks, cudaStream_t s) {
  constexpr size_t bytes = ldsm_smem_bytes<BM, BN, BK, BL>();
  if constexpr (bytes > 48 * 1024) {
    const cudaError_t set = cudaFuncSetAttribute(ks_matmul_ldsm_bf16<BL, BM, BN, WM, WN, BK>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (set != cudaSuccess) return set;
  }
  ks_matmul_ldsm_bf16<BL, BM, BN, WM, WN, BK><<<static_cast<unsigned>(n_blocks), 32 * WM * WN, bytes, s>>>(p);
  return cudaGetLastError();
}

template <bool BL>
cudaError_t launch_cfg(int config, const MmaDev& p, int64_t n_blocks, cudaStream_t s) {
  switch (config) {
    case 0: return launch_one<BL, 128, 128, 2, 4, 32>(p, n_blocks, s);
    case 1: return launch_one<BL, 64, 128, 2, 4, 32>(p, n_blocks, s);
    case 2: return launch_one<BL, 128, 64, 4, 2, 32>(p, n_blocks, s);
    case 3: return launch_one<BL, 64, 64, 2, 2, 32>(p, n_blocks, s);
    case 4: return launch_one<BL, 48, 128, 1, 4, 32>(p, n_blocks, s);
    case 5: return launch_one<BL, 32, 64, 2, 2, 32>(p, n_blocks, s);
    case 6: return launch_one<BL, 16, 128, 1, 4, 32>(p, n_blocks, s);
    case 7: return launch_one<BL, 64, 32, 2, 2, 32>(p, n_blocks, s);
    case 8: return launch_one<BL, 64, 16, 4, 1, 32>(p, n_blocks, s);
    case 9: return launch_one<BL, 128, 8, 4, 1, 32>(p, n_blocks, s);
    case 10: return launch_one<BL, 32, 8, 2, 1, 32>(p, n_blocks, s);
    case 11: return launch_ldsm<BL, 128, 128, 2, 4, 32>(p, n_blocks, s);
    case 12: return launch_ldsm<BL, 128, 128, 4, 2, 32>(p, n_blocks, s);
    case 13: return launch_ldsm<BL, 128, 64, 4, 2, 32>(p, n_blocks, s);
    case 14: return launch_ldsm<BL, 64, 128, 2, 4, 32>(p, n_blocks, s);
    case 15: return launch_ldsm<BL, 64, 64, 2, 2, 32>(p, n_blocks, s);
    case 16: return launch_ldsm<BL, 128, 64, 4, 2, 64>(p, n_blocks, s);
    case 17: return launch_ldsm<BL, 64, 128, 2, 4, 64>(p, n_blocks, s);
    case 18: return launch_ldsm<BL, 48, 128, 1, 4, 32>(p, n_blocks, s);
    case 19: return launch_ldsm<BL, 32, 64, 2, 2, 32>(p, n_blocks, s);
    case 20: return launch_ldsm<BL, 16, 128, 1, 4, 32>(p, n_blocks, s);
    case 21: return launch_ldsm<BL, 64, 32, 2, 2, 32>(p, n_blocks, s);
    case 22: return launch_ldsm<BL, 128, 16, 4, 1, 32>(p, n_blocks, s);
    case 23: return launch_ldsm<BL, 64, 16, 4, 1, 32>(p, n_blocks, s);
    default: return cudaErrorInvalidValue;
  }
}

bool aligned_to(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

}  // namespace

int ks_mma_config_count() { return kNumMma; }

const char* ks_mma_config_name(int config) { return config >= 0 && config < kNumMma ? kMma[config].name : "?"; }

bool ks_mma_config_candidate(int config, const KsArgs& k) {
  if (config < 0 || config >= kNumMma) return false;
  const MmaConfig& c = kMma[config];
  if (c.bn > 2 * k.M && c.bn > 8) return false;
  if (k.M >= 256 && c.bn < 32) return false;
  if (c.bm > 2 * k.b && c.bm > 16) return false;
  return true;
}

int ks_mma_heuristic_config(const KsArgs& k) {
  if (k.M <= 8) return k.b <= 32 ? 10 : 9;
  if (k.M <= 64) return k.b <= 16 ? 6 : 8;
  if (k.b <= 16) return 6;
  if (k.b <= 32) return 5;
  return k.b % 64 != 0 && k.b % 48 == 0 ? 4 : 1;
}

cudaError_t launch_ks_matmul_mma(const KsArgs& k, int config, cudaStream_t s) {
  if (config < 0 || config >= kNumMma || k.wt != DType::BF16) return cudaErrorInvalidValue;
  if (k.M <= 0) return cudaSuccess;
  const MmaConfig& c = kMma[config];
  MmaDev p;
  p.w = static_cast<const char*>(k.w);
  p.w_nb1 = (int64_t)k.w_nb1, p.w_nb2 = (int64_t)k.w_nb2, p.w_nb3 = (int64_t)k.w_nb3;
  p.x = k.x, p.y = k.y, p.x_ld = k.x_ld, p.y_ld = k.y_ld;
  p.b = k.b, p.c = k.c, p.d = k.d, p.M = k.M;
  p.n_kt = (k.b + c.bm - 1) / c.bm;
  p.n_mt = (k.M + c.bn - 1) / c.bn;
  p.w_vec = aligned_to(k.w, 8) && k.w_nb1 % 8 == 0 && k.w_nb2 % 8 == 0 && k.w_nb3 % 8 == 0;
  p.w_vec8 = aligned_to(k.w, 16) && k.w_nb1 % 16 == 0 && k.w_nb2 % 16 == 0 && k.w_nb3 % 16 == 0;
  if (k.batch_last) {
    p.x_vec = aligned_to(k.x, 16) && k.x_ld % 4 == 0;
    p.y_vec = aligned_to(k.y, 8) && k.y_ld % 2 == 0;
  } else {
    p.x_vec = k.d == 1 && k.c % 4 == 0 && aligned_to(k.x, 16) && k.x_ld % 4 == 0;
    p.y_vec = false;
  }
  const int64_t n_blocks = int64_t(k.a) * k.d * p.n_kt * p.n_mt;
  if (n_blocks <= 0 || n_blocks > 2147483647) return cudaErrorInvalidValue;
  return k.batch_last ? launch_cfg<true>(config, p, n_blocks, s) : launch_cfg<false>(config, p, n_blocks, s);
}

}  // namespace kestrel::cuda
