// Attention of single queries without an F32 mask (decode): one block per
// (query head, query), as k_attention.cu, with the work laid out for short
// latency instead of one warp per key:
//   scores: one thread per key, the key row read with 16-byte loads against q
//           in shared memory (a broadcast), so a block scores 128 keys per
//           step with no shuffle per key;
//   output: warp w takes keys w, w + 4, ...; lane l dims 2l, 2l + 64, ...
//           (8-byte loads of a v row), then the four warps' partial sums meet
//           in shared memory.
// Same math as the per-pair kernel (float dot products in d order, scale,
// soft-cap, the exp tier's softmax); the output sums keys in a different
// order (four interleaved partial sums): ~1e-7 against the double reference.
//
// Split over the KV span (flash-decoding): with a workspace (AttnSplitWs),
// gridDim.y blocks share a (head, query), each over its slice of the keys:
// its max, its sum of exp(score - max) and its unnormalised output go to the
// workspace; the block that finishes last (a counter per pair, reset by it)
// merges them: max M over the slices, out = sum_s o_s e^(m_s - M) /
// sum_s l_s e^(m_s - M). A pair's latency is then its slice's, not its span's.
// The number of slices is fixed at launch (from the cache's cells, so a
// captured graph keeps it as the span grows); a slice past the keys is empty.
#include <cstdlib>
#include <cstring>

#include "ops/cuda/attention_keys.cuh"
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_exp.cuh"
#include "ops/cuda/xq.cuh"

namespace kestrel::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarp;
constexpr int64_t kMaxD = 256;

template <DType KV>
__device__ __forceinline__ float key_dot(const char* kr, const float* qs, int64_t D) {
  float dot = 0.0f;
#pragma unroll 4
  for (int64_t d = 0; d < D; d += 8) {
    float w[8];
    if constexpr (KV == DType::F16) {
      const uint4 u = *reinterpret_cast<const uint4*>(kr + 2 * d);
      const uint32_t ws[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&ws[i]));
        w[2 * i] = f.x;
        w[2 * i + 1] = f.y;
      }
    } else {
      const float4 a = *reinterpret_cast<const float4*>(kr + 4 * d);
      const float4 b = *reinterpret_cast<const float4*>(kr + 4 * d + 16);
      w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
    }
    const float4 q0 = *reinterpret_cast<const float4*>(qs + d);
    const float4 q1 = *reinterpret_cast<const float4*>(qs + d + 4);
    dot = fmaf(q0.x, w[0], dot);
    dot = fmaf(q0.y, w[1], dot);
    dot = fmaf(q0.z, w[2], dot);
    dot = fmaf(q0.w, w[3], dot);
    dot = fmaf(q1.x, w[4], dot);
    dot = fmaf(q1.y, w[5], dot);
    dot = fmaf(q1.z, w[6], dot);
    dot = fmaf(q1.w, w[7], dot);
  }
  return dot;
}

template <DType KV>
__device__ __forceinline__ float2 value_pair(const char* vr, int64_t d) {
  if constexpr (KV == DType::F16) {
    return __half22float2(*reinterpret_cast<const __half2*>(vr + 2 * d));
  } else {
    return *reinterpret_cast<const float2*>(vr + 4 * d);
  }
}

// acc[t] += p_j * (dims 2 lane + 64 t, + 1 of value row j) over this warp's
// keys j = w, w + kWarps, ... in that order (NT: dim groups of 64 the head
// has). 32 / NT keys per warp step: their value rows are all loaded before
// the first is used, so a warp waits on memory once per step, not per key.
template <DType KV, int NT>
__device__ __forceinline__ void value_sums(int64_t D, int64_t n, const float* sc, const char* vb, size_t v_stride,
                                           float (&acc)[kMaxD / 64][2]) {
  constexpr int kInFlight = 32 / NT;
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
  for (int64_t j0 = wid; j0 < n; j0 += kWarps * kInFlight) {
    float p[kInFlight];
    float2 vv[kInFlight][NT];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t j = j0 + u * kWarps;
      p[u] = j < n ? sc[j] : 0.0f;
      const char* vr = vb + (j < n ? j : j0) * v_stride;
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const int64_t d = 2 * lane + 64 * t;
        vv[u][t] = d < D ? value_pair<KV>(vr, d) : make_float2(0.0f, 0.0f);
      }
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      if (p[u] == 0.0f) continue;
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        acc[t][0] = fmaf(p[u], vv[u][t].x, acc[t][0]);
        acc[t][1] = fmaf(p[u], vv[u][t].y, acc[t][1]);
      }
    }
  }
}

