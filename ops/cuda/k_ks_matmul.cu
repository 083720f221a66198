// CUDA kernel: Kronecker-sparse matmul (ks_matmul, see ops/op_table.h and cuda_ks.h).
//
// A pattern (a, b, c, d) is a*d independent dense blocks: block (i, j) maps the c inputs
// x[i, l, j] (feature (i*c + l)*d + j) to the b outputs y[i, k, j] (feature (i*b + k)*d + j)
// through W_ij stored [l][k]: per block a GEMM Y_ij (b x M) = W_ij^T (b x c) X_ij (c x M).
// One thread block computes one output-stationary tile of BM outputs x BN tokens of one
// block (i, j), reading x and writing y in place with stride d between the block's
// features: no permuted copies. The inputs are walked in steps of BK: the next step's
// weight and x tiles are loaded from global memory into registers (4-element vector loads
// where the alignment allows, F16/BF16 widened to F32 there) while the current step's
// tiles in shared memory feed the FMAs, then stored into the other of two shared buffers;
// one barrier per step, reached by every thread (tiles past b, c or M are zero-filled
// loads and skipped stores, never an early return), so any b, c, d and token count works.
// Each thread keeps a TM x TN register tile; with TM (TN) = 8 its outputs (tokens) are two
// runs of 4 half a tile apart, so that a quarter warp's 16-byte shared loads hit distinct
// banks.
// Layouts: batch_last rows hold M tokens, so x and y tiles are contiguous along the tokens
// (threads run along the tokens); token_major rows hold a token's features, contiguous
// along the block's inputs / outputs only when d = 1 (threads run along the outputs, and the
// x tile is stored transposed into shared memory).
// Error: each output is one float fma chain over l = 0..c-1 in order, the same for every
// tile configuration; weights widened exactly. The tuner gives BF16 weights the
// tensor-core kernel (k_ks_matmul_mma.cu, x rounded to BF16); these tiles still run them
// with F32 x when launched by number.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "ops/cuda/cuda_ks.h"
#include "ops/cuda/cuda_ks_mma.h"

namespace kestrel::cuda {

namespace {

struct KsDev {
  const char* w;
  int64_t w_nb1, w_nb2, w_nb3;
  const float* x;
  float* y;
  int64_t x_ld, y_ld;
  int32_t b, c, d;
  int64_t M;
  int64_t n_kt, n_mt;  // output tiles per block, token tiles
  bool w_vec, x_vec, y_vec;  // 4-element vector accesses allowed (alignment, d = 1 where needed)
};

template <DType WT>
__device__ __forceinline__ float ld_w1(const char* row, int64_t k) {
  if constexpr (WT == DType::F32) return reinterpret_cast<const float*>(row)[k];
  else if constexpr (WT == DType::F16) return __half2float(reinterpret_cast<const __half*>(row)[k]);
  else return __uint_as_float(static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[k]) << 16);
}

// Weights k .. k+3 of a row; k a multiple of 4 and the row vector-aligned.
template <DType WT>
__device__ __forceinline__ float4 ld_w4(const char* row, int64_t k) {
  if constexpr (WT == DType::F32) {
    return *reinterpret_cast<const float4*>(reinterpret_cast<const float*>(row) + k);
  } else {
    const uint2 u = *reinterpret_cast<const uint2*>(reinterpret_cast<const uint16_t*>(row) + k);
    if constexpr (WT == DType::F16) {
      const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&u.x));
      const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&u.y));
      return make_float4(lo.x, lo.y, hi.x, hi.y);
    } else {
      return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                         __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
    }
  }
}

__device__ __forceinline__ void set4(float4& v, int q, float f) {
  if (q == 0) v.x = f;
  else if (q == 1) v.y = f;
  else if (q == 2) v.z = f;
  else v.w = f;
}
__device__ __forceinline__ float get4(const float4& v, int q) { return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w; }

