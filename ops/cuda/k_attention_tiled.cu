// attention for several queries (prompt steps) with per-query ranges or no
// mask: one block per (query, KV head) serves the G = Hq / Hkv query heads
// that share the KV head, so each K / V row is read once for all of them, and
// walks the query's keys [lo, hi) in tiles of TILE keys staged in shared
// memory with an online softmax (running max and sum per head, the partial
// output rescaled when the max grows). Nothing is bounded by the number of
// keys. Scores: one thread per (head, key) over D from shared memory (K rows
// padded against bank conflicts); output: one thread per (head, dim) pair
// (per 4 dims when D % 4 == 0, float4 shared loads), up to kMaxAcc outputs
// in registers.
// Float throughout; the exp through the exp tier. Measured against the double
// reference in test_backend_ops (attention rows, cuda column).
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_exp.cuh"
#include "ops/cuda/attention_keys.cuh"

namespace kestrel::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxAcc = 16;  // (G * D) / kThreads outputs per thread at most

int tile_for(int64_t D) { return D > 128 ? 16 : 32; }

// V4: head_dim % 4 == 0, shared memory read as float4 (a quarter of the
// load instructions, which bound this kernel), K rows padded by 4 floats
// (16-byte aligned, conflict-free for 128-bit loads).
template <DType KV, ExpTier T, int TILE, bool V4>
__global__ void attention_tiled(TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a, int G) {
  pdl_wait();
  extern __shared__ float4 sm4[];
  float* sm = reinterpret_cast<float*>(sm4);
  const int D = static_cast<int>(q.ne[0]);
  const int64_t M = q.ne[2], Hkv = k.ne[1];
  const int KS = D + (V4 ? 4 : 1);  // padded K row
  float* qs = sm;                  // [G][D]
  float* ks = qs + G * D;          // [TILE][KS]
  float* vs = ks + TILE * KS;      // [TILE][D]
  float* ps = vs + TILE * D;       // [G][TILE]
  float* mx = ps + G * TILE;       // [G] running max
  float* sum = mx + G;             // [G] running sum
  float* corr = sum + G;           // [G] this tile's rescale
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  const int GD = G * D;
  for (int64_t bm = blockIdx.x; bm < M * Hkv; bm += gridDim.x) {
    const int64_t kvh = bm % Hkv, m = bm / Hkv;
    const QueryKeys keys = query_keys(ranges, m, k, v);
    const int64_t lo = keys.lo, hi = keys.hi;
    const char* kb = k.data + kvh * k.nb[1] + keys.k_off;
    const char* vb = v.data + kvh * v.nb[1] + keys.v_off;
    __syncthreads();  // the previous pair is done with shared memory
    for (int e = threadIdx.x; e < GD; e += blockDim.x) {
      const int g = e / D, d = e % D;
      qs[e] = reinterpret_cast<const float*>(q.data + (kvh * G + g) * q.nb[1] + m * q.nb[2])[d];
    }
    if (threadIdx.x < G) {
      mx[threadIdx.x] = -INFINITY;
      sum[threadIdx.x] = 0.0f;
    }
    float acc[kMaxAcc];
#pragma unroll
    for (int i = 0; i < kMaxAcc; ++i) acc[i] = 0.0f;
    __syncthreads();
    for (int64_t j0 = lo; j0 < hi; j0 += TILE) {
      const int nt = static_cast<int>(hi - j0 < TILE ? hi - j0 : TILE);
      for (int e = threadIdx.x; e < nt * D; e += blockDim.x) {
        const int j = e / D, d = e % D;
        ks[j * KS + d] = load_weight<KV>(kb + (j0 + j) * k.nb[2], d);
        vs[j * D + d] = load_weight<KV>(vb + (j0 + j) * v.nb[2], d);
      }
      __syncthreads();
      for (int e = threadIdx.x; e < G * TILE; e += blockDim.x) {
        const int g = e / TILE, j = e % TILE;
        float s = -INFINITY;
        if (j < nt) {
          const float* qr = qs + g * D;
          const float* kr = ks + j * KS;
          float dot = 0.0f;
          if constexpr (V4) {
            const float4* q4 = reinterpret_cast<const float4*>(qr);
            const float4* k4 = reinterpret_cast<const float4*>(kr);
            for (int d4 = 0; d4 < D / 4; ++d4) {
              const float4 u = q4[d4], w = k4[d4];
              dot = fmaf(u.x, w.x, fmaf(u.y, w.y, fmaf(u.z, w.z, fmaf(u.w, w.w, dot))));
            }
          } else {
            for (int d = 0; d < D; ++d) dot = fmaf(qr[d], kr[d], dot);
          }
          s = dot * a.scale;
          if (a.soft_cap > 0.0f) s = a.soft_cap * tanhf(s / a.soft_cap);
        }
        ps[e] = s;
      }
      __syncthreads();
      for (int g = wid; g < G; g += nw) {
        const float s = lane < TILE ? ps[g * TILE + lane] : -INFINITY;
        const float tmax = warp_max(s);
        const float m_old = mx[g];
        const float m_new = fmaxf(m_old, tmax);
        const float c = m_old == -INFINITY ? 0.0f : exp_scaled<T>(m_old - m_new, 1.0);
        const float p = s == -INFINITY ? 0.0f : exp_scaled<T>(s - m_new, 1.0);
        if (lane < TILE) ps[g * TILE + lane] = p;
        const float tsum = warp_sum(p);
        if (lane == 0) {
          sum[g] = sum[g] * c + tsum;
          mx[g] = m_new;
          corr[g] = c;
        }
      }
      __syncthreads();
      if constexpr (V4) {  // thread unit u: 4 consecutive dims of one head, acc[4i .. 4i+3]
        const int D4 = D / 4;
#pragma unroll
        for (int i = 0; i < kMaxAcc / 4; ++i) {
          const int u = threadIdx.x + i * kThreads;
          if (u < GD / 4) {
            const int g = u / D4, d4 = u % D4;
            const float c = corr[g];
            float4 r = make_float4(acc[4 * i] * c, acc[4 * i + 1] * c, acc[4 * i + 2] * c, acc[4 * i + 3] * c);
            const float* pr = ps + g * TILE;
            const float4* v4 = reinterpret_cast<const float4*>(vs) + d4;
            for (int j = 0; j < nt; ++j) {
              const float p = pr[j];
              const float4 w = v4[j * D4];
              r.x = fmaf(p, w.x, r.x);
              r.y = fmaf(p, w.y, r.y);
              r.z = fmaf(p, w.z, r.z);
              r.w = fmaf(p, w.w, r.w);
            }
            acc[4 * i] = r.x, acc[4 * i + 1] = r.y, acc[4 * i + 2] = r.z, acc[4 * i + 3] = r.w;
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < kMaxAcc; ++i) {
          const int e = threadIdx.x + i * kThreads;
          if (e < GD) {
            const int g = e / D, d = e % D;
            float r = acc[i] * corr[g];
            const float* pr = ps + g * TILE;
            for (int j = 0; j < nt; ++j) r = fmaf(pr[j], vs[j * D + d], r);
            acc[i] = r;
          }
        }
      }
      __syncthreads();  // the next tile overwrites ks / vs / ps
    }
#pragma unroll
    for (int i = 0; i < kMaxAcc; ++i) {
      // The output element of acc[i]: unit i / 4, dim 4 * unit + i % 4 (V4), else e.
      const int e = V4 ? 4 * (threadIdx.x + (i / 4) * kThreads) + i % 4 : threadIdx.x + i * kThreads;
      if (e < GD) {
        const int g = e / D, d = e % D;
        const float l = sum[g];
        reinterpret_cast<float*>(y.data + (kvh * G + g) * y.nb[1] + m * y.nb[2])[d] = l > 0.0f ? acc[i] / l : 0.0f;
      }
    }
  }
}

template <DType KV, ExpTier T, int TILE, bool V4>
cudaError_t launch_v(TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a, cudaStream_t s) {
  const int G = static_cast<int>(q.ne[1] / k.ne[1]);
  const size_t smem = attention_tiled_smem_bytes(q.ne[0], G);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(attention_tiled<KV, T, TILE, V4>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int64_t pairs = q.ne[2] * k.ne[1];
  const unsigned grid = static_cast<unsigned>(pairs < 65535 * 16 ? pairs : 65535 * 16);
  (void)launch_k(attention_tiled<KV, T, TILE, V4>, grid, kThreads, smem, s, q, k, v, ranges, y, a, G);
  return cudaGetLastError();
}

template <DType KV, ExpTier T, int TILE>
cudaError_t launch(TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a, cudaStream_t s) {
  return q.ne[0] % 4 == 0 ? launch_v<KV, T, TILE, true>(q, k, v, ranges, y, a, s)
                          : launch_v<KV, T, TILE, false>(q, k, v, ranges, y, a, s);
}

}  // namespace

bool attention_tiled_fits(int64_t head_dim, int64_t group) {
  return head_dim >= 1 && head_dim <= 256 && group >= 1 && head_dim * group <= int64_t{kMaxAcc} * kThreads;
}

size_t attention_tiled_smem_bytes(int64_t head_dim, int64_t group) {
  const int64_t D = head_dim, G = group, t = tile_for(D);
  return static_cast<size_t>(G * D + t * (D + 4) + t * D + G * t + 3 * G) * sizeof(float);
}

cudaError_t launch_attention_tiled(DType kv_type, TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a,
                                   cudaStream_t s) {
  if (q.ne[1] * q.ne[2] == 0 || q.ne[0] == 0) return cudaSuccess;
  const bool wide = q.ne[0] > 128;
  return with_tier(a.exp, [&](auto tc) {
    constexpr ExpTier T = decltype(tc)::value;
    switch (kv_type) {
      case DType::F32:
        return wide ? launch<DType::F32, T, 16>(q, k, v, ranges, y, a, s) : launch<DType::F32, T, 32>(q, k, v, ranges, y, a, s);
      case DType::F16:
        return wide ? launch<DType::F16, T, 16>(q, k, v, ranges, y, a, s) : launch<DType::F16, T, 32>(q, k, v, ranges, y, a, s);
      default: return cudaErrorInvalidValue;
    }
  });
}

}  // namespace kestrel::cuda