// The softmax numerators of scores sc[0, n) against their max mx (in place,
// none when mx is -inf), their sum (returned), and each warp's sum of its
// keys' numerator-weighted value rows in part[warp] (warp w takes keys w, w +
// kWarps, ...; lane l dims 2l, 2l + 64, ...); part is complete on return.
template <DType KV, ExpTier T>
__device__ float weigh_values(int64_t D, int64_t n, float mx, float* sc, float (*part)[kMaxD], float* red,
                              const char* vb, size_t v_stride) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
  float sum = 0.0f;
  if (mx != -INFINITY) {
    for (int64_t j = threadIdx.x; j < n; j += kThreads) {
      const float p = exp_scaled<T>(sc[j] - mx, 1.0);
      sc[j] = p;
      sum += p;
    }
  }
  sum = block_sum(sum, red);  // also orders the writes to sc before the reads below
  float acc[kMaxD / 64][2];
#pragma unroll
  for (int t = 0; t < kMaxD / 64; ++t) acc[t][0] = acc[t][1] = 0.0f;
  if (mx != -INFINITY) {
    if (D <= 64) value_sums<KV, 1>(D, n, sc, vb, v_stride, acc);
    else if (D <= 128) value_sums<KV, 2>(D, n, sc, vb, v_stride, acc);
    else value_sums<KV, kMaxD / 64>(D, n, sc, vb, v_stride, acc);
  }
#pragma unroll
  for (int t = 0; t < kMaxD / 64; ++t) {
    const int64_t d = 2 * lane + 64 * t;
    if (d < D) {
      part[wid][d] = acc[t][0];
      part[wid][d + 1] = acc[t][1];
    }
  }
  __syncthreads();
  return sum;
}

// One slice's share (S > 1): from its scores sc[0, n) and their max mx, its
// sum of exp(s - mx) and unnormalised output into the workspace, then the
// pair's counter; *merges is true in the block that came last.
template <DType KV, ExpTier T>
__device__ void split_slice(const AttnSplitWs& ws, int64_t hm, int64_t S, int64_t slice, int64_t D, int64_t n, float mx,
                            float* sc, float (*part)[kMaxD], float* red, const char* vb, size_t v_stride, bool* merges) {
  float* rec = ws.partials + (hm * S + slice) * (D + 2);
  const float sum = weigh_values<KV, T>(D, n, mx, sc, part, red, vb, v_stride);
  for (int64_t d = threadIdx.x; d < D; d += kThreads) {
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o += part[w][d];
    rec[d] = o;
  }
  if (threadIdx.x == 0) rec[D] = mx, rec[D + 1] = sum;
  __threadfence();  // this slice's record before the counter, for the merging block
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned done = atomicAdd(ws.counters + hm, 1u);
    *merges = done == static_cast<unsigned>(S - 1);
    if (*merges) ws.counters[hm] = 0;  // every slice has counted: ready for the next launch
  }
  __syncthreads();
}

