// spec_verify on cuda: the fused verify step of speculative decoding (rules in
// ops/op_table.h; the scalar reference is ops/ref/spec_verify.cpp).
//
// Five launches on the stream, no host round trip:
//   1. row_stats: each row (the g + 1 target rows, then the g draft rows when the
//      rule reads them) is cut into P chunks of one block each, so that every SM
//      has work: one read for the chunk's finite flag and max with its lowest
//      index (greedy), and for the softmax rule a second (cached) read for the
//      sum of exp((l - chunk max) / T) in double.
//   2. merge_rows (a warp per row): the chunks merged (max, and
//      Z = sum Z_c exp((m_c - m) / T)).
//   3. decide (one thread) walks the drafts as the reference does:
//      probabilities only at the drafted ids, u * q <= p accepts. Greedy ends
//      here. Otherwise it leaves the row to sample: the first rejected one
//      (residual max(0, p - q)) or the bonus row (p).
//   4. slice_sums: S >= 256 blocks, each the residual and p sums of one slice of
//      that row.
//   5. pick (one block): scans the slice sums for the slice holding u * total,
//      computes its weights in parallel and walks them in order.
// Every probability is in double, as in the reference, so the draws agree with
// it except where u * total falls within rounding of a boundary (the sums are
// taken in another order); tests/test_cuda_spec_verify.cpp compares them.
// Top-k / top-p thresholds (a selection per row) have no cuda kernel: the backend
// reports those calls unsupported and the host kernels run them.
#include <cstdint>

#include "ops/cuda/cuda_common.cuh"
#include "ops/spec_uniform.h"

namespace kestrel::cuda {
namespace {

constexpr int kStatThreads = 256;
constexpr int64_t kChunkMin = 4096;  // logits per row_stats block at least
constexpr int kMaxChunks = 64;

struct RowStat {
  double z;     // sum of exp((l - m) / T) over the chunk (softmax rule)
  float m;      // max logit of the chunk
  int32_t arg;  // lowest index of the max
  int32_t finite;
};

int chunks_per_row(int64_t V) {
  const int64_t c = (V + kChunkMin - 1) / kChunkMin;
  return static_cast<int>(c < 1 ? 1 : (c > kMaxChunks ? kMaxChunks : c));
}

__device__ __forceinline__ bool better(float v, int32_t i, float bv, int32_t bi) {
  return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ void argmax_warp(float& m, int32_t& mi) {
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, m, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, mi, o);
    if (better(om, oi, m, mi)) {
      m = om;
      mi = oi;
    }
  }
}

__device__ __forceinline__ const float* row_of(const TV& tl, const TV& dl, int64_t g, int64_t r) {
  return r <= g ? reinterpret_cast<const float*>(tl.data + r * tl.nb[1])
                : reinterpret_cast<const float*>(dl.data + (r - g - 1) * dl.nb[1]);
}

// grid (P, rows): block (c, r) summarizes chunk c of row r into out[r * P + c].
// rows [0, g] are target rows, [g + 1, 2g] draft rows 0..g-1.
__global__ void row_stats(TV tl, TV dl, int64_t g, SpecVerifyArgs a, RowStat* out) {
  __shared__ float sm[32];
  __shared__ int32_t si[32];
  __shared__ double sd[32];
  __shared__ int32_t sbad;
  const int64_t r = blockIdx.y, P = gridDim.x, c = blockIdx.x;
  const int64_t V = tl.ne[0];
  const int64_t len = (V + P - 1) / P, i0 = c * len, i1 = i0 + len < V ? i0 + len : V;
  const float* l = row_of(tl, dl, g, r);
  if (threadIdx.x == 0) sbad = 0;
  __syncthreads();
  float m = -INFINITY;
  int32_t mi = INT32_MAX;
  bool bad = false;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const float v = l[i];
    if (!isfinite(v)) bad = true;
    else if (better(v, static_cast<int32_t>(i), m, mi)) {
      m = v;
      mi = static_cast<int32_t>(i);
    }
  }
  if (bad) sbad = 1;
  argmax_warp(m, mi);
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  if (lane == 0) {
    sm[wid] = m;
    si[wid] = mi;
  }
  __syncthreads();
  m = lane < nw ? sm[lane] : -INFINITY;
  mi = lane < nw ? si[lane] : INT32_MAX;
  argmax_warp(m, mi);
  double z = 0.0;
  if (!a.greedy && !a.sigmoid && sbad == 0 && i0 < i1) {
    const double inv_t = 1.0 / static_cast<double>(a.temperature);
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) z += exp((static_cast<double>(l[i]) - m) * inv_t);
    for (int o = kWarp / 2; o > 0; o >>= 1) z += __shfl_xor_sync(0xffffffffu, z, o);
    if (lane == 0) sd[wid] = z;
    __syncthreads();
    z = lane < nw ? sd[lane] : 0.0;
    for (int o = kWarp / 2; o > 0; o >>= 1) z += __shfl_xor_sync(0xffffffffu, z, o);
  }
  if (threadIdx.x == 0) out[r * P + c] = RowStat{z, m, mi, sbad ? 0 : 1};
}

