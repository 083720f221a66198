// sample (ops/op_table.h): the host sampler's top-k draw on the device, one
// block of kSampleMaxK threads per row.
//   1. the k-th largest logit by radix select on order-preserving keys (four
//      passes of 8-bit digits, warp-aggregated shared-memory histograms);
//   2. the k largest gathered (ties at the k-th: the lowest ids, by a block
//      scan over contiguous chunks) and bitonic-sorted by logit descending,
//      id ascending;
//   3. p_i = exp((l_i - l_0) * t) in float, one inclusive block scan in double;
//      the top-p and min-p cuts and the draw are each the first position
//      where a monotone condition turns true.
// The reference adds in order, this scan in a tree: a u within rounding of a
// boundary may pick the neighbouring token.
#include <climits>

#include "ops/cuda/cuda_common.cuh"

namespace kestrel::cuda {
namespace {

constexpr int kThreads = kSampleThreads;  // one per kept candidate (kSampleMaxK)

__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// In-place inclusive scan of kThreads values (Hillis-Steele).
template <typename T>
__device__ void block_scan(T* s) {
  for (int off = 1; off < kThreads; off <<= 1) {
    const T v = threadIdx.x >= off ? s[threadIdx.x - off] : T(0);
    __syncthreads();
    s[threadIdx.x] += v;
    __syncthreads();
  }
}

// a before b: larger logit, then lower id.
__device__ __forceinline__ bool before(float la, int ia, float lb, int ib) { return la > lb || (la == lb && ia < ib); }

__global__ void __launch_bounds__(kThreads) sample_kernel(TV l, TV u, TV y, SampleArgs a) {
  pdl_wait();
  __shared__ int hist[256];
  __shared__ int cnt_gt[kThreads], cnt_eq[kThreads];
  __shared__ float kl[kThreads];
  __shared__ int kid[kThreads];
  __shared__ double ps[kThreads];
  __shared__ uint32_t s_prefix;
  __shared__ int s_krem, s_n, s_pick;
  const int tid = threadIdx.x;
  const int lane = tid % kWarp;
  const int64_t V = l.ne[0];
  const int k = static_cast<int>(a.top_k < V ? a.top_k : V);
  for (int64_t r = blockIdx.x; r < l.ne[1]; r += gridDim.x) {
    const float* x = reinterpret_cast<const float*>(l.data + r * l.nb[1]);
    int32_t* out = reinterpret_cast<int32_t*>(y.data + r * y.nb[0]);
    bool bad = false;
    for (int64_t j = tid; j < V; j += kThreads) bad = bad || !isfinite(x[j]);
    if (__syncthreads_or(bad)) {
      if (tid == 0) *out = -1;
      continue;
    }
    // 1. Radix select: after the four passes, prefix is the k-th largest key
    //    and krem the number of keys equal to it that the k largest take.
    uint32_t prefix = 0, mask = 0;
    int krem = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = tid; i < 256; i += kThreads) hist[i] = 0;
      __syncthreads();
      for (int64_t j0 = 0; j0 < V; j0 += kThreads) {
        const int64_t j = j0 + tid;
        const uint32_t key = j < V ? order_key(x[j]) : 0u;
        const bool in = j < V && (key & mask) == prefix;
        const unsigned digit = in ? (key >> shift) & 255u : 256u;
        const unsigned peers = __match_any_sync(0xffffffffu, digit);
        if (in && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], __popc(peers));
      }
      __syncthreads();
      if (tid == 0) {
        int above = 0, d = 0;
        for (d = 255; d > 0; --d) {
          if (above + hist[d] >= krem) break;
          above += hist[d];
        }
        s_prefix = prefix | (static_cast<uint32_t>(d) << shift);
        s_krem = krem - above;
      }
      __syncthreads();
      prefix = s_prefix;
      krem = s_krem;
      mask |= 0xffu << shift;
    }
    // 2. Gather: thread tid scans its contiguous chunk, so a block scan of the
    //    per-thread counts ranks the ties by id.
    const int64_t chunk = (V + kThreads - 1) / kThreads;
    const int64_t c0 = tid * chunk < V ? tid * chunk : V, c1 = c0 + chunk < V ? c0 + chunk : V;
    int ngt = 0, neq = 0;
    for (int64_t j = c0; j < c1; ++j) {
      const uint32_t key = order_key(x[j]);
      ngt += key > prefix;
      neq += key == prefix;
    }
    cnt_gt[tid] = ngt;
    cnt_eq[tid] = neq;
    __syncthreads();
    block_scan(cnt_gt);
    block_scan(cnt_eq);
    const int n_gt = k - krem;
    int og = cnt_gt[tid] - ngt, oe = cnt_eq[tid] - neq;
    for (int64_t j = c0; j < c1; ++j) {
      const uint32_t key = order_key(x[j]);
      if (key > prefix) {
        kl[og] = x[j], kid[og] = static_cast<int>(j), ++og;
      } else if (key == prefix) {
        if (oe < krem) kl[n_gt + oe] = x[j], kid[n_gt + oe] = static_cast<int>(j);
        ++oe;
      }
    }
    if (tid >= k) kl[tid] = -INFINITY, kid[tid] = INT_MAX;
    __syncthreads();
    // Bitonic sort, best first.
    for (int size = 2; size <= kThreads; size <<= 1)
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        const int p = tid ^ stride;
        if (p > tid) {
          const bool up = (tid & size) == 0;  // this run best first
          const bool swap = up ? before(kl[p], kid[p], kl[tid], kid[tid]) : before(kl[tid], kid[tid], kl[p], kid[p]);
          if (swap) {
            const float lt = kl[tid];
            const int it = kid[tid];
            kl[tid] = kl[p], kid[tid] = kid[p];
            kl[p] = lt, kid[p] = it;
          }
        }
        __syncthreads();
      }
    // 3. Probabilities, cuts, draw.
    const float top = kl[0];
    auto prob = [&](int i) { return i < k ? expf((kl[i] - top) * a.inv_t) : 0.0f; };
    const float pv = prob(tid);
    ps[tid] = pv;
    if (tid == 0) s_n = k, s_pick = -1;
    __syncthreads();
    block_scan(ps);
    if (a.top_p < 1.0f) {
      const double target = static_cast<double>(a.top_p) * ps[k - 1];
      if (tid < k && ps[tid] >= target && (tid == 0 || ps[tid - 1] < target)) s_n = tid + 1;
    }
    __syncthreads();
    int n = s_n;
    if (a.min_p > 0.0f) {
      __syncthreads();
      if (tid >= 1 && tid < n && pv < a.min_p && prob(tid - 1) >= a.min_p) s_n = tid;
      __syncthreads();
      n = s_n;
    }
    const double target = static_cast<double>(*reinterpret_cast<const float*>(u.data + r * u.nb[0])) * ps[n - 1];
    if (tid < n && ps[tid] > target && (tid == 0 || ps[tid - 1] <= target)) s_pick = tid;
    __syncthreads();
    if (tid == 0) *out = kid[s_pick < 0 ? n - 1 : s_pick];
    __syncthreads();
  }
}

}  // namespace

cudaError_t launch_sample(TV logits, TV u, TV y, SampleArgs a, cudaStream_t s) {
  const int64_t nrows = logits.ne[1];
  if (nrows == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(nrows < 65535 ? nrows : 65535);
  (void)launch_k(sample_kernel, grid, kThreads, 0, s, logits, u, y, a);
  return cudaGetLastError();
}

}  // namespace kestrel::cuda
