// Decode matvec (k_matvec.cu): y[m][n] = sum_k W[n][k] x[m][k] for a few
// activation rows (m < kMatvecMaxRows), W read in its stored type.
//
// One warp per W row (two for one activation row), no shared memory and no
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
// Error: float FMA accumulation of exactly dequantized weights against float
// activations (no 8-bit rounding of x): as the reference within ~1e-6 sum|wx|.
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

// One activation row of up to this many elements is staged in shared memory
// (padded so that the lanes' reads fall in different banks) instead of being
// read from global memory by every warp; it is what makes the fusions below
// possible.
constexpr int64_t kMatvecMaxStagedK = 8192;

// The rms_norm the plan folds into the launch after it: x given to the launch
// is the norm's input; every block normalises its staged copy (sum of squares,
// one block reduction, x / sqrt(mean + eps) * w, w or 1 + w), and block 0
// writes the normalised row to y too (y.data null: not written). One row only.
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

cudaError_t launch_matvec(DType wt, const MatvecSegs& segs, TV x, cudaStream_t s, const MatvecNorm* norm = nullptr,
                          const MatvecAdd* add = nullptr);

// y[m][n] = glu(G[n] . x[m], U[n] . x[m]) with glu one of the Binary gated
// forms (swiglu, geglu_*): the gate and up projections and their activation
// in one kernel; G and U share type and shape. yg / yu (data null: not
// written) also receive the two projections, before y (which may be either).
cudaError_t launch_matvec_glu(DType wt, TV g, TV u, TV x, TV y, TV yg, TV yu, Binary glu, ExpTier tier,
                              cudaStream_t s, const MatvecNorm* norm = nullptr);

}  // namespace kestrel::cuda
