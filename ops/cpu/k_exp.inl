// CPU exp tiers (see isa_body.inl for how this is compiled per ISA, and
// ops/exp_tier.h for each tier's algorithm, constants, error and clamping).
//
//   vexp::exact(x)                       xsimd::exp: Cody-Waite range reduction
//                                        + polynomial, measured 1 ulp max
//   vexp::exp_t<ExpTier::quake2>(x)      bit trick + quadratic mantissa, 0.265%
//   vexp::Quake<T>(scale, bias)(x)       exp(scale * x + bias) of a quake tier,
//                                        the affine folded into the one fma
//   vexp::with_tier(tier, f)             calls f(tier as a compile-time constant)
//
// A quake exp is: fma, max, min, truncating convert, (quake2: two ands, an or,
// two fmas, a multiply), and a compare + blend that lets NaN through; no
// table, no branch. The scalar reference (ops/ref/ref_exp.cpp) performs the
// same float operations, so each variant matches it to a rounding of v.
#include <type_traits>

#include "ops/exp_tier.h"

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace vexp {

using ivec = xsimd::batch<int32_t, Arch>;

template <ExpTier T>
using TierC = std::integral_constant<ExpTier, T>;

inline fvec exact(fvec x) { return xsimd::exp(x); }

// The quake tier's value for v = x * a + b (quake::quake_affine): clamp v to
// [0, 255*2^23] (0 and +inf bits), truncate to int, read the bits as a float
// (quake1), or as 2^floor (exponent bits) times p(M) (mantissa bits as M in [1, 2),
// quake2). NaN in v comes out unchanged.
template <ExpTier T>
inline fvec quake_v(fvec v) {
  static_assert(T == ExpTier::quake1 || T == ExpTier::quake2);
  const fvec c = xsimd::min(xsimd::max(v, fvec(0.0f)), fvec(quake::kVMax));
  const ivec i = xsimd::batch_cast<int32_t>(c);
  fvec y;
  if constexpr (T == ExpTier::quake1) {
    y = xsimd::bitwise_cast<fvec>(i);
  } else {
    const fvec e = xsimd::bitwise_cast<fvec>(i & ivec((int32_t)0xff800000u));
    const fvec m = xsimd::bitwise_cast<fvec>((i & ivec(0x007fffff)) | ivec(0x3f800000));
    y = e * xsimd::fma(m, xsimd::fma(m, fvec(quake::kD2), fvec(quake::kD1)), fvec(quake::kD0));
  }
  return xsimd::select(xsimd::isnan(v), v, y);  // (xsimd's != is ordered on AVX)
}

// exp(scale * x + bias) of quake tier T: one fma then quake_v.
template <ExpTier T>
struct Quake {
  fvec a, b;
  Quake(double scale, double bias) {
    const quake::Affine q = quake::quake_affine(T, scale, bias);
    a = fvec(q.a);
    b = fvec(q.b);
  }
  fvec operator()(fvec x) const { return quake_v<T>(xsimd::fma(x, a, b)); }
};

// exp(s * x) with s a compile-time constant (the constants fold away).
template <ExpTier T>
inline fvec quake_scaled(fvec x, double s) {
  const quake::Affine q = quake::quake_affine(T, s, 0.0);
  return quake_v<T>(xsimd::fma(x, fvec(q.a), fvec(q.b)));
}

// exp(x) of tier T.
template <ExpTier T>
inline fvec exp_t(fvec x) {
  if constexpr (T == ExpTier::exact) return exact(x);
  else return quake_scaled<T>(x, 1.0);
}
inline fvec exp_quake2(fvec x) { return exp_t<ExpTier::quake2>(x); }
inline fvec exp_quake1(fvec x) { return exp_t<ExpTier::quake1>(x); }

// Hoists the tier out of the element loop: f(TierC<T>{}) with T = tier.
template <typename F>
inline decltype(auto) with_tier(ExpTier tier, F&& f) {
  switch (tier) {
    case ExpTier::quake2: return f(TierC<ExpTier::quake2>{});
    case ExpTier::quake1: return f(TierC<ExpTier::quake1>{});
    case ExpTier::exact: break;
  }
  return f(TierC<ExpTier::exact>{});
}

}  // namespace vexp
}  // namespace kestrel::cpu::KESTREL_ISA_NS
