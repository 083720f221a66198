// Attention for several queries (prompt steps) on tensor cores: mma.sync
// m16n8k16, F16 x F16 products accumulated in F32, for an F16 KV cache with
// head_dim 64, 128 or 256.
//
// A block serves kRows = 64 rows (query, head) of one KV head: QM = 64 / G
// consecutive queries times the G = Hq / Hkv query heads that share it, so a
// K / V row staged in shared memory serves every one of them. Each of the 4
// warps owns 16 rows and keeps their output in registers (the accumulator
// layout of mma.sync); key tiles of KT keys are staged in shared memory, the
// scores S = Q K^T of a tile stay in registers, an online softmax (running
// max and sum per row, the output rescaled when the max grows) turns them into
// P, and O += P V reuses S's registers as the A operand.
//
// Precision. K and V are the cache's F16 values, exact. Q and P are split
// into two F16 parts (hi = round(x), lo = round(x - hi)) and each product is
// two mma's, so their rounding error is about 2^-22 relative: the kernel
// meets the float kernels' tolerances (test_backend_ops, attention rows).
// Q is scaled by a power of two per block so that its largest magnitude is
// 2^14 (no F16 overflow; lo parts stay normal), P by 2^14 (P <= 1); both
// scales are exact and undone in F32.
//
// Keys. A query sees [lo, hi) of its stream (attention_keys.cuh). The block
// walks the streams of its queries in turn (one, except across sequence
// boundaries of a multi-sequence batch) and, per stream, the union of its
// queries' ranges; keys outside a row's range score -inf for that row. When
// the ranges of a stream share no common key, the union may hold cells of no
// range (never written): those K / V rows are staged as zeros, not read.
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>

#include "ops/cuda/attention_keys.cuh"
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_exp.cuh"
#include "ops/cuda/mma.cuh"

