// Chains of Kronecker-sparse factors: a layer y = F_{n-1} ... F_1 F_0 x whose factors are
// ks_matmul ops (ops/op_table.h), applied in sequence through a caller-owned scratch.
//
//   KsFactor f[2] = {{{4, 64, 64, 4}, &w0}, {{16, 64, 64, 1}, &w1}};
//   KESTREL_TRY_ASSIGN(size_t n, ks_chain_scratch_floats(f, 2, M));
//   std::vector<float> scratch(n);
//   KESTREL_TRY(ks_chain_apply(*cpu, f, 2, KsLayout::token_major, x, y, scratch.data(), n));
//
// f[0] is applied first. Each factor's input width a*c*d must equal the previous one's
// output width a*b*d. The intermediates are contiguous activations in the chain's layout,
// alternating between the two halves of the scratch, so a chain of any length needs
// 2 x (widest intermediate) x M floats and no allocation. The layout and the weights'
// pattern fields of each KsFactor are used as given; the layout of the chain overrides
// each factor's own.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/backend.h"
#include "platform/status.h"

namespace kestrel {

struct KsFactor {
  KsMatmulParams pattern;        // (a, b, c, d); layout is taken from the chain
  const Tensor* weights = nullptr;  // {b, c, d, a} F32|F16|BF16, in memory the backend reads
};

// Input (a*c*d) and output (a*b*d) widths of one factor; 0 when they overflow int64.
int64_t ks_in_features(const KsMatmulParams& p);
int64_t ks_out_features(const KsMatmulParams& p);

// Scratch floats ks_chain_apply needs for n factors over M tokens (0 for one factor).
// Errors: n < 1, a null factor, mismatched widths between consecutive factors, overflow.
Expected<size_t> ks_chain_scratch_floats(const KsFactor* factors, int n, int64_t M);

// y = chain(x). x: [in, M] (token_major) or [M, in] (batch_last); y likewise with the last
// factor's output width. scratch: host memory of scratch_floats floats (a host backend).
Status ks_chain_apply(Backend& backend, const KsFactor* factors, int n, KsLayout layout, const Tensor& x,
                      Tensor& y, float* scratch, size_t scratch_floats);

}  // namespace kestrel
