// Exp tiers: how exactly softmax, GELU, sigmoid and SiLU compute exp().
//
// An op's parameter struct carries an ExpTier (default exact); the cpu kernels
// (ops/cpu/k_exp.inl) and the scalar reference (ops/ref/ref_exp.h) implement
// each tier with the same constants, defined here.
//
//   SoftmaxParams p;
//   p.exp = ExpTier::quake2;   // ~0.26% relative error per exp, faster softmax
//
// The tiers (bounds measured by tests/test_exp.cpp on a dense grid of
// x in [-87, 88]; relative error against exp computed in double):
//
//   exact   range reduction + polynomial (xsimd::exp on the cpu): measured max
//           error 1.5 ulp against the exact value (relative 1.29e-7, RMS 3.0e-8)
//           on sse4.2, avx2 and avx512 alike.
//
//   quake2  IEEE-754 bit trick with a second-order mantissa correction.
//           v = a*x + 127*2^23 (a = 2^23/ln2) read as an int i: the exponent
//           bits of i give 2^floor(t), t = x/ln2, and the mantissa bits
//           M = 1 + frac(t) in [1, 2). 2^frac(t) ~= p(M) = d2*M^2 + d1*M + d0,
//           the minimax-relative quadratic with p(2) = 2 p(1), so the result
//           2^floor(t) * p(M) is continuous across every power of two.
//           Max relative error 0.264% (theory) / 0.2645% measured, RMS 0.189%.
//
//   quake1  First-order bit trick: the float whose bits are int(a*x + b),
//           b = 127*2^23 - kQuake1Shift. The mantissa bits are used as 2^f ~= 1 + f
//           (ratio to the truth in [1, 1.0615]); the shift multiplies by
//           2^(-0.0437) = 0.9702, balancing the error to +-2.98% (measured
//           2.983%, RMS 2.03%).
//
// Any affine map of the input folds into the one multiply-add: exp(s*x + c)
// = quake(fma(x, a*s, b + a*c)) (see quake_affine()). Softmax folds its scale
// and -max, the logistic its -x, GELU's sigmoid form its -1.702x, GELU's tanh
// form -2*sqrt(2/pi).
//
// Input clamping of the quake tiers (v = a*x + b is clamped to [0, 255*2^23]):
//   x = -inf or x <= about -88.0: exactly 0 (masked softmax entries stay 0).
//   quake2: x < -87.34 (2^-126) gives 0 (never a subnormal).
//   quake1: -88.03 < x < -87.34 gives subnormals below 1.2e-38 (absolute error
//           < 1.2e-38), below that 0.
//   x >= 88.73 or x = +inf: +inf (the float with the bits of 255*2^23), like expf.
//   NaN in, NaN out.
// The exact tier follows expf: 0 below -103.97, +inf above 88.72, NaN passes.
#pragma once

#include <cstdint>

namespace kestrel {

enum class ExpTier : int32_t {
  exact = 0,   // polynomial, <= 1.5 ulp
  quake2 = 1,  // second-order bit trick, <= 0.27% relative
  quake1 = 2,  // first-order bit trick, <= 3.0% relative
};
constexpr int kExpTierCount = 3;

constexpr bool exp_tier_valid(ExpTier t) {
  return t == ExpTier::exact || t == ExpTier::quake2 || t == ExpTier::quake1;
}

constexpr const char* exp_tier_name(ExpTier t) {
  switch (t) {
    case ExpTier::exact: return "exact";
    case ExpTier::quake2: return "quake2";
    case ExpTier::quake1: return "quake1";
  }
  return "unknown";
}

// The documented bound on |exp_tier(x) / exp(x) - 1| for x in [-87, 88]
// (asserted by tests/test_exp.cpp). exact: about 2 ulp (measured 1.5).
constexpr double exp_tier_max_rel_error(ExpTier t) {
  switch (t) {
    case ExpTier::exact: return 2.4e-7;
    case ExpTier::quake2: return 2.7e-3;
    case ExpTier::quake1: return 3.0e-2;
  }
  return 0.0;
}

namespace quake {

constexpr double kA = 12102203.161561485;          // 2^23 / ln 2
constexpr double kB = 127.0 * 8388608.0;            // 127 * 2^23: the exponent bias, in place
constexpr double kQuake1Shift = 366393.0;           // -log2(2 / 2.0614757) * 2^23
constexpr float kVMax = 2139095040.0f;              // 255 * 2^23: the bits of +inf
// p(M) = d2 M^2 + d1 M + d0 for M in [1, 2): k (1 + f - c f (1 - f)) with
// f = M - 1, c = 0.33333, k = 0.99922784 (minimax relative, p(2) = 2 p(1)).
constexpr float kD2 = 0.33307261f;
constexpr float kD1 = 9.9922784e-06f;
constexpr float kD0 = 0.66614523f;

// The one multiply-add v = x * a + b that computes exp(scale * x + bias) for a
// quake tier. Constants computed in double, rounded once to float.
struct Affine {
  float a, b;
};
constexpr Affine quake_affine(ExpTier t, double scale, double bias) {
  const double b0 = t == ExpTier::quake1 ? kB - kQuake1Shift : kB;
  return {static_cast<float>(kA * scale), static_cast<float>(b0 + kA * bias)};
}

}  // namespace quake

}  // namespace kestrel
