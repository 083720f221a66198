// Writing KS layers into GGUF files (the convention of docs/ks-gguf.md): a model file is
// copied key by key and tensor by tensor, with chosen dense projections replaced by
// their factor chains, or (for tests and comparisons) by the dense matrix a chain
// multiplies out to.
//
//   KsProjFactors r{3, "ffn_up", {{4, 88, 64, 4}, {4, 88, 88, 4}}, {w0, w1}};
//   gguf::Writer w;
//   KESTREL_TRY(ks_rewrite_gguf(*file, {r}, DType::F16, KsWrite::factors, w));
//   KESTREL_TRY(w.write_file("out.gguf"));
#pragma once

#include <string>
#include <vector>

#include "ops/dtype.h"
#include "ops/op_table.h"
#include "platform/status.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"

namespace kestrel {

struct KsProjFactors {
  int layer = 0;
  std::string proj;                          // attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
  std::vector<KsMatmulParams> patterns;      // factor t = 0 is applied first
  std::vector<std::vector<float>> factors;   // factor t as F32 [i][j][l][k] (a*d*c*b floats)
};

enum class KsWrite {
  factors,  // the factor tensors and the pattern key (the convention)
  dense,    // blk.N.<proj>.weight = the chain multiplied out, in the given type
};

// Copies every metadata entry and tensor of `in` into w, except the dense weights of
// the listed projections, which become their factors (or the multiplied-out matrix) in
// `type` (F32, F16 or BF16). Tensors of `in` are borrowed: `in` must outlive w's output.
// Errors: a listed projection missing from `in`, a chain that does not fit its dense
// shape, factor sizes that do not match their patterns.
Status ks_rewrite_gguf(const gguf::File& in, const std::vector<KsProjFactors>& repl, DType type, KsWrite mode,
                       gguf::Writer& w);

// y = F x for one factor and one token (F32, scalar: the oracle the factorizer uses).
void ks_factor_apply(const KsMatmulParams& p, const float* w, const float* x, float* y);

// The dense matrix of a chain, row-major [n_out][n_in] (the GGUF layout ne = {n_in, n_out}).
std::vector<float> ks_chain_dense(const std::vector<KsMatmulParams>& patterns,
                                  const std::vector<std::vector<float>>& factors);

}  // namespace kestrel