// The merging block: the pair's output (and its records) from the S slices.
template <ExpTier T>
__device__ void split_merge(const AttnSplitWs& ws, int64_t hm, int64_t S, int64_t D, float* out, XQ* xq) {
  __threadfence();
  const float* recs = ws.partials + hm * S * (D + 2);
  float M = -INFINITY;
  for (int64_t s = 0; s < S; ++s) M = fmaxf(M, __ldcg(recs + s * (D + 2) + D));
  float L = 0.0f;
  if (M != -INFINITY)
    for (int64_t s = 0; s < S; ++s) {
      const float ms = __ldcg(recs + s * (D + 2) + D);
      if (ms != -INFINITY) L += __ldcg(recs + s * (D + 2) + D + 1) * exp_scaled<T>(ms - M, 1.0);
    }
  const float inv = M == -INFINITY ? 0.0f : 1.0f / L;
  for (int64_t d = threadIdx.x; d < D; d += kThreads) {
    float o = 0.0f;
    for (int64_t s = 0; s < S && M != -INFINITY; ++s) {
      const float ms = __ldcg(recs + s * (D + 2) + D);
      if (ms != -INFINITY) o = fmaf(__ldcg(recs + s * (D + 2) + d), exp_scaled<T>(ms - M, 1.0), o);
    }
    out[d] = o * inv;
    if (xq) quantize_record_warp(o * inv, xq + d / 32);
  }
}

template <DType KV, ExpTier T>
__global__ void __launch_bounds__(kThreads) attention_decode(TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a,
                                                             XQ* xq, AttnSplitWs ws) {
  extern __shared__ float smem[];
  __shared__ float red[32];
  __shared__ float part[kWarps][kMaxD];
  __shared__ bool merges;
  const int64_t S = gridDim.y, slice = blockIdx.y;
  pdl_wait();
  const int64_t D = q.ne[0], Hq = q.ne[1], M = q.ne[2];
  const int64_t group = Hq / k.ne[1];
  float* qs = smem;      // [D]
  float* sc = smem + D;  // [n]
  for (int64_t hm = blockIdx.x; hm < Hq * M; hm += gridDim.x) {
    const int64_t h = hm % Hq, m = hm / Hq, kvh = h / group;
    const float* qr = reinterpret_cast<const float*>(q.data + h * q.nb[1] + m * q.nb[2]);
    float* out = reinterpret_cast<float*>(y.data + h * y.nb[1] + m * y.nb[2]);
    const QueryKeys keys = query_keys(ranges, m, k, v);
    const int64_t span = keys.hi > keys.lo ? keys.hi - keys.lo : 0;
    const int64_t per = (span + S - 1) / S;
    const int64_t first = per * slice < span ? per * slice : span;
    const int64_t lo = keys.lo + first, n = span - first < per ? span - first : per;
    const char* kb = k.data + keys.k_off + kvh * k.nb[1];
    const char* vb = v.data + keys.v_off + kvh * v.nb[1];
    __syncthreads();  // the previous pair's readers of qs / sc / part are done
    for (int64_t d = threadIdx.x; d < D; d += kThreads) qs[d] = qr[d];
    __syncthreads();
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += kThreads) {
      float s = key_dot<KV>(kb + (lo + j) * k.nb[2], qs, D) * a.scale;
      if (a.soft_cap > 0.0f) s = a.soft_cap * tanhf(s / a.soft_cap);
      sc[j] = s;
      mx = fmaxf(mx, s);
    }
    mx = block_max(mx, red);
    if (S > 1) {
      split_slice<KV, T>(ws, hm, S, slice, D, n, mx, sc, part, red, vb + lo * v.nb[2], v.nb[2], &merges);
      if (!merges) continue;
      split_merge<T>(ws, hm, S, D, out, xq ? xq + h * D / 32 : nullptr);
      continue;
    }
    if (mx == -INFINITY) {  // no keys (or all scores -inf): zeros, as the op contract says
      for (int64_t d = threadIdx.x; d < D; d += kThreads) {
        out[d] = 0.0f;
        if (xq) quantize_record_warp(0.0f, xq + (h * D + d) / 32);
      }
      continue;
    }
    const float sum = weigh_values<KV, T>(D, n, mx, sc, part, red, vb + lo * v.nb[2], v.nb[2]);
    const float inv = 1.0f / sum;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      float o = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) o += part[w][d];
      out[d] = o * inv;
      // The head's output as 8-bit records for the matvec after it (one
      // query, D a multiple of 32: each warp here holds whole records).
      if (xq) quantize_record_warp(o * inv, xq + (h * D + d) / 32);
    }
  }
}

