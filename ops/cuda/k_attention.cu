// attention: softmax(scale * q.k (soft-capped) + mask) @ v, grouped-query heads.
//
// One block per (query head, query) pair. The query's keys are all n_kv keys
// of stream 0, or with per-query ranges [lo, hi) of its own stream (a KV cache
// with one stream per sequence; the block only touches those keys). Their
// scores live in shared memory (with q), so n_kv is bounded by the shared
// memory a block may opt into (~56k keys at D = 128 on Hopper; the backend's
// supports() checks).
// Scores: one warp per key, lanes over D, float accumulation and a warp-shuffle
// reduction. Softmax through the exp tier (ops/cuda/cuda_exp.cuh; expf on the
// exact tier); output: threads over D, summing p_j v_j[d] over
// keys in order (coalesced reads of each v row). Measured against the double
// reference: max abs error ~1e-7 at D <= 256, n_kv <= 300 (test_backend_ops).
// Keys masked with -inf are skipped before their dot product; a query whose
// keys are all masked gets zeros, as the op contract says.
#include <cstdlib>
#include <cstring>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_exp.cuh"
#include "ops/cuda/attention_keys.cuh"

namespace kestrel::cuda {
namespace {

constexpr int kAttnThreads = 128;

template <DType KV, ExpTier T>
__global__ void attention_kernel(TV q, TV k, TV v, TV mask, TV ranges, TV y, AttentionArgs a) {
  pdl_wait();
  extern __shared__ float smem[];
  __shared__ float red[32];
  const int64_t D = q.ne[0], Hq = q.ne[1], M = q.ne[2];
  const int64_t group = Hq / k.ne[1];
  float* qs = smem;       // [D]
  float* sc = smem + D;   // [n_kv]: score of key lo + j at j
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  for (int64_t hm = blockIdx.x; hm < Hq * M; hm += gridDim.x) {
    const int64_t h = hm % Hq, m = hm / Hq, kvh = h / group;
    const float* qr = reinterpret_cast<const float*>(q.data + h * q.nb[1] + m * q.nb[2]);
    const float* mr = mask.data ? reinterpret_cast<const float*>(mask.data + m * mask.nb[1]) : nullptr;
    float* out = reinterpret_cast<float*>(y.data + h * y.nb[1] + m * y.nb[2]);
    // This query's keys: [lo, hi) of one stream; ranges are clipped to
    // [0, n_kv), and a stream outside [0, n_stream) sees nothing.
    const QueryKeys keys = query_keys(ranges, m, k, v);
    const int64_t lo = keys.lo, hi = keys.hi;
    const char* kb = k.data + keys.k_off;
    const char* vb = v.data + keys.v_off;
    const int64_t n = hi > lo ? hi - lo : 0;
    __syncthreads();  // the previous pair's readers of qs / sc are done
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qr[d];
    __syncthreads();

    for (int64_t j = wid; j < n; j += nw) {
      const int64_t key = lo + j;
      float s = -INFINITY;
      if (!mr || mr[key] != -INFINITY) {
        const char* kr = kb + kvh * k.nb[1] + key * k.nb[2];
        float dot = 0.0f;
        for (int64_t d = lane; d < D; d += kWarp) dot = fmaf(qs[d], load_weight<KV>(kr, d), dot);
        s = warp_sum(dot) * a.scale;
        if (a.soft_cap > 0.0f) s = a.soft_cap * tanhf(s / a.soft_cap);
        if (mr) s += mr[key];
      }
      if (lane == 0) sc[j] = s;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, sc[j]);
    mx = block_max(mx, red);
    if (mx == -INFINITY) {
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out[d] = 0.0f;
      continue;
    }
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float p = exp_scaled<T>(sc[j] - mx, 1.0);
      sc[j] = p;
      sum += p;
    }
    sum = block_sum(sum, red);  // also orders the writes to sc before the reads below
    const float inv = 1.0f / sum;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      float acc = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        const float p = sc[j];
        if (p != 0.0f) acc = fmaf(p, load_weight<KV>(vb + kvh * v.nb[1] + (lo + j) * v.nb[2], d), acc);
      }
      out[d] = acc * inv;
    }
  }
}

template <DType KV, ExpTier T>
cudaError_t launch(TV q, TV k, TV v, TV mask, TV ranges, TV y, AttentionArgs a, cudaStream_t s) {
  const size_t smem = static_cast<size_t>(q.ne[0] + k.ne[2]) * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(attention_kernel<KV, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int64_t pairs = q.ne[1] * q.ne[2];
  const unsigned grid = static_cast<unsigned>(pairs < 65535 * 16 ? pairs : 65535 * 16);
  (void)launch_k(attention_kernel<KV, T>, grid, kAttnThreads, smem, s, q, k, v, mask, ranges, y, a);
  return cudaGetLastError();
}

}  // namespace

size_t attention_smem_bytes(int64_t head_dim, int64_t n_kv) {
  return static_cast<size_t>(head_dim + n_kv) * sizeof(float);
}

cudaError_t launch_attention(DType kv_type, TV q, TV k, TV v, TV mask, TV ranges, TV y, AttentionArgs a,
                             cudaStream_t s, AttnSplitWs ws) {
  if (q.ne[1] * q.ne[2] == 0 || q.ne[0] == 0) return cudaSuccess;
  if (attention_uses_tiled(q.ne[0], q.ne[1], k.ne[1], q.ne[2], mask.data != nullptr)) {
    static const bool mma = [] {
      const char* e = std::getenv("KESTREL_CUDA_ATTENTION");
      return !(e && std::strcmp(e, "tiled") == 0);
    }();
    if (mma && attention_mma_fits(kv_type, q, k, v)) return launch_attention_mma(q, k, v, ranges, y, a, s);
    return launch_attention_tiled(kv_type, q, k, v, ranges, y, a, s);
  }
  if (attention_decode_fits(kv_type, q, k, v, mask.data != nullptr))
    return launch_attention_decode(kv_type, q, k, v, ranges, y, a, s, nullptr, ws);
  return with_tier(a.exp, [&](auto tc) {
    constexpr ExpTier T = decltype(tc)::value;
    switch (kv_type) {
      case DType::F32: return launch<DType::F32, T>(q, k, v, mask, ranges, y, a, s);
      case DType::F16: return launch<DType::F16, T>(q, k, v, mask, ranges, y, a, s);
      default: return cudaErrorInvalidValue;
    }
  });
}

}  // namespace kestrel::cuda
