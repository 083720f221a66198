// Approximating dense weights by chains of Kronecker-sparse factors (docs/ks-gguf.md),
// the library side of `kestrel ks-factorize`.
//
// Fit (ks_fit): minimize ||W - F_1 F_0||_F over the two factors' nonzeros by alternating
// least squares. With F_0 fixed, each block of F_1 is an independent least-squares
// problem whose normal matrix (c1 x c1, the F_0 rows feeding that block) is shared by
// the block's b1 outputs; with F_1 fixed, likewise for each block of F_0 (b0 x b0, the
// F_1 columns it feeds). Each half-step is the exact minimizer, so the error never
// grows; F_0 starts random (Gaussian) and the first step solves F_1. One factor: the
// exact projection (W's entries on the support). Normal matrices get a ridge of 1e-6 x
// their mean diagonal so that rank-deficient blocks stay solvable.
//
//   KsFactorizeOptions o;
//   o.monarch_blocks = 4;           // or o.chains["ffn_up"] = {{...}, {...}}
//   KESTREL_TRY(ks_factorize_file("in.gguf", "out.gguf", o, &report));
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ops/dtype.h"
#include "ops/op_table.h"
#include "platform/status.h"

namespace kestrel {

// The 2-factor chain of `blocks` blocks for an n_in -> n_out layer, m = min(n_in, n_out):
// F_0 = (blocks, m/blocks, n_in/blocks, 1) (block-diagonal), F_1 = (1, n_out/blocks,
// m/blocks, blocks) (strided); every output reaches every input when m/blocks >= blocks.
// blocks must divide n_in and n_out. Parameters: (n_in + n_out) m / blocks.
Expected<std::vector<KsMatmulParams>> ks_monarch_chain(int64_t n_in, int64_t n_out, int blocks);

// "a,b,c,d:a,b,c,d" (factor 0 first) -> patterns.
Expected<std::vector<KsMatmulParams>> ks_parse_chain(const std::string& text);

// Fits 1 or 2 factors of `patterns` to W (row-major [n_out][n_in]); factors[t] gets
// F_t as [i][j][l][k]. Returns the relative Frobenius error ||W - chain|| / ||W||.
// iters: ALS sweeps after the first solve (2 factors). seed: F_0's initial values.
Expected<double> ks_fit(const float* W, int64_t n_in, int64_t n_out, const std::vector<KsMatmulParams>& patterns,
                        int iters, uint64_t seed, std::vector<std::vector<float>>* factors);

struct KsFactorizeOptions {
  std::vector<int> layers;                 // empty: every layer
  std::vector<std::string> projs;          // empty: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
  int monarch_blocks = 0;                  // > 0: ks_monarch_chain for projections without a chain below
  std::map<std::string, std::vector<KsMatmulParams>> chains;  // per projection name
  int iters = 4;
  DType type = DType::F16;                 // factor storage: F32, F16 or BF16
  uint64_t seed = 1;
};

struct KsLayerReport {
  std::string tensor;           // blk.N.<proj>.weight
  std::string chain;            // "a,b,c,d:a,b,c,d"
  uint64_t dense_params = 0, ks_params = 0;
  double rel_error = 0.0;       // relative Frobenius error of the fit
  double seconds = 0.0;
};

// Reads `in`, fits every selected projection (dequantized to F32 for the fit; factors
// stored in options.type), writes `out` with the factors in place of the dense weights.
// on_layer (optional) sees each report as it is made.
Status ks_factorize_file(const std::string& in, const std::string& out, const KsFactorizeOptions& options,
                         std::vector<KsLayerReport>* report,
                         const std::function<void(const KsLayerReport&)>& on_layer = {});

}  // namespace kestrel