template <DType WT, bool BL, int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) ks_matmul_tiled(KsDev p) {
  constexpr int NT = (BM / TM) * (BN / TN);
  constexpr int TXN = BN / TN, TYN = BM / TM;  // threads along tokens, along outputs
  constexpr int NA = (BK * BM / 4 + NT - 1) / NT;  // weight vectors per thread per step
  constexpr int NB = (BK * BN / 4 + NT - 1) / NT;  // x vectors per thread per step
  static_assert(BM % 4 == 0 && BN % 4 == 0 && BK % 4 == 0 && (TM == 4 || TM == 8), "tile shape");
  static_assert(TN == 1 || TN == 2 || TN == 4 || TN == 8, "tile shape");
  __shared__ __align__(16) float As[2][BK][BM];  // weights [l][k]
  __shared__ __align__(16) float Bs[2][BK][BN];  // x [l][m]

  const int tid = threadIdx.x;
  // Block order. batch_last: the output tiles of one token tile run next to each other
  // (they share its x rows). token_major: the d blocks j of one (i, token tile, output
  // tile) run next to each other: their x and y elements interleave in the same cache
  // lines, which are then read from L2 and merged there once, not fetched d times from
  // memory (d times slower at d >= 8 in the other order).
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
  const int tx = BL ? tid % TXN : tid / TYN;  // token group
  const int ty = BL ? tid / TXN : tid % TYN;  // output group

  float4 ra[NA], rb[NB];
  // Global -> registers for the step starting at input l0 (zeros past b, c and M).
  auto load = [&](int64_t l0) {
#pragma unroll
    for (int s = 0; s < NA; ++s) {
      const int v = tid + s * NT;
      float4 r = make_float4(0.f, 0.f, 0.f, 0.f);
      if (v < BK * BM / 4) {
        const int64_t l = l0 + v / (BM / 4), k = k0 + (v % (BM / 4)) * 4;
        if (l < p.c) {
          const char* row = wb + l * p.w_nb1;
          if (p.w_vec && k + 4 <= p.b) r = ld_w4<WT>(row, k);
          else
            for (int q = 0; q < 4; ++q)
              if (k + q < p.b) set4(r, q, ld_w1<WT>(row, k + q));
        }
      }
      ra[s] = r;
    }
#pragma unroll
    for (int s = 0; s < NB; ++s) {
      const int v = tid + s * NT;
      float4 r = make_float4(0.f, 0.f, 0.f, 0.f);
      if (v < BK * BN / 4) {
        if constexpr (BL) {  // 4 tokens of one input row
          const int64_t l = l0 + v / (BN / 4), m = m0 + (v % (BN / 4)) * 4;
          if (l < p.c) {
            const float* row = p.x + ((i * p.c + l) * p.d + j) * p.x_ld;
            if (p.x_vec && m + 4 <= p.M) r = *reinterpret_cast<const float4*>(row + m);
            else
              for (int q = 0; q < 4; ++q)
                if (m + q < p.M) set4(r, q, row[m + q]);
          }
        } else {  // 4 inputs of one token
          const int64_t m = m0 + v / (BK / 4), l = l0 + (v % (BK / 4)) * 4;
          if (m < p.M) {
            const float* base = p.x + m * p.x_ld + (i * p.c) * p.d + j;
            if (p.x_vec && l + 4 <= p.c) r = *reinterpret_cast<const float4*>(base + l);
            else
              for (int q = 0; q < 4; ++q)
                if (l + q < p.c) set4(r, q, base[(l + q) * p.d]);
          }
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
      if (v < BK * BM / 4) *reinterpret_cast<float4*>(&As[buf][v / (BM / 4)][(v % (BM / 4)) * 4]) = ra[s];
    }
#pragma unroll
    for (int s = 0; s < NB; ++s) {
      const int v = tid + s * NT;
      if (v < BK * BN / 4) {
        if constexpr (BL) {
          *reinterpret_cast<float4*>(&Bs[buf][v / (BN / 4)][(v % (BN / 4)) * 4]) = rb[s];
        } else {
          const int m = v / (BK / 4), l = (v % (BK / 4)) * 4;
#pragma unroll
          for (int q = 0; q < 4; ++q) Bs[buf][l + q][m] = get4(rb[s], q);
        }
      }
    }
  };

  float acc[TM][TN];
#pragma unroll
  for (int r = 0; r < TM; ++r)
#pragma unroll
    for (int s = 0; s < TN; ++s) acc[r][s] = 0.0f;

  load(0);
  store(0);
  __syncthreads();
  int buf = 0;
  for (int64_t l0 = 0; l0 < p.c; l0 += BK) {
    const bool next = l0 + BK < p.c;  // the same for every thread
    if (next) load(l0 + BK);
#pragma unroll
    for (int l = 0; l < BK; ++l) {
      float av[TM], bv[TN];
      const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][l][ty * 4]);
      av[0] = a0.x, av[1] = a0.y, av[2] = a0.z, av[3] = a0.w;
      if constexpr (TM == 8) {
        const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][l][BM / 2 + ty * 4]);
        av[4] = a1.x, av[5] = a1.y, av[6] = a1.z, av[7] = a1.w;
      }
      if constexpr (TN >= 4) {
        const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][l][tx * 4]);
        bv[0] = b0.x, bv[1] = b0.y, bv[2] = b0.z, bv[3] = b0.w;
        if constexpr (TN == 8) {
          const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][l][BN / 2 + tx * 4]);
          bv[4] = b1.x, bv[5] = b1.y, bv[6] = b1.z, bv[7] = b1.w;
        }
      } else {
#pragma unroll
        for (int s = 0; s < TN; ++s) bv[s] = Bs[buf][l][tx * TN + s];
      }
