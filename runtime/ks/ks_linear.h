// A linear layer stored as a chain of Kronecker-sparse factors (docs/ks-gguf.md) in
// place of a dense weight: y = F_{n-1} ... F_1 F_0 x, each F_t a ks_matmul factor
// (ops/op_table.h). Model layers carry one per projection; n_factors == 0 means the
// projection is dense.
//
//   const KsLinear& up = model.layers[0].ks_up;
//   if (up.n_factors) { /* up.pattern[t], up.w[t] for t < up.n_factors */ }
#pragma once

#include <cstdint>

#include "ops/op_table.h"
#include "ops/tensor.h"

namespace kestrel {

inline constexpr int kKsMaxFactors = 8;  // factors per chain a file may carry

struct KsLinear {
  int n_factors = 0;                      // 0: not a KS layer
  KsMatmulParams pattern[kKsMaxFactors];  // (a, b, c, d) of factor t; applied t = 0 first
  Tensor w[kKsMaxFactors];                // {b, c, d, a} F32|F16|BF16 views into the model file
};

}  // namespace kestrel
