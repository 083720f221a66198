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

cudaError_t launch_matvec(DType wt, const MatvecSegs& segs, TV x, cudaStream_t s);

// y[m][n] = glu(G[n] . x[m], U[n] . x[m]) with glu one of the Binary gated
// forms (swiglu, geglu_*): the gate and up projections and their activation
// in one kernel; G and U share type and shape. yg / yu (data null: not
// written) also receive the two projections, before y (which may be either).
cudaError_t launch_matvec_glu(DType wt, TV g, TV u, TV x, TV y, TV yg, TV yu, Binary glu, ExpTier tier,
                              cudaStream_t s);

}  // namespace kestrel::cuda
