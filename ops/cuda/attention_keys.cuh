// The keys one query of the attention kernels sees (k_attention.cu,
// k_attention_tiled.cu): [lo, hi) of its own stream with per-query ranges
// [3, M] (stream, lo, hi), clipped to [0, n_kv); a stream outside
// [0, n_stream) sees nothing. Without ranges: every key of stream 0.
#pragma once

#include "ops/cuda/cuda_kernels.h"

namespace kestrel::cuda {

struct QueryKeys {
  int64_t lo, hi;
  int64_t k_off, v_off;  // byte offsets of the query's stream in k and v
  int64_t stream;        // the query's stream, -1 when it sees nothing of any
};

__device__ __forceinline__ QueryKeys query_keys(const TV& ranges, int64_t m, const TV& k, const TV& v) {
  const int64_t n_kv = k.ne[2];
  QueryKeys q{0, n_kv, 0, 0, 0};
  if (!ranges.data) return q;
  const char* rr = ranges.data + m * ranges.nb[1];
  const int64_t st = *reinterpret_cast<const int32_t*>(rr);
  const int64_t r1 = *reinterpret_cast<const int32_t*>(rr + ranges.nb[0]);
  const int64_t r2 = *reinterpret_cast<const int32_t*>(rr + 2 * ranges.nb[0]);
  q.lo = r1 < 0 ? 0 : r1;
  q.hi = r2 > n_kv ? n_kv : r2;
  if (st < 0 || st >= k.ne[3]) {
    q.hi = q.lo;
    q.stream = -1;
  } else {
    q.stream = st;
    q.k_off = st * k.nb[3];
    q.v_off = st * v.nb[3];
  }
  return q;
}

}  // namespace kestrel::cuda
