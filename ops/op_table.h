// The op table: every op kestrel runs, declared once.
//
// The X-macro KESTREL_OPS lists (name, parameter struct, min sources, max sources).
// The OpId enum, op names, the support matrix and the cross-backend test cases
// are generated from it. Adding an op = one line here, a parameter struct, a
// validation rule (ops/validate.cpp), a ref kernel, test cases.
//
// Conventions (ggml's): ne[0] is the contiguous dimension. A matrix of N rows
// of K elements has ne = {K, N}. Activations are F32 unless stated otherwise.
// Every op writes into a preallocated dst; dst never aliases a source unless
// the op says "in place allowed".
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "ops/exp_tier.h"
#include "ops/spec_uniform.h"
#include "ops/tensor.h"

namespace kestrel {

struct NoParams {};

// add, mul: dst = a (+|*) b. src0 a [K, ...], src1 b with b.ne[0] == a.ne[0]
// and b.ne[i] either a.ne[i] or 1 for i >= 1 (broadcast). dst has a's shape.
// In place allowed (dst == a).

// scale: dst = a * scale + bias. In place allowed.
struct ScaleParams {
  float scale = 1.0f;
  float bias = 0.0f;
};

// rms_norm: per row of K: y = x / sqrt(mean(x^2) + eps) * w, or * (1 + w)
// when one_plus_weight (gemma). src1 w [K] F32 is optional (no weight: * 1).
struct RmsNormParams {
  float eps = 1e-5f;
  bool one_plus_weight = false;
};

enum class RopeMode : int32_t {
  adjacent = 0,  // pairs (x[2i], x[2i+1]): llama / llama2.c ("normal" rope)
  neox = 2,      // pairs (x[i], x[i + n_dims/2]): qwen2/3, phi3, gemma2/3
};

// rope: src0 x [head_dim, n_head, n_tokens] F32, src1 pos [n_tokens] I32,
// src2 (optional) freq factors F32 [n_dims/2].
// For each token t and head, rotate the first n_dims elements, pair i in
// [0, n_dims/2) by the angle pos[t] * freq_scale * theta_base^(-2i/n_dims) / ff[i]
// (ff = 1 without src2; Llama 3's rope_freqs and Phi-3's long/short factors,
// llama.cpp's "freq_factors"), the rotated pair then multiplied by attn_factor
// (LongRoPE's magnitude correction; llama.cpp's attn_factor). n_dims <
// head_dim is partial rotary: elements past n_dims are copied unscaled.
// In place allowed.
struct RopeParams {
  RopeMode mode = RopeMode::adjacent;
  int32_t n_dims = 0;  // rotated dims per head; even, <= head_dim
  float theta_base = 10000.0f;
  float freq_scale = 1.0f;
  float attn_factor = 1.0f;  // > 0 and finite; 1 = plain rotation
};

// matmul: src0 W [K, N] (any weight type), src1 x [K, M] F32, dst y [N, M] F32:
// y[m][n] = sum_k W[n][k] * x[m][k]. M = 1 is the decode matvec.
// (ne[2], ne[3] of x/y are extra batch dims that reuse the same W.)

// get_rows: src0 table [K, N] (any weight type), src1 ids [M] I32, dst [K, M]
// F32: dst row m = dequantized table row ids[m]. ids outside [0, N) are an error.

// softmax: per row r (ne[1] index) of n = ne[0] logits:
//   s_j = x_j * scale; if soft_cap > 0: s_j = soft_cap * tanh(s_j / soft_cap);
//   s_j += mask[r][j] (src1, optional, F32 [n, rows]);
//   causal: key j is masked (-inf) when j > q, q = pos_offset + r;
//   window > 0: key j is also masked when q - j >= window;
//   y = exp(s - max) / sum. A fully masked row yields zeros.
// exp: the exp tier (ops/exp_tier.h); the quake tiers give each probability a
// relative error within about twice the tier's bound (the row still sums to 1).
struct SoftmaxParams {
  float scale = 1.0f;
  float soft_cap = 0.0f;
  bool causal = false;
  int32_t window = 0;
  int32_t pos_offset = 0;
  ExpTier exp = ExpTier::exact;
};

// attention: src0 q [D, Hq, M] F32, src1 k [D, Hkv, n_kv, n_stream] F32|F16,
// src2 v (same shape and type as k), src3 (optional) says which keys each
// query sees, in one of two forms:
//   mask   F32 [n_kv, M]: 0 or -inf per query/key (n_stream must be 1);
//   ranges I32 [3, M]: per query (stream, lo, hi): the query sees keys
//          [lo, hi) of that stream and no other (a KV cache with one stream
//          per sequence: each token reads only its own sequence's cells, and
//          causality and sliding windows are the bounds). Ranges outside
//          [0, n_kv) are clipped; a stream outside [0, n_stream) sees nothing.
// Without src3 every query sees every key of stream 0.
// Query head h reads kv head h / (Hq / Hkv) (grouped-query attention).
// dst [D, Hq, M] F32: softmax(scale * q.k (soft-capped) + mask) @ v.
// A query that sees no key yields zeros.
// exp: the exp tier of the softmax's exp (ops/exp_tier.h; default exact).
struct AttentionParams {
  float scale = 1.0f;
  float soft_cap = 0.0f;
  ExpTier exp = ExpTier::exact;
};

enum class GeluForm : int32_t {
  tanh = 0,  // 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
  erf = 1,   // 0.5x(1 + erf(x / sqrt(2)))
  sigmoid = 2,  // x * sigmoid(1.702x) (the logistic approximation of GELU)
};

// gelu: elementwise. geglu: dst = gelu(src0 gate) * src1 up, same shapes.
// exp: the exp tier of the exp inside (tanh form through exp(2u), erf form
// through erfc = t * exp(...) for the quake tiers; exact keeps xsimd::erf).
struct GeluParams {
  GeluForm form = GeluForm::tanh;
  ExpTier exp = ExpTier::exact;
};

// silu: dst = x * sigmoid(x). swiglu: dst = silu(src0 gate) * src1 up.
// sigmoid: dst = 1 / (1 + exp(-x)). exp: the exp tier (default exact).
struct SiluParams {
  ExpTier exp = ExpTier::exact;
};
struct SigmoidParams {
  ExpTier exp = ExpTier::exact;
};

// set_rows: src0 x [K, M] F32, src1 ids [M] I32, dst [K, R] F32|F16|BF16:
// dst row ids[m] = x row m converted (a scatter: stores K/V rows into their
// cache cells). ids outside [0, R) are skipped (a padded batch row passes -1).
// Two rows of x naming the same dst row: the last one wins.

// fill: dst (F32, any shape and strides) = value. No sources.
struct FillParams {
  float value = 0.0f;
};

// softcap: dst = cap * tanh(src0 / cap), F32, same shape (gemma's final logit
// cap). In place allowed. cap > 0.
struct SoftcapParams {
  float cap = 1.0f;
};

// transpose: src0 [K, M] F32 (2-D, rows any stride), dst [M, K] F32:
// dst[k][m] = src[m][k] (the KS chains' batch-last layout).

// argmax: src0 [N, M] F32, dst [M] I32: index of the largest of each row
// (lowest index on ties; NaN never wins; a row of NaNs gives 0). strict: a row
// holding a NaN or an infinity gives -1 instead (greedy decoding on a device
// reports such logits as the host sampler does, never as a token).
struct ArgmaxParams {
  bool strict = false;
};

// sample: src0 logits [V, M] F32, src1 uniforms [M] F32 in [0, 1), dst [M] I32:
// per row one token drawn as the host sampler (runtime/sampling/sampler.h)
// draws with top-k on, exact exp and no repetition penalty, so that a device
// can sample where it computed the logits:
//   the k = min(top_k, V) largest logits, ordered by logit descending, then id
//   ascending; p_i = exp((l_i - l_0) * t) in float, t = 1 / temperature
//   rounded to float (p_0 = 1); top_p < 1: the shortest prefix whose running
//   sum of p reaches top_p times their total (at least one); min_p > 0: of
//   those, p_i >= min_p (a prefix again); the token is the first whose running
//   sum of the kept p exceeds u times their total (the last when rounding
//   leaves the sum short). Sums in double: the reference adds in order, a
//   device in a tree, so a u within rounding of a boundary may pick the
//   neighbour. A row holding a NaN or an infinity gives -1.
// top_k <= kSampleMaxK: the kept set fits one thread block on a GPU.
struct SampleParams {
  float temperature = 1.0f;  // > 0, finite
  int32_t top_k = 40;        // 1 .. kSampleMaxK
  float top_p = 1.0f;        // (0, 1]; 1 = off
  float min_p = 0.0f;        // [0, 1]; 0 = off
  bool operator==(const SampleParams&) const = default;
};
inline constexpr int32_t kSampleMaxK = 1024;

// copy: dst = src0 converted, same shape, F32|F16|BF16 on either side, any
// strides (writes KV cache cells, gathers views).

// ks_matmul: Kronecker-sparse matmul, one factor of pattern (a, b, c, d): a
// matrix of a*b*d rows and a*c*d columns with support I_a (x) 1_(b x c) (x) I_d
// (density 1 / (a*d)). Per token, input x has a*c*d features indexed
// x[i, l, j] at feature (i*c + l)*d + j, output y has a*b*d features indexed
// y[i, k, j] at feature (i*b + k)*d + j, with i in [0, a), j in [0, d),
// l in [0, c) (inputs of a block), k in [0, b) (outputs of a block):
//   y[i, k, j] = sum_l K[i, k, l, j] * x[i, l, j].
// src0 weights K, F32|F16|BF16, ne = {b, c, d, a}: element (k, l, j, i) at
// byte k*nb[0] + l*nb[1] + j*nb[2] + i*nb[3] ("[i][j][l][k]": for each block
// (i, j) a c x b matrix whose b outputs are contiguous).
// src1 x and dst y are F32 in one of two layouts (row strides free):
//   token_major: x ne = {a*c*d, M}, y ne = {a*b*d, M}: one row per token
//     (decode: M = 1..16).
//   batch_last:  x ne = {M, a*c*d}, y ne = {M, a*b*d}: one row of M tokens per
//     feature (prompt processing: the M tokens are contiguous).
// b = outputs per block, c = inputs per block; a = 1, d = 1 is a dense matmul.
enum class KsLayout : int32_t {
  token_major = 0,
  batch_last = 1,
};
struct KsMatmulParams {
  int32_t a = 1, b = 1, c = 1, d = 1;  // the pattern; each >= 1
  KsLayout layout = KsLayout::token_major;
};

// spec_verify: the verification step of speculative decoding (DESIGN.md 4.2),
// one fused op. g drafted tokens x_0..x_(g-1), V the vocabulary:
//   src0 target logits [V, g+1] F32: row j scores the token after the prefix
//        ending in x_(j-1) (row 0: after the last accepted token), row g after
//        all g drafts;
//   src1 drafted ids [g] I32 (g >= 1);
//   src2 draft logits [V, g] F32: row j is what x_j was drawn from (required
//        unless greedy; the draft must have sampled with the same temperature,
//        top-k and top-p for the output to keep the target's distribution).
//   dst [2] I32 = {n_accepted in [0, g], next token}.
// Rules. greedy: accept x_j while argmax(target row j) == x_j (lowest index on
// ties); next = argmax of target row n_accepted. Stochastic (exact speculative
// sampling): p_j, q_j = softmax(logits / temperature) restricted to the top-k /
// top-p set (the same rule on both sides) and renormalized; accept x_j while
// u_j <= p_j(x_j) / q_j(x_j) (q = 0 accepts); at the first rejection j, next ~
// norm(max(0, p_j - q_j)); when all g pass, next ~ p_g (the bonus token). The
// output then has exactly the target's distribution.
// top-k keeps every logit >= the k-th largest (ties kept); top-p then keeps the
// largest probabilities, in descending order, until their mass reaches top_p
// (ties of the last one kept): both are a threshold on the logit.
// Uniforms are counter-based, spec_uniform(seed, row, stream): stream 0 for the
// acceptance test of row j, stream 1 for sampling from row j, so every backend
// and thread count draws the same numbers. A sample from weights w with
// uniform u is the first index x whose running sum of w exceeds u * sum(w).
// sigmoid (ablation of the GPU paper): probabilities replaced by the
// unnormalized logistic s(x) = 1 / (1 + exp(-(sigmoid_scale * l / T + sigmoid_bias))),
// residual max(0, s_p - s_q), bonus ~ s_p; no longer exact (p/q near 1 for
// large logits, so nearly every draft is accepted). Needs top_k 0, top_p 1.
// Bad data (an id outside [0, V); a NaN or infinite logit in a row the rule
// reads: target and draft rows 0..j up to the decision at row j, the target
// row g when all pass) yields dst = {-1, -1}: the caller reports it.
struct SpecVerifyParams {
  bool greedy = false;        // argmax rule; temperature, top_k, top_p unused
  float temperature = 1.0f;   // > 0 (stochastic rule)
  int32_t top_k = 0;          // 0 = no top-k; > 0 keeps the k best (and ties)
  float top_p = 1.0f;         // in (0, 1]; 1 = no top-p
  uint64_t seed = 0;          // uniform stream, see spec_uniform()
  bool sigmoid = false;       // logistic in place of softmax (ablation)
  float sigmoid_scale = 1.0f;
  float sigmoid_bias = 0.0f;
};

// The logit threshold of the top-k / top-p set of one row of n logits (see
// spec_verify above): kept = {l >= threshold}; -inf when neither applies.
// `work` is n floats of scratch. Shared by every host kernel so that they
// keep the same set (ops/ref/spec_verify.cpp).
float spec_keep_threshold(const float* logits, int64_t n, float temperature, int32_t top_k, float top_p,
                          float* work);

#define KESTREL_OPS(X)                     \
  X(get_rows, NoParams, 2, 2)              \
  X(add, NoParams, 2, 2)                   \
  X(mul, NoParams, 2, 2)                   \
  X(scale, ScaleParams, 1, 1)              \
  X(rms_norm, RmsNormParams, 1, 2)         \
  X(rope, RopeParams, 2, 3)                \
  X(matmul, NoParams, 2, 2)                \
  X(softmax, SoftmaxParams, 1, 2)          \
  X(attention, AttentionParams, 3, 4)      \
  X(gelu, GeluParams, 1, 1)                \
  X(silu, SiluParams, 1, 1)                \
  X(sigmoid, SigmoidParams, 1, 1)          \
  X(swiglu, SiluParams, 2, 2)              \
  X(geglu, GeluParams, 2, 2)               \
  X(argmax, ArgmaxParams, 1, 1)            \
  X(sample, SampleParams, 2, 2)            \
  X(copy, NoParams, 1, 1)                  \
  X(ks_matmul, KsMatmulParams, 2, 2)       \
  X(spec_verify, SpecVerifyParams, 2, 3)   \
  X(set_rows, NoParams, 2, 2)              \
  X(fill, FillParams, 0, 0)                \
  X(softcap, SoftcapParams, 1, 1)          \
  X(transpose, NoParams, 1, 1)

enum class OpId : int32_t {
#define KESTREL_OP_ENUM(name, P, lo, hi) name,
  KESTREL_OPS(KESTREL_OP_ENUM)
#undef KESTREL_OP_ENUM
};

constexpr int kOpCount = 0
#define KESTREL_OP_COUNT(name, P, lo, hi) +1
    KESTREL_OPS(KESTREL_OP_COUNT)
#undef KESTREL_OP_COUNT
    ;

constexpr int kMaxSrc = 4;

const char* op_name(OpId op);
// Bytes of the op's parameter struct (0 for NoParams).
size_t op_params_size(OpId op);
// The largest parameter struct of any op.
constexpr size_t kMaxParamsSize = std::max({
#define KESTREL_OP_PSIZE(name, P, lo, hi) sizeof(P),
    KESTREL_OPS(KESTREL_OP_PSIZE)
#undef KESTREL_OP_PSIZE
});
int op_min_src(OpId op);
int op_max_src(OpId op);

// One invocation of an op: sources, destination and parameters.
struct OpCall {
  OpId op{};
  Tensor* dst = nullptr;
  const Tensor* src[kMaxSrc] = {};
  int n_src = 0;
  const void* params = nullptr;  // the op's parameter struct; nullptr = defaults

  template <typename P>
  const P& p() const {
    static const P kDefault{};
    return params ? *static_cast<const P*>(params) : kDefault;
  }
  const Tensor* opt_src(int i) const { return i < n_src ? src[i] : nullptr; }
};

}  // namespace kestrel