// One warp per row: the row's P chunks merged into merged[r] (the max and its
// lowest index, Z relative to that max, the finite flag).
__global__ void merge_rows(const RowStat* st, int P, SpecVerifyArgs a, RowStat* merged) {
  const int64_t r = blockIdx.x;
  const int lane = threadIdx.x;
  float m = -INFINITY;
  int32_t mi = INT32_MAX;
  int32_t fin = 1;
  for (int c = lane; c < P; c += kWarp) {
    const RowStat& q = st[r * P + c];
    if (!q.finite) fin = 0;
    if (q.arg != INT32_MAX && better(q.m, q.arg, m, mi)) {
      m = q.m;
      mi = q.arg;
    }
  }
  argmax_warp(m, mi);
  fin = __all_sync(0xffffffffu, fin);
  double z = 0.0;
  if (fin && !a.greedy && !a.sigmoid)
    for (int c = lane; c < P; c += kWarp) {
      const RowStat& q = st[r * P + c];
      if (q.arg != INT32_MAX) z += q.z * exp((static_cast<double>(q.m) - m) / a.temperature);
    }
  for (int o = kWarp / 2; o > 0; o >>= 1) z += __shfl_xor_sync(0xffffffffu, z, o);
  if (lane == 0) merged[r] = RowStat{z, m, mi, fin};
}

struct Dist {
  const float* l;
  double m, z;
};

__device__ __forceinline__ double prob(const Dist& d, int64_t i, const SpecVerifyArgs& a) {
  const double l = d.l[i];
  if (a.sigmoid) return 1.0 / (1.0 + exp(-(static_cast<double>(a.sigmoid_scale) * l / a.temperature + a.sigmoid_bias)));
  return exp((l - d.m) / a.temperature) / d.z;
}

__device__ __forceinline__ bool usable(const RowStat& s, const SpecVerifyArgs& a) {
  return s.finite && (a.sigmoid || (s.z > 0.0 && isfinite(s.z)));
}

// What decide leaves for the sampling kernels: mode 0 nothing to draw (greedy,
// bad data), 1 the residual max(0, p - q) of row `row` (p alone if it has no
// mass), 2 the bonus row's p.
struct SampleJob {
  int32_t mode, row;
  float u;
  Dist p, q;
};

