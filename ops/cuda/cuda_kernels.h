// Host-callable launchers of the CUDA kernels (ops/cuda/k_*.cu).
//
// Tensors cross into device code as TV: a data pointer plus element counts and
// byte strides, passed by value. Every launcher enqueues on `stream` and
// returns the launch error (cudaSuccess when queued); asynchronous faults show
// up at the next synchronization. Shapes and types were checked by
// validate_op() and the backend's supports() before any launcher runs, so the
// kernels trust them.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ops/dtype.h"
#include "ops/exp_tier.h"

namespace kestrel::cuda {

struct TV {
  char* data = nullptr;
  int64_t ne[4] = {1, 1, 1, 1};
  int64_t nb[4] = {0, 0, 0, 0};
};

// Whether the step kernels use programmatic dependent launch (cuda_common.cuh):
// on when the current device has compute capability 9.0 or more, unless
// switched off for the process (KESTREL_CUDA_PDL=0, set_programmatic_launch).
// Matvecs of float weights launch plainly unless programmatic_float_matvecs().
bool programmatic_launch();
bool programmatic_float_matvecs();
void set_programmatic_launch(bool on);

enum class Unary : int32_t { scale, silu, sigmoid, gelu_tanh, gelu_erf, gelu_sigmoid, softcap };
enum class Binary : int32_t { add, mul, swiglu, geglu_tanh, geglu_erf, geglu_sigmoid };

// rms_norm over each row of x; w (ne[0] floats) optional.
cudaError_t launch_rms_norm(TV x, const float* w, TV y, float eps, bool one_plus_weight, cudaStream_t s);

struct SoftmaxArgs {
  float scale;
  float soft_cap;
  bool causal;
  int32_t window;
  int32_t pos_offset;
  ExpTier exp;
};
// Row softmax with optional mask (mask.data null when absent).
cudaError_t launch_softmax(TV x, TV mask, TV y, SoftmaxArgs a, cudaStream_t s);

// y = f(x) elementwise; scale uses (p0, p1) = (scale, bias), softcap p0 = cap;
// tier: the exp tier of silu, sigmoid and the GELU forms (ignored by scale, softcap).
cudaError_t launch_unary(Unary op, ExpTier tier, TV x, TV y, float p0, float p1, cudaStream_t s);
// y = a (op) b; add/mul broadcast b over dims where b.ne[i] == 1; tier as above.
cudaError_t launch_binary(Binary op, ExpTier tier, TV a, TV b, TV y, cudaStream_t s);
// y = x converted between F32 / F16 / BF16, any strides.
cudaError_t launch_copy(DType xt, TV x, DType yt, TV y, cudaStream_t s);
// x (F32 rows) scaled per row by a power of two (inv[r] undoes it) as
// hi = f16(x') and lo = f16(x' - hi), each [rows][ne0] contiguous.
cudaError_t launch_split_f16(TV x, void* hi, void* lo, float* inv, cudaStream_t s);
// y[m * ldy + i] *= inv[m] for i < n, m < m_rows.
cudaError_t launch_scale_rows(float* y, int64_t ldy, const float* inv, int64_t n, int64_t m_rows, cudaStream_t s);

// y row ids[m] = x row m converted to yt (F32 | F16 | BF16); ids outside
// [0, y.ne[1]) are skipped; of two rows naming the same y row the later wins.
cudaError_t launch_set_rows(TV x, const int32_t* ids, DType yt, TV y, cudaStream_t s);
// Every element of y (F32, any aligned strides) = value.
cudaError_t launch_fill(TV y, float value, cudaStream_t s);
// y [M, K] = x [K, M] transposed (F32, 2-D).
cudaError_t launch_transpose(TV x, TV y, cudaStream_t s);

// y[m] = index of the largest element of row m of x (lowest on ties, NaN never wins).
cudaError_t launch_argmax(TV x, TV y, bool strict, cudaStream_t s);
// sample (k_sample.cu): logits [V, M], uniforms u [M], ids y [M]; inv_t = 1 / temperature rounded to float;
// top_k <= kSampleThreads (kSampleMaxK).
constexpr int kSampleThreads = 1024;
struct SampleArgs {
  int32_t top_k;
  float inv_t;
  float top_p;
  float min_p;
};
cudaError_t launch_sample(TV logits, TV u, TV y, SampleArgs a, cudaStream_t s);
// y row m = dequantized table row ids[m]; an id outside the table yields a
// row of zeros (as the cpu kernel does), so no id can read out of bounds.
cudaError_t launch_get_rows(DType tt, TV table, const int32_t* ids, TV y, cudaStream_t s);

struct RopeArgs {
  int32_t neox;  // 0 adjacent pairs, 1 (x[i], x[i + n_dims/2])
  int32_t n_dims;
  float theta_base;
  float freq_scale;
};
cudaError_t launch_rope(TV x, const int32_t* pos, TV y, RopeArgs a, cudaStream_t s);

struct AttentionArgs {
  float scale;
  float soft_cap;
  ExpTier exp;
};
// q [D, Hq, M], k / v [D, Hkv, n_kv, n_stream] of kv_type (F32 | F16), y [D, Hq, M];
// at most one of mask F32 [n_kv, M] (n_stream 1) and ranges I32 [3, M] (per
// query: stream, lo, hi), data null when absent. A query reads only the keys
// of its range, so its cost is the range's length, not n_kv.
// Device memory the split decode attention (flash-decoding) keeps across
// launches: a counter per (head, query), zero between launches, and the
// slices' partial results (k_attention_decode.cu). Null: no split.
constexpr int64_t kAttnSplitPairs = 4096;
constexpr int64_t kAttnSplitFloats = int64_t{1} << 20;
struct AttnSplitWs {
  unsigned* counters = nullptr;  // [kAttnSplitPairs]
  float* partials = nullptr;     // [kAttnSplitFloats]
};
cudaError_t launch_attention(DType kv_type, TV q, TV k, TV v, TV mask, TV ranges, TV y, AttentionArgs a,
                             cudaStream_t s, AttnSplitWs ws = {});
// Dynamic shared memory one attention block needs; must not exceed the
// device's opt-in per-block limit.
size_t attention_smem_bytes(int64_t head_dim, int64_t n_kv);
// Several queries without an F32 mask (k_attention_tiled.cu): no bound on
// n_kv; fits when head_dim <= 256 and group * head_dim <= 2048.
bool attention_tiled_fits(int64_t head_dim, int64_t group);
size_t attention_tiled_smem_bytes(int64_t head_dim, int64_t group);
cudaError_t launch_attention_tiled(DType kv_type, TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a,
                                   cudaStream_t s);
// The same on tensor cores (k_attention_mma.cu): F16 KV with 16-byte aligned
// rows, head_dim 64, 128 or 256, group <= 64; within the float kernels'
// tolerances. launch_attention takes it for the tiled kernel's calls that fit,
// unless KESTREL_CUDA_ATTENTION=tiled (read once, for comparisons).
bool attention_mma_fits(DType kv_type, const TV& q, const TV& k, const TV& v);
size_t attention_mma_smem_bytes(int64_t head_dim);
cudaError_t launch_attention_mma(TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a, cudaStream_t s);
// Queries without an F32 mask, one block per (head, query), a thread per key
// (k_attention_decode.cu): head_dim a multiple of 8 up to 256, F16 / F32 KV
// with 16-byte aligned rows, at most kAttentionDecodeMaxKeys keys.
constexpr int64_t kAttentionDecodeMaxKeys = 32768;
bool attention_decode_fits(DType kv_type, const TV& q, const TV& k, const TV& v, bool has_mask);
size_t attention_decode_smem_bytes(int64_t head_dim, int64_t n_kv);
// records (non-null): one query (q.ne[2] == 1), head_dim a multiple of 32; the
// output row y (heads contiguous) is also written as 8-bit records there
// (ops/cuda/xq.cuh), for a matvec launched on it with x_quantized. ws: split
// the keys of each (head, query) over several blocks (flash-decoding).
cudaError_t launch_attention_decode(DType kv_type, TV q, TV k, TV v, TV ranges, TV y, AttentionArgs a,
                                    cudaStream_t s, void* records = nullptr, AttnSplitWs ws = {});
// sum = a + b (F32, same shapes), then y = rms_norm(sum) * w: a residual add
// fused with the next norm (k_norm.cu), bitwise the two ops' result.
cudaError_t launch_add_rms_norm(TV a, TV b, TV sum, const float* w, TV y, float eps, bool one_plus_weight,
                                cudaStream_t s);
// Whether launch_attention takes the tiled kernel for these shapes.
inline bool attention_uses_tiled(int64_t head_dim, int64_t n_head, int64_t n_head_kv, int64_t n_queries,
                                 bool has_mask) {
  return !has_mask && n_queries >= 2 && n_head_kv > 0 && n_head % n_head_kv == 0 &&
         attention_tiled_fits(head_dim, n_head / n_head_kv);
}

// Matmul pieces (the cuBLAS call itself is made by the host code):
// y[.., m, n] = sum_k W[n][k] * x[.., m, k], W of type wt read in place; any M.
cudaError_t launch_matmul_direct(DType wt, TV w, TV x, TV y, cudaStream_t s);
// Q4_0 / Q8_0 decode rows on 8-bit activations (k_matvec_q8.cu): x quantized
// into scratch (matvec_q8_scratch_bytes), then dp4a dot products.
bool matvec_q8_fits(DType wt, const TV& w);
size_t matvec_q8_scratch_bytes(int64_t K, int64_t m_total);
// quantize_x = false: the scratch already holds this x quantized (same rows).
cudaError_t launch_matvec_q8(DType wt, TV w, TV x, TV y, void* scratch, cudaStream_t s, bool quantize_x = true);
// The super-block-order matvec for Q4_K / Q6_K (k_matmul_kquant.cu); fits()
// says whether W's type and alignment allow it.
bool matmul_kquant_fits(DType wt, const TV& w);
cudaError_t launch_matmul_kquant(DType wt, TV w, TV x, TV y, cudaStream_t s);
// out[(n - n0) * K + k] = W[n][k] as float for n in [n0, n0 + n_rows).
cudaError_t launch_dequant_rows(DType wt, TV w, int64_t n0, int64_t n_rows, float* out, cudaStream_t s);
// The same rows as F16 (round to nearest) for the tensor-core GEMM.
cudaError_t launch_dequant_rows_f16(DType wt, TV w, int64_t n0, int64_t n_rows, void* out, cudaStream_t s);

// spec_verify (k_spec_verify.cu): the greedy, softmax and sigmoid rules of
// ops/op_table.h without top-k / top-p. tl [V, g+1], dl [V, g] (read unless
// greedy), ids [g], out [2]; scratch: spec_verify_scratch_bytes(g, V) of device memory.
struct SpecVerifyArgs {
  bool greedy;
  bool sigmoid;
  float temperature;
  float sigmoid_scale;
  float sigmoid_bias;
  uint64_t seed;
};
cudaError_t launch_spec_verify(TV tl, TV dl, const int32_t* ids, int64_t g, SpecVerifyArgs a, void* scratch,
                               int32_t* out, cudaStream_t s);
size_t spec_verify_scratch_bytes(int64_t g, int64_t V);

// Weight types the kernels above can read (get_rows, matmul). Q4_1 / Q5_1 have no kernel
// yet: a plan with them fails its prepare with a message naming the type.
constexpr bool weight_type_supported(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::Q8_0 || t == DType::Q4_0 ||
         t == DType::Q5_0 || t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

}  // namespace kestrel::cuda
