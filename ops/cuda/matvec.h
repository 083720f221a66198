// Decode matvec (k_matvec.cu): y[m][n] = sum_k W[n][k] x[m][k] for a few
// activation rows (m < kMatvecMaxRows), W read in its stored type.
//
// One warp per W row, no shared memory and no
// block barrier: each lane walks the row in units (a quant block, a quarter
// super-block, 8 halves) with wide aligned loads, the activations are read as
// float4 (they stay in L1), and the warp's sum is one shuffle reduction. This
// is the launch-gap-bound part of a decode step, so the launcher also takes
// up to three weight matrices sharing x (q / k / v) in one grid, and a gated
// pair whose two results feed SwiGLU / GeGLU, written as the activation only.
//
//   MatvecSegs s;
//   s.add(view(wq), view(yq)); s.add(view(wk), view(yk)); s.add(view(wv), view(yv));
//   launch_matvec(DType::Q4_0, s, view(x), stream);
//
// Activation rows against quantized weights (Q4_0, Q8_0, Q4_K, Q6_K: every
// decode step, and the few rows of a speculative verify or of several
// sequences) run on 8-bit activations, the cpu kernels' scheme: a first kernel
// quantizes each row of x once into the scratch as blocks of 32, q = round(x /
// d), d = max|x| / 127 (48-byte records with d and the sums), and the matvec
// takes integer dot products (dp4a) against the weights' quants, their scales
// and offsets applied per block in float; each weight unit is loaded once for
// all rows, and a row's result does not depend on the others (the same bits
// as alone).
// Error: |x - d q| <= max|x| / 254 per element of its block; the integer sums
// are exact. Float weights use float x: float FMA accumulation of exactly
// dequantized weights, within ~1e-6 sum|wx|.
#pragma once

#include "ops/cuda/cuda_kernels.h"

namespace kestrel::cuda {

constexpr int kMatvecMaxRows = 8;
constexpr int kMatvecMaxSegs = 3;

// Weight matrices of one type that multiply the same x, each into its own y.
struct MatvecSegs {
  TV w[kMatvecMaxSegs];
  TV y[kMatvecMaxSegs];
  int n = 0;
  bool add(const TV& wi, const TV& yi) {
    if (n == kMatvecMaxSegs) return false;
    w[n] = wi;
    y[n] = yi;
    ++n;
    return true;
  }
};

// Whether the kernel takes W of this type and layout against x (alignment,
// K a multiple of the type's unit, at most kMatvecMaxRows rows of x whose
// rows are 16-byte aligned).
bool matvec_fits(DType wt, const TV& w, const TV& x);

// One activation row of up to this many elements is quantized (8-bit, above)
// once for the launch instead of being read as floats by every warp (lane-
// strided float reads cost one cache line per lane and load, and each weight
// an int-to-float conversion); the quantizing kernel also runs the norm fold.
constexpr int64_t kMatvecMaxStagedK = 16384;

// The rms_norm the plan folds into the launch after it: x given to the launch
// is the norm's input; the quantizing kernel normalises it (sum of squares,
// one block reduction, x / sqrt(mean + eps) * w, w or 1 + w) and writes the
// normalised row to y too (y.data null: not written). One row only.
struct MatvecNorm {
  const float* w = nullptr;  // null: no weights
  float eps = 0.0f;
  bool one_plus_weight = false;
  TV y;
};

// The residual add the plan folds into a launch: s = r + y of segment 0,
// element by element (s may be r: each element is read and written by one lane).
struct MatvecAdd {
  TV r, s;
};

// Whether a MatvecNorm may be given with weights of type wt and activation x
// (quantized weights, one row, K <= kMatvecMaxStagedK).
bool matvec_can_norm(DType wt, const TV& x);

// Device scratch a launch with activation x needs (the 8-bit records, 48
// bytes per 32 elements; 0: x read as float): pass at least this much.
size_t matvec_scratch_bytes(DType wt, const TV& x);

// The rope + K / V cache store the plan folds into a q / k / v launch (what
// launch_rope_store does, bitwise, for one token): segments 0, 1, 2 are q
// [n_dims * Hq], k and v [n_dims * Hkv] (rope over whole heads: n_dims is the
// head size); q and k are rotated in their y, k and v also stored into cache
// row rows[0] (outside [0, n_cells): not stored) of kc / vc ([n_dims * Hkv,
// n_cells] of kv_type F32 / F16 / BF16, elements contiguous). Each warp takes
// one rotation pair (two weight rows).
struct MatvecRope {
  const int32_t* pos = nullptr;   // the token's position (device)
  const int32_t* rows = nullptr;  // its cache cell (device)
  RopeArgs args{};
  DType kv_type = DType::F16;
  TV kc, vc;
};

// Whether segs (one activation row x) can take a MatvecRope: three segments of
// Hq, Hkv and Hkv heads of n_dims rows each, outputs contiguous.
bool matvec_can_rope(const MatvecSegs& segs, const TV& x, int64_t n_dims, int64_t heads_q, int64_t heads_kv);

// x_quantized: the kernel that wrote x also wrote its records at scratch
// (launch_attention_decode's records), so no quantize kernel runs.
cudaError_t launch_matvec(DType wt, const MatvecSegs& segs, TV x, void* scratch, cudaStream_t s,
                          const MatvecNorm* norm = nullptr, const MatvecAdd* add = nullptr, bool x_quantized = false,
                          const MatvecRope* rope = nullptr);

// y[m][n] = glu(G[n] . x[m], U[n] . x[m]) with glu one of the Binary gated
// forms (swiglu, geglu_*): the gate and up projections and their activation
// in one kernel; G and U share type and shape. yg / yu (data null: not
// written) also receive the two projections, before y (which may be either).
cudaError_t launch_matvec_glu(DType wt, TV g, TV u, TV x, TV y, TV yg, TV yu, Binary glu, ExpTier tier,
                              void* scratch, cudaStream_t s, const MatvecNorm* norm = nullptr);

}  // namespace kestrel::cuda
