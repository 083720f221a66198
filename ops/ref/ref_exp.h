// Scalar reference of each exp tier (ops/exp_tier.h) and of the activations
// built on it. The quake tiers are computed in float with the same constants
// and the same sequence of fused multiply-adds as the SIMD kernels
// (ops/cpu/k_exp.inl), so a SIMD variant matches its tier's reference to float
// rounding; the exact tier is exp in double, the oracle.
//
//   float e = ref::exp_tier(ExpTier::quake2, x);            // ~exp(x), 0.27%
//   float s = ref::silu_tier(ExpTier::quake1, x);           // x * sigmoid(x), ~3%
#pragma once

#include "ops/exp_tier.h"
#include "ops/op_table.h"

namespace kestrel::ref {

// The quake tier's value for v = fma(x, a, b) (a, b from quake::quake_affine):
// v clamped to [0, 255*2^23], truncated to an int, read as float bits (quake1)
// or split into 2^floor and the mantissa polynomial (quake2). NaN passes.
float quake_from_v(ExpTier tier, float v);

// exp(x) of the tier: exact = exp in double, rounded once.
float exp_tier(ExpTier tier, float x);

// Activations of a tier. The exact tier is the double oracle; the quake tiers
// mirror the SIMD formulas (affine folded into the multiply-add):
//   sigmoid(x) = 1 / (1 + exp(-x)), silu(x) = x / (1 + exp(-x)),
//   gelu tanh  = x / (1 + exp(-2 sqrt(2/pi) x (1 + 0.044715 x^2))),
//   gelu sigmoid form = x / (1 + exp(-1.702 x)),
//   gelu erf   = x (1 - h) for x >= 0, x h for x < 0, h = erfc(|x|/sqrt2) / 2
//                with erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2) (a
//                Chebyshev-fitted form with relative error < 1.2e-7 for z >= 0).
float sigmoid_tier(ExpTier tier, float x);
float silu_tier(ExpTier tier, float x);
float gelu_tier(ExpTier tier, GeluForm form, float x);

// Coefficients of P(t) above, c0 + c1 t + ... + c9 t^9.
inline constexpr float kErfcP[10] = {-1.26551223f, 1.00002368f, 0.37409196f,  0.09678418f, -0.18628806f,
                                     0.27886807f,  -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f};
// GELU constants: tanh form 2*sqrt(2/pi) and cubic; sigmoid form 1.702.
inline constexpr float kGeluK2 = 2.0f * 0.7978845608028654f;
inline constexpr float kGeluCubic = 0.044715f;
inline constexpr float kGeluSigmoidK = 1.702f;
inline constexpr float kInvSqrt2 = 0.7071067811865476f;

}  // namespace kestrel::ref