#pragma unroll
      for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int s = 0; s < TN; ++s) acc[r][s] = fmaf(av[r], bv[s], acc[r][s]);
    }
    if (next) store(buf ^ 1);
    __syncthreads();
    buf ^= 1;
  }

  // Output index of register row r / token of register column s within the tile.
  auto kk = [&](int r) -> int64_t { return k0 + (TM == 8 && r >= 4 ? BM / 2 + ty * 4 + r - 4 : ty * 4 + r); };
  auto mm = [&](int s) -> int64_t {
    if constexpr (TN >= 4) return m0 + (TN == 8 && s >= 4 ? BN / 2 + tx * 4 + s - 4 : tx * 4 + s);
    else return m0 + tx * TN + s;
  };
  if constexpr (BL) {
#pragma unroll
    for (int r = 0; r < TM; ++r) {
      const int64_t k = kk(r);
      if (k >= p.b) continue;
      float* row = p.y + ((i * p.b + k) * p.d + j) * p.y_ld;
#pragma unroll
      for (int s0 = 0; s0 < TN; s0 += (TN >= 4 ? 4 : TN)) {
        const int64_t m = mm(s0);
        if (TN >= 4 && p.y_vec && m + 4 <= p.M) {
          *reinterpret_cast<float4*>(row + m) = make_float4(acc[r][s0], acc[r][s0 + 1 < TN ? s0 + 1 : 0],
                                                            acc[r][s0 + 2 < TN ? s0 + 2 : 0],
                                                            acc[r][s0 + 3 < TN ? s0 + 3 : 0]);
        } else {
#pragma unroll
          for (int q = 0; q < (TN >= 4 ? 4 : TN); ++q)
            if (m + q < p.M) row[m + q] = acc[r][s0 + q];
        }
      }
    }
  } else {
#pragma unroll
    for (int s = 0; s < TN; ++s) {
      const int64_t m = mm(s);
      if (m >= p.M) continue;
      float* base = p.y + m * p.y_ld + (i * p.b) * p.d + j;
#pragma unroll
      for (int r0 = 0; r0 < TM; r0 += 4) {
        const int64_t k = kk(r0);
        if (p.y_vec && k + 4 <= p.b) {
          *reinterpret_cast<float4*>(base + k) = make_float4(acc[r0][s], acc[r0 + 1][s], acc[r0 + 2][s], acc[r0 + 3][s]);
        } else {
#pragma unroll
          for (int q = 0; q < 4; ++q)
            if (k + q < p.b) base[(k + q) * p.d] = acc[r0 + q][s];
        }
      }
    }
  }
}