namespace kestrel::cuda {
namespace {

constexpr int kRows = 64;
constexpr int kThreads = 128;
constexpr float kPScale = 16384.0f;  // 2^14

template <int D>
constexpr int key_tile() {
  return D > 128 ? 32 : 64;
}
template <int D>
constexpr size_t smem_bytes() {
  return static_cast<size_t>(2 * kRows + 2 * key_tile<D>()) * ldsm_stride(D) * sizeof(__half);
}

__device__ __forceinline__ void mma_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t ld_u32(const __half* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ uint32_t as_u32(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
// x = hi + lo in F16 (lo the rounding error of hi).
__device__ __forceinline__ void split2(float x0, float x1, __half2* hi, __half2* lo) {
  *hi = __floats2half2_rn(x0, x1);
  const float2 h = __half22float2(*hi);
  *lo = __floats2half2_rn(x0 - h.x, x1 - h.y);
}

template <int D, ExpTier T>
__global__ void __launch_bounds__(kThreads) attention_mma(TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a, int G,
                                                         int QM) {
  pdl_wait();
  constexpr int KT = key_tile<D>(), P = ldsm_stride(D), NS = KT / 8, NO = D / 8;
  extern __shared__ uint4 smem4[];
  __half* qh = reinterpret_cast<__half*>(smem4);  // [kRows][P] Q hi
  __half* ql = qh + kRows * P;                    // [kRows][P] Q lo
  __half* ks = ql + kRows * P;                    // [KT][P]
  __half* vs = ks + KT * P;                       // [KT][P]
  __shared__ int r_lo[kRows], r_hi[kRows], r_st[kRows];
  __shared__ int s_next, s_ulo, s_uhi, s_maxlo, s_minhi;
  __shared__ unsigned s_qmax;
  __shared__ unsigned char used[KT];
  const int lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp;
  const int64_t M = q.ne[2], Hkv = k.ne[1];
  const int64_t n_units = (M + QM - 1) / QM * Hkv;
  // This thread's two rows (those of its accumulator elements 0-1 and 2-3).
  const int ra = w * 16 + lane / 4, rb = ra + 8;
  for (int64_t u = blockIdx.x; u < n_units; u += gridDim.x) {
    const int64_t kvh = u % Hkv, m0 = u / Hkv * QM;
    __syncthreads();  // the previous unit is done with shared memory
    if (threadIdx.x == 0) s_qmax = 0;
    if (threadIdx.x < kRows) {
      const int r = threadIdx.x, qi = r / G;
      int lo = 0, hi = 0, st = -1;
      if (qi < QM && m0 + qi < M) {
        const QueryKeys kk = query_keys(ranges, m0 + qi, k, v);
        if (kk.lo < kk.hi) lo = static_cast<int>(kk.lo), hi = static_cast<int>(kk.hi), st = static_cast<int>(kk.stream);
      }
      r_lo[r] = lo, r_hi[r] = hi, r_st[r] = st;
    }
    __syncthreads();
    // Q: the largest magnitude, then hi / lo parts scaled to put it at 2^14.
    auto q_at = [&](int r, int d) -> float {
      const int qi = r / G;
      if (qi >= QM || m0 + qi >= M) return 0.0f;
      return reinterpret_cast<const float*>(q.data + (kvh * G + r % G) * q.nb[1] + (m0 + qi) * q.nb[2])[d];
    };
    float amax = 0.0f;
    for (int e = threadIdx.x; e < kRows * D; e += kThreads) amax = fmaxf(amax, fabsf(q_at(e / D, e % D)));
    atomicMax(&s_qmax, __float_as_uint(amax));  // non-negative floats order as their bits
    __syncthreads();
    const float qmax = __uint_as_float(s_qmax);
    int qexp = 0;
    if (qmax > 0.0f && qmax <= 3.0e38f) frexpf(qmax, &qexp);  // qmax <= 2^qexp
    qexp = qexp < -100 ? -100 : qexp;
    const float qscale = ldexpf(1.0f, 14 - qexp);
    for (int e = threadIdx.x; e < kRows * (D / 2); e += kThreads) {
      const int r = e / (D / 2), d = e % (D / 2) * 2;
      __half2 hi, lo;
      split2(q_at(r, d) * qscale, q_at(r, d + 1) * qscale, &hi, &lo);
      *reinterpret_cast<__half2*>(qh + r * P + d) = hi;
      *reinterpret_cast<__half2*>(ql + r * P + d) = lo;
    }
    const float s_scale = a.scale / qscale;
    float o[NO][4];
#pragma unroll
    for (int i = 0; i < NO; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
    int prev = -1;
    for (;;) {
      // The next stream of the block's rows, and the union of its rows' ranges.
      __syncthreads();
      if (threadIdx.x == 0) s_next = INT_MAX, s_ulo = INT_MAX, s_uhi = 0, s_maxlo = 0, s_minhi = INT_MAX;
      __syncthreads();
      if (threadIdx.x < kRows && r_st[threadIdx.x] > prev) atomicMin(&s_next, r_st[threadIdx.x]);
      __syncthreads();
      const int st = s_next;
      if (st == INT_MAX) break;
      if (threadIdx.x < kRows && r_st[threadIdx.x] == st) {
        atomicMin(&s_ulo, r_lo[threadIdx.x]);
        atomicMax(&s_uhi, r_hi[threadIdx.x]);
        atomicMax(&s_maxlo, r_lo[threadIdx.x]);
        atomicMin(&s_minhi, r_hi[threadIdx.x]);
      }
      __syncthreads();
      const int ulo = s_ulo, uhi = s_uhi;
      const bool dense = s_maxlo <= s_minhi;  // the ranges share a key: their union has no gap
      prev = st;
      const int lo_a = r_st[ra] == st ? r_lo[ra] : 0, hi_a = r_st[ra] == st ? r_hi[ra] : 0;
      const int lo_b = r_st[rb] == st ? r_lo[rb] : 0, hi_b = r_st[rb] == st ? r_hi[rb] : 0;
      const char* kb = k.data + kvh * k.nb[1] + st * k.nb[3];
      const char* vb = v.data + kvh * v.nb[1] + st * v.nb[3];
      for (int j0 = ulo; j0 < uhi; j0 += KT) {
        const int nt = uhi - j0 < KT ? uhi - j0 : KT;
        if (!dense) {
          for (int j = threadIdx.x; j < KT; j += kThreads) {
            bool in = false;
            for (int r = 0; r < kRows && j < nt; ++r) in = in || (r_st[r] == st && j0 + j >= r_lo[r] && j0 + j < r_hi[r]);
            used[j] = in;
          }
          __syncthreads();
        }
        constexpr int C = D / 8;  // 16-byte pieces per row
        for (int e = threadIdx.x; e < KT * C; e += kThreads) {
          const int j = e / C, c = e % C;
          uint4 kx = make_uint4(0, 0, 0, 0), vx = kx;
          if (j < nt && (dense || used[j])) {
            kx = reinterpret_cast<const uint4*>(kb + static_cast<int64_t>(j0 + j) * k.nb[2])[c];
            vx = reinterpret_cast<const uint4*>(vb + static_cast<int64_t>(j0 + j) * v.nb[2])[c];
          }
          *reinterpret_cast<uint4*>(ks + j * P + c * 8) = kx;
          *reinterpret_cast<uint4*>(vs + j * P + c * 8) = vx;
        }
        __syncthreads();
        // S = Q K^T: this warp's 16 rows x KT keys.
        float s[NS][4];
#pragma unroll
        for (int n = 0; n < NS; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          const int qo = (w * 16 + lane / 4) * P + kk * 16 + lane % 4 * 2;
          const uint32_t ah[4] = {ld_u32(qh + qo), ld_u32(qh + qo + 8 * P), ld_u32(qh + qo + 8), ld_u32(qh + qo + 8 * P + 8)};
          const uint32_t al[4] = {ld_u32(ql + qo), ld_u32(ql + qo + 8 * P), ld_u32(ql + qo + 8), ld_u32(ql + qo + 8 * P + 8)};
#pragma unroll
          for (int n = 0; n < NS; ++n) {
            const __half* kr = ks + (n * 8 + lane / 4) * P + kk * 16 + lane % 4 * 2;
            const uint32_t b0 = ld_u32(kr), b1 = ld_u32(kr + 8);
            mma_f16(s[n], ah, b0, b1);
            mma_f16(s[n], al, b0, b1);
          }
        }
        // Scale, soft cap, mask; the online softmax of rows a (elements 0, 1) and b (2, 3).
        float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < NS; ++n)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int j = j0 + n * 8 + lane % 4 * 2 + (i & 1);
            float x = s[n][i] * s_scale;
            if (a.soft_cap > 0.0f) x = a.soft_cap * tanhf(x / a.soft_cap);
            const bool in = i < 2 ? j >= lo_a && j < hi_a : j >= lo_b && j < hi_b;
            s[n][i] = in ? x : -INFINITY;
            tmax[i >> 1] = fmaxf(tmax[i >> 1], s[n][i]);
          }
        float corr[2], mnew[2];
#pragma unroll
        for (int x = 0; x < 2; ++x) {
          tmax[x] = fmaxf(tmax[x], __shfl_xor_sync(0xffffffffu, tmax[x], 1));
          tmax[x] = fmaxf(tmax[x], __shfl_xor_sync(0xffffffffu, tmax[x], 2));
          mnew[x] = fmaxf(mrow[x], tmax[x]);
          corr[x] = mrow[x] == -INFINITY ? 0.0f : exp_scaled<T>(mrow[x] - mnew[x], 1.0);
          mrow[x] = mnew[x];
        }
        float tsum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int n = 0; n < NS; ++n)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float p = s[n][i] == -INFINITY ? 0.0f : exp_scaled<T>(s[n][i] - mnew[i >> 1], 1.0);
            tsum[i >> 1] += p;
            s[n][i] = p * kPScale;
          }
        lrow[0] = lrow[0] * corr[0] + tsum[0];
        lrow[1] = lrow[1] * corr[1] + tsum[1];
#pragma unroll
        for (int i = 0; i < NO; ++i) o[i][0] *= corr[0], o[i][1] *= corr[0], o[i][2] *= corr[1], o[i][3] *= corr[1];
        // O += P V: the scores' accumulator layout is the A operand's, 16 keys per step.
#pragma unroll
        for (int kk = 0; kk < KT / 16; ++kk) {
          __half2 h[4], l[4];
          split2(s[2 * kk][0], s[2 * kk][1], &h[0], &l[0]);
          split2(s[2 * kk][2], s[2 * kk][3], &h[1], &l[1]);
          split2(s[2 * kk + 1][0], s[2 * kk + 1][1], &h[2], &l[2]);
          split2(s[2 * kk + 1][2], s[2 * kk + 1][3], &h[3], &l[3]);
          const uint32_t ph[4] = {as_u32(h[0]), as_u32(h[1]), as_u32(h[2]), as_u32(h[3])};
          const uint32_t pl[4] = {as_u32(l[0]), as_u32(l[1]), as_u32(l[2]), as_u32(l[3])};
#pragma unroll
          for (int d16 = 0; d16 < D / 16; ++d16) {
            uint32_t b[4];
            const int key = kk * 16 + (lane / 8 % 2) * 8 + lane % 8, col = d16 * 16 + lane / 16 * 8;
            ldsm_x4_t(b, smem_u32(vs + key * P + col));
            mma_f16(o[2 * d16], ph, b[0], b[1]);
            mma_f16(o[2 * d16], pl, b[0], b[1]);
            mma_f16(o[2 * d16 + 1], ph, b[2], b[3]);
            mma_f16(o[2 * d16 + 1], pl, b[2], b[3]);
          }
        }
        __syncthreads();  // the next tile overwrites ks / vs / used
      }
    }
    // The rows' sums over the 4 lanes that share them; y = O / (sum * 2^14).
#pragma unroll
    for (int x = 0; x < 2; ++x) {
      lrow[x] += __shfl_xor_sync(0xffffffffu, lrow[x], 1);
      lrow[x] += __shfl_xor_sync(0xffffffffu, lrow[x], 2);
    }
#pragma unroll
    for (int x = 0; x < 2; ++x) {
      const int r = x ? rb : ra, qi = r / G;
      if (qi >= QM || m0 + qi >= M) continue;
      const float inv = lrow[x] > 0.0f ? 1.0f / (lrow[x] * kPScale) : 0.0f;
      float* yr = reinterpret_cast<float*>(y.data + (kvh * G + r % G) * y.nb[1] + (m0 + qi) * y.nb[2]);
#pragma unroll
      for (int i = 0; i < NO; ++i) {
        const int d = i * 8 + lane % 4 * 2;
        yr[d] = lrow[x] > 0.0f ? o[i][2 * x] * inv : 0.0f;
        yr[d + 1] = lrow[x] > 0.0f ? o[i][2 * x + 1] * inv : 0.0f;
      }
    }
  }
}

template <int D, ExpTier T>
cudaError_t launch_d(TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a, cudaStream_t s) {
  constexpr size_t smem = smem_bytes<D>();
  static_assert(smem <= 227 * 1024, "above sm_90's opt-in shared memory");
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(attention_mma<D, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int G = static_cast<int>(q.ne[1] / k.ne[1]), QM = kRows / G;
  const int64_t units = (q.ne[2] + QM - 1) / QM * k.ne[1];
  const unsigned grid = static_cast<unsigned>(units < 65535 * 16 ? units : 65535 * 16);
  (void)launch_k(attention_mma<D, T>, grid, kThreads, smem, s, q, k, v, ranges, y, a, G, QM);
  return cudaGetLastError();
}

bool aligned16(const TV& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.nb[1] % 16 == 0 && t.nb[2] % 16 == 0 && t.nb[3] % 16 == 0;
}

}  // namespace

bool attention_mma_fits(DType kv_type, const TV& q, const TV& k, const TV& v) {
  const int64_t D = q.ne[0];
  if (kv_type != DType::F16 || !(D == 64 || D == 128 || D == 256)) return false;
  if (k.ne[1] <= 0 || q.ne[1] % k.ne[1] != 0 || q.ne[1] / k.ne[1] > kRows) return false;
  if (k.nb[0] != 2 || v.nb[0] != 2 || q.nb[0] != 4) return false;
  if (k.ne[2] > INT_MAX) return false;
  return aligned16(k) && aligned16(v);
}

size_t attention_mma_smem_bytes(int64_t head_dim) {
  switch (head_dim) {
    case 64: return smem_bytes<64>();
    case 128: return smem_bytes<128>();
    case 256: return smem_bytes<256>();
    default: return 0;
  }
}

cudaError_t launch_attention_mma(TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a, cudaStream_t s) {
  if (q.ne[1] * q.ne[2] == 0) return cudaSuccess;
  return with_tier(a.exp, [&](auto tc) {
    constexpr ExpTier T = decltype(tc)::value;
    switch (q.ne[0]) {
      case 64: return launch_d<64, T>(q, k, v, ranges, y, a, s);
      case 128: return launch_d<128, T>(q, k, v, ranges, y, a, s);
      case 256: return launch_d<256, T>(q, k, v, ranges, y, a, s);
      default: return cudaErrorInvalidValue;
    }
  });
}

}  // namespace kestrel::cuda
