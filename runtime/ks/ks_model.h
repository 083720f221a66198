// KS layers in models: reading the GGUF convention of docs/ks-gguf.md at load time and
// applying a KsLinear in the forward pass in place of a dense matmul.
//
//   // load (runtime/model/model.cpp): a projection is KS when its pattern key exists
//   KESTREL_TRY(ks_bind_linear(file, il, "ffn_up", n_embd, n_ff, &L.ks_up, &bytes));
//   // forward: activations are token-major [features, n_tokens]
//   KESTREL_TRY(ks_linear_apply(ops, L.ks_up, h, u, scratch, scratch_floats));
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "platform/status.h"
#include "ops/plan.h"
#include "runtime/ks/ks_linear.h"

namespace kestrel {

namespace gguf {
class File;
}

// GGUF names of the convention for projection `proj` (attn_q, attn_k, attn_v,
// attn_output, ffn_gate, ffn_up, ffn_down) of layer il.
std::string ks_patterns_key(int il, const std::string& proj);           // kestrel.ks.blk.N.<proj>.patterns
std::string ks_factor_name(int il, const std::string& proj, int t);     // blk.N.<proj>.ks.<t>.weight

// Binds the KS factors of blk.<il>.<proj> when the file has its pattern key; out->n_factors
// stays 0 when it has neither the key nor factor tensors. Errors (bad_file / unsupported,
// naming the key or tensor): a malformed pattern array, a chain that does not map n_in
// features to n_out, a missing, mistyped or misshapen factor tensor, an extra factor,
// factor tensors without the key, and a dense blk.<il>.<proj>.weight beside the factors.
// bytes: incremented by the factors' sizes.
Status ks_bind_linear(const gguf::File& f, int il, const std::string& proj, int64_t n_in, int64_t n_out,
                      KsLinear* out, uint64_t* bytes);

// Validates a chain of patterns mapping n_in features to n_out (the rule ks_bind_linear
// applies); what names it in the message.
Status ks_check_chain(const KsMatmulParams* patterns, int n, int64_t n_in, int64_t n_out, const std::string& what);

// Scratch floats per token that ks_linear_apply needs for this projection (0 when it
// is not KS).
size_t ks_scratch_floats_per_token(const KsLinear& ks);

// Token counts above this run the chain in the batch_last layout (prompt processing:
// x is transposed into scratch, the result transposed back); up to it, token_major.
inline constexpr int64_t kKsBatchLastMinTokens = 32;

// y = chain(x) for token-major x [n_in, n] and y [n_out, n] (row strides free),
// sent to `ops` (run now or recorded into a plan); the batch_last layout's
// transposes are ops too. scratch: scratch_floats >= n * ks_scratch_floats_per_token(...)
// floats in the same memory as x and y.
Status ks_linear_apply(OpSink& ops, const KsLinear& ks, const Tensor& x, Tensor& y, float* scratch,
                       size_t scratch_floats);

}  // namespace kestrel