// One thread: the reference's accept loop over merged row statistics.
__global__ void decide(TV tl, TV dl, const int32_t* ids, int64_t g, SpecVerifyArgs a, const RowStat* st,
                       SampleJob* job, int32_t* out) {
  const int64_t V = tl.ne[0];
  out[0] = out[1] = -1;
  SampleJob jb{};
  jb.mode = 0;
  *job = jb;
  for (int64_t j = 0; j < g; ++j)
    if (ids[j] < 0 || ids[j] >= V) return;
  if (a.greedy) {
    for (int64_t j = 0;; ++j) {
      const RowStat& s = st[j];
      if (!s.finite) return;
      if (j == g || s.arg != ids[j]) {
        out[0] = static_cast<int32_t>(j);
        out[1] = s.arg;
        return;
      }
    }
  }
  int64_t j = 0;
  for (; j < g; ++j) {
    const RowStat& P_ = st[j];
    const RowStat& Q_ = st[g + 1 + j];
    if (!usable(P_, a) || !usable(Q_, a)) return;
    const Dist dp{row_of(tl, dl, g, j), P_.m, P_.z};
    const Dist dq{row_of(tl, dl, g, g + 1 + j), Q_.m, Q_.z};
    const double pj = prob(dp, ids[j], a), qj = prob(dq, ids[j], a);
    const double u = spec_uniform(a.seed, static_cast<int32_t>(j), 0);
    if (!(u * qj <= pj)) {
      jb = SampleJob{1, static_cast<int32_t>(j), spec_uniform(a.seed, static_cast<int32_t>(j), 1), dp, dq};
      break;
    }
  }
  if (j == g) {
    const RowStat& P_ = st[g];
    if (!usable(P_, a)) return;
    jb = SampleJob{2, static_cast<int32_t>(g), spec_uniform(a.seed, static_cast<int32_t>(g), 1),
                   Dist{row_of(tl, dl, g, g), P_.m, P_.z}, Dist{nullptr, 0.0, 1.0}};
  }
  out[0] = jb.row;
  *job = jb;
}

__device__ __forceinline__ double residual(const SampleJob& jb, int64_t i, const SpecVerifyArgs& a) {
  return fmax(0.0, prob(jb.p, i, a) - prob(jb.q, i, a));
}

constexpr int kSliceThreads = 256;
constexpr int64_t kSliceMax = 1024;  // logits per sampling slice at most (pick's shared array)

// Sampling slices (blocks of slice_sums): 256, more when V > 256 * kSliceMax.
int64_t n_slices(int64_t V) {
  const int64_t s = (V + kSliceMax - 1) / kSliceMax;
  return s > 256 ? s : 256;
}

// Block t: the sums of the residual and of p over slice t of the sampled row.
__global__ void slice_sums(int64_t V, int64_t S, SpecVerifyArgs a, const SampleJob* job, double* part) {
  __shared__ double sd[32];
  const SampleJob jb = *job;
  if (jb.mode == 0) return;
  const int64_t len = (V + S - 1) / S, i0 = blockIdx.x * len, i1 = i0 + len < V ? i0 + len : V;
  double r = 0.0, p = 0.0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const double pi = prob(jb.p, i, a);
    p += pi;
    if (jb.mode == 1) r += fmax(0.0, pi - prob(jb.q, i, a));
  }
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  for (int pass = 0; pass < 2; ++pass) {
    double v = pass == 0 ? r : p;
    for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) sd[wid] = v;
    __syncthreads();
    v = lane < nw ? sd[lane] : 0.0;
    for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) part[pass * S + blockIdx.x] = v;
  }
}