// Slices per (head, query): one per kSliceKeys cells of a stream (the
// cache's size, fixed for a captured graph), at most kMaxSlices, within the
// workspace; 1 without one (or KESTREL_CUDA_ATTENTION=nosplit, read once).
constexpr int64_t kSliceKeys = 128;
constexpr int64_t kMaxSlices = 16;

int64_t n_slices(const TV& q, const TV& k, const AttnSplitWs& ws) {
  static const bool off = [] {
    const char* e = std::getenv("KESTREL_CUDA_ATTENTION");
    return e && std::strcmp(e, "nosplit") == 0;
  }();
  const int64_t pairs = q.ne[1] * q.ne[2];
  if (off || !ws.counters || pairs > kAttnSplitPairs) return 1;
  int64_t S = (k.ne[2] + kSliceKeys - 1) / kSliceKeys;
  S = S < kMaxSlices ? S : kMaxSlices;
  while (S > 1 && pairs * S * (q.ne[0] + 2) > kAttnSplitFloats) --S;
  return S < 1 ? 1 : S;
}

template <DType KV, ExpTier T>
cudaError_t launch(TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a, XQ* xq, AttnSplitWs ws, cudaStream_t s) {
  const size_t smem = attention_decode_smem_bytes(q.ne[0], k.ne[2]);
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(attention_decode<KV, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int64_t pairs = q.ne[1] * q.ne[2];
  const int64_t S = n_slices(q, k, ws);
  // Split, every pair has its own block (the counters are per pair).
  const unsigned gx = static_cast<unsigned>(S > 1 ? pairs : pairs < 65535 * 16 ? pairs : 65535 * 16);
  return launch_k(attention_decode<KV, T>, dim3(gx, static_cast<unsigned>(S)), kThreads, smem, s, q, k, v, ranges, y,
                  a, xq, ws);
}

bool rows_aligned(const TV& t, size_t align) {
  if (reinterpret_cast<uintptr_t>(t.data) % align) return false;
  for (int i = 1; i < 4; ++i)
    if (t.ne[i] > 1 && t.nb[i] % align) return false;
  return true;
}

}  // namespace

bool attention_decode_fits(DType kv_type, const TV& q, const TV& k, const TV& v, bool has_mask) {
  const int64_t D = q.ne[0];
  if (has_mask || D % 8 || D > kMaxD || (kv_type != DType::F16 && kv_type != DType::F32)) return false;
  if (k.ne[1] == 0 || q.ne[1] % k.ne[1] || k.ne[2] > kAttentionDecodeMaxKeys) return false;
  return rows_aligned(k, 16) && rows_aligned(v, 8) && rows_aligned(q, 16);
}

size_t attention_decode_smem_bytes(int64_t head_dim, int64_t n_kv) {
  return static_cast<size_t>(head_dim + n_kv) * sizeof(float);
}

cudaError_t launch_attention_decode(DType kv_type, TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a,
                                    cudaStream_t s, void* records, AttnSplitWs ws) {
  if (records && (q.ne[2] != 1 || q.ne[0] % 32)) return cudaErrorInvalidValue;
  XQ* xq = static_cast<XQ*>(records);
  return with_tier(a.exp, [&](auto tc) {
    constexpr ExpTier T = decltype(tc)::value;
    return kv_type == DType::F16 ? launch<DType::F16, T>(q, k, v, ranges, y, a, xq, ws, s)
                                 : launch<DType::F32, T>(q, k, v, ranges, y, a, xq, ws, s);
  });
}

}  // namespace kestrel::cuda