struct Config {
  int bm, bn, bk, tm, tn;
  const char* name;
};

// The tile table (index = config id). Large tiles for large batches (BK = 16: half the
// barriers per input); 48 rows for the b = 48 * 2^n patterns; thin token tiles for decode.
constexpr Config kConfigs[] = {
    {128, 128, 8, 8, 8, "128x128x8/8x8"}, {128, 64, 8, 8, 4, "128x64x8/8x4"}, {64, 128, 8, 4, 8, "64x128x8/4x8"},
    {64, 64, 8, 4, 4, "64x64x8/4x4"},     {48, 128, 8, 4, 8, "48x128x8/4x8"}, {32, 32, 16, 4, 4, "32x32x16/4x4"},
    {64, 16, 16, 4, 2, "64x16x16/4x2"},   {128, 8, 16, 4, 2, "128x8x16/4x2"}, {32, 8, 32, 4, 2, "32x8x32/4x2"},
    {64, 128, 16, 4, 8, "64x128x16/4x8"}, {128, 128, 16, 8, 8, "128x128x16/8x8"},
};
constexpr int kNumConfigs = sizeof(kConfigs) / sizeof(kConfigs[0]);

template <DType WT, bool BL, int BM, int BN, int BK, int TM, int TN>
cudaError_t launch_one(const KsDev& p, int64_t n_blocks, cudaStream_t s) {
  ks_matmul_tiled<WT, BL, BM, BN, BK, TM, TN><<<static_cast<unsigned>(n_blocks), (BM / TM) * (BN / TN), 0, s>>>(p);
  return cudaGetLastError();
}

template <DType WT, bool BL>
cudaError_t launch_cfg(int config, const KsDev& p, int64_t n_blocks, cudaStream_t s) {
  switch (config) {
    case 0: return launch_one<WT, BL, 128, 128, 8, 8, 8>(p, n_blocks, s);
    case 1: return launch_one<WT, BL, 128, 64, 8, 8, 4>(p, n_blocks, s);
    case 2: return launch_one<WT, BL, 64, 128, 8, 4, 8>(p, n_blocks, s);
    case 3: return launch_one<WT, BL, 64, 64, 8, 4, 4>(p, n_blocks, s);
    case 4: return launch_one<WT, BL, 48, 128, 8, 4, 8>(p, n_blocks, s);
    case 5: return launch_one<WT, BL, 32, 32, 16, 4, 4>(p, n_blocks, s);
    case 6: return launch_one<WT, BL, 64, 16, 16, 4, 2>(p, n_blocks, s);
    case 7: return launch_one<WT, BL, 128, 8, 16, 4, 2>(p, n_blocks, s);
    case 8: return launch_one<WT, BL, 32, 8, 32, 4, 2>(p, n_blocks, s);
    case 9: return launch_one<WT, BL, 64, 128, 16, 4, 8>(p, n_blocks, s);
    case 10: return launch_one<WT, BL, 128, 128, 16, 8, 8>(p, n_blocks, s);
    default: return cudaErrorInvalidValue;
  }
}

bool aligned_to(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

}  // namespace

// Numbering: the CUDA-core tiles above, then the tensor-core ones (cuda_ks_mma.h).
int ks_config_count() { return kNumConfigs + ks_mma_config_count(); }

const char* ks_config_name(int config) {
  if (config >= kNumConfigs) return ks_mma_config_name(config - kNumConfigs);
  return config >= 0 ? kConfigs[config].name : "?";
}

bool ks_config_tensor_cores(int config) { return config >= kNumConfigs && config < ks_config_count(); }

bool ks_config_runs(int config, DType wt) {
  if (config < 0 || config >= ks_config_count()) return false;
  return !ks_config_tensor_cores(config) || wt == DType::BF16;
}