// One block: the reference's sampler (first index whose running sum exceeds
// u * total; the last positive weight when rounding leaves the target past the
// total), whole slices skipped by their sums, the slice holding the target
// walked with its weights computed in parallel.
__global__ void pick(int64_t V, int64_t S, SpecVerifyArgs a, const SampleJob* job, const double* part, int32_t* out) {
  __shared__ double w[kSliceMax];
  __shared__ int64_t s_slice;
  __shared__ double s_cum, s_target;
  __shared__ int32_t s_res;  // 1: residual weights, 0: p
  const SampleJob jb = *job;
  if (jb.mode == 0) return;
  const int64_t len = (V + S - 1) / S;
  if (threadIdx.x == 0) {
    const double* pr = part;
    const double* pp = part + S;
    double tr = 0.0, tp = 0.0;
    for (int64_t t = 0; t < S; ++t) {
      tr += pr[t];
      tp += pp[t];
    }
    // p == q up to rounding leaves no residual mass: p itself is then the law.
    s_res = jb.mode == 1 && tr > 0.0 ? 1 : 0;
    const double* ps = s_res ? pr : pp;
    const double total = s_res ? tr : tp;
    s_target = static_cast<double>(jb.u) * total;
    double cum = 0.0;
    int64_t slice = -1, last_pos = -1;
    for (int64_t t = 0; t < S; ++t) {
      if (ps[t] > 0.0) last_pos = t;
      if (cum + ps[t] <= s_target) {
        cum += ps[t];
        continue;
      }
      slice = t;
      break;
    }
    if (!(total > 0.0)) slice = -2;
    else if (slice < 0) {  // rounding: walk the last slice with mass for its last positive weight
      slice = last_pos;
      s_target = INFINITY;
    }
    s_slice = slice;
    s_cum = cum;
  }
  __syncthreads();
  if (s_slice < 0) return;
  const int64_t i0 = s_slice * len, i1 = i0 + len < V ? i0 + len : V;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) w[i - i0] = s_res ? residual(jb, i, a) : prob(jb.p, i, a);
  __syncthreads();
  if (threadIdx.x == 0) {
    double cum = s_cum;
    int32_t last = -1;
    for (int64_t i = i0; i < i1; ++i) {
      const double wi = w[i - i0];
      if (wi <= 0.0) continue;
      last = static_cast<int32_t>(i);
      cum += wi;
      if (cum > s_target) break;
    }
    out[1] = last;
  }
}

}  // namespace

cudaError_t launch_spec_verify(TV tl, TV dl, const int32_t* ids, int64_t g, SpecVerifyArgs a, void* scratch,
                               int32_t* out, cudaStream_t s) {
  const int64_t V = tl.ne[0];
  const int P = chunks_per_row(V);
  const int64_t rows = a.greedy ? g + 1 : 2 * g + 1;
  char* p = static_cast<char*>(scratch);
  RowStat* st = reinterpret_cast<RowStat*>(p);
  p += static_cast<size_t>(2 * g + 1) * kMaxChunks * sizeof(RowStat);
  RowStat* merged = reinterpret_cast<RowStat*>(p);
  p += static_cast<size_t>(2 * g + 1) * sizeof(RowStat);
  SampleJob* job = reinterpret_cast<SampleJob*>(p);
  p += (sizeof(SampleJob) + 15) / 16 * 16;
  double* part = reinterpret_cast<double*>(p);
  row_stats<<<dim3(static_cast<unsigned>(P), static_cast<unsigned>(rows)), kStatThreads, 0, s>>>(tl, dl, g, a, st);
  merge_rows<<<static_cast<unsigned>(rows), kWarp, 0, s>>>(st, P, a, merged);
  decide<<<1, 1, 0, s>>>(tl, dl, ids, g, a, merged, job, out);
  if (!a.greedy) {
    const int64_t S = n_slices(V);
    slice_sums<<<static_cast<unsigned>(S), kSliceThreads, 0, s>>>(V, S, a, job, part);
    pick<<<1, kSliceThreads, 0, s>>>(V, S, a, job, part, out);
  }
  return cudaGetLastError();
}

size_t spec_verify_scratch_bytes(int64_t g, int64_t V) {
  return static_cast<size_t>(2 * g + 1) * (kMaxChunks + 1) * sizeof(RowStat) + (sizeof(SampleJob) + 15) / 16 * 16 +
         2 * static_cast<size_t>(n_slices(V)) * sizeof(double);
}

}  // namespace kestrel::cuda
