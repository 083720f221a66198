// Weights for the matmul benchmarks (bench_kernels, bench_matmul_variants,
// bench_amx_matmul): a [K, N] matrix of `type` from 64 distinct quantized
// Gaussian rows (sd 0.02, seed 1), repeated. The quantizer's search is slow for
// millions of values; the bytes read per call are the same as distinct rows'.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "ops/dtype.h"
#include "ops/ref/quant.h"

namespace kestrel::bench {

inline std::vector<uint8_t> make_weight(DType type, int64_t K, int64_t N) {
  const size_t rs = dtype_row_size(type, K);
  const int64_t distinct = std::min<int64_t>(N, 64);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> src(static_cast<size_t>(K));
  std::vector<uint8_t> w(rs * static_cast<size_t>(N));
  for (int64_t n = 0; n < distinct; ++n) {
    for (auto& v : src) v = dist(rng);
    ref::quantize_row(type, src.data(), w.data() + n * rs, K);
  }
  for (int64_t n = distinct; n < N; ++n) std::memcpy(w.data() + n * rs, w.data() + (n % distinct) * rs, rs);
  return w;
}

}  // namespace kestrel::bench