bool ks_config_candidate(int config, const KsArgs& k) {
  if (config < 0 || config >= ks_config_count()) return false;
  // BF16 weights take the tensor-core tiles, every other type the CUDA-core ones: the
  // rounding of x is fixed by the weight type, never by which tile timed faster.
  if (ks_config_tensor_cores(config) != (k.wt == DType::BF16)) return false;
  if (ks_config_tensor_cores(config)) return ks_mma_config_candidate(config - kNumConfigs, k);
  const Config& c = kConfigs[config];
  // Token tiles far wider than the batch waste the threads; thin ones on a large batch
  // reload the weights once per few tokens.
  if (c.bn > 2 * k.M && c.bn > 8) return false;
  if (k.M >= 256 && c.bn < 32) return false;
  if (c.bm > 2 * k.b && c.bm > 32) return false;
  return true;
}

// The configurations the tuner picked most often on an H100 over the benchmark patterns
// (bench/bench_ks_cuda.cu): thin token tiles up to a few hundred tokens (more blocks to
// fill the GPU), 64 x 128 tiles above.
int ks_heuristic_config(const KsArgs& k) {
  if (k.wt == DType::BF16) return kNumConfigs + ks_mma_heuristic_config(k);
  if (k.M <= 8) return 8;
  if (k.M <= 256) return 6;
  return k.b <= 32 ? 5 : 2;
}

cudaError_t launch_ks_matmul(const KsArgs& k, int config, cudaStream_t s) {
  if (config >= kNumConfigs) return launch_ks_matmul_mma(k, config - kNumConfigs, s);
  if (config < 0) return cudaErrorInvalidValue;
  if (k.M <= 0) return cudaSuccess;
  const Config& c = kConfigs[config];
  const size_t es = k.wt == DType::F32 ? 4 : 2;
  KsDev p;
  p.w = static_cast<const char*>(k.w);
  p.w_nb1 = (int64_t)k.w_nb1, p.w_nb2 = (int64_t)k.w_nb2, p.w_nb3 = (int64_t)k.w_nb3;
  p.x = k.x, p.y = k.y, p.x_ld = k.x_ld, p.y_ld = k.y_ld;
  p.b = k.b, p.c = k.c, p.d = k.d, p.M = k.M;
  p.n_kt = (k.b + c.bm - 1) / c.bm;
  p.n_mt = (k.M + c.bn - 1) / c.bn;
  const size_t wv = 4 * es;
  p.w_vec = aligned_to(k.w, wv) && k.w_nb1 % wv == 0 && k.w_nb2 % wv == 0 && k.w_nb3 % wv == 0;
  if (k.batch_last) {
    p.x_vec = aligned_to(k.x, 16) && k.x_ld % 4 == 0;
    p.y_vec = aligned_to(k.y, 16) && k.y_ld % 4 == 0;
  } else {
    p.x_vec = k.d == 1 && k.c % 4 == 0 && aligned_to(k.x, 16) && k.x_ld % 4 == 0;
    p.y_vec = k.d == 1 && k.b % 4 == 0 && aligned_to(k.y, 16) && k.y_ld % 4 == 0;
  }
  const int64_t n_blocks = int64_t(k.a) * k.d * p.n_kt * p.n_mt;
  if (n_blocks <= 0 || n_blocks > 2147483647) return cudaErrorInvalidValue;
  switch (k.wt) {
    case DType::F32:
      return k.batch_last ? launch_cfg<DType::F32, true>(config, p, n_blocks, s)
                          : launch_cfg<DType::F32, false>(config, p, n_blocks, s);
    case DType::F16:
      return k.batch_last ? launch_cfg<DType::F16, true>(config, p, n_blocks, s)
                          : launch_cfg<DType::F16, false>(config, p, n_blocks, s);
    case DType::BF16:
      return k.batch_last ? launch_cfg<DType::BF16, true>(config, p, n_blocks, s)
                          : launch_cfg<DType::BF16, false>(config, p, n_blocks, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace kestrel::cuda
