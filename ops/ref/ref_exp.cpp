// Scalar reference of the exp tiers and the activations built on them (see
// ops/ref/ref_exp.h). The quake paths are written as the SIMD kernels compute
// them -- float, std::fma where the kernels use a fused multiply-add -- so that
// a SIMD variant and this file differ only by a rounding here and there.
#include "ops/ref/ref_exp.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace kestrel::ref {

namespace {

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// exp(s * x) of a quake tier: the affine folded into one fma.
float quake_scaled(ExpTier tier, float x, double s) {
  const quake::Affine q = quake::quake_affine(tier, s, 0.0);
  return quake_from_v(tier, std::fma(x, q.a, q.b));
}

// erfc(z) / 2 for z >= 0 through the tier's exp: t exp(-z^2 + P(t)) / 2.
float half_erfc_tier(ExpTier tier, float z) {
  const float t = 1.0f / std::fma(0.5f, z, 1.0f);
  float p = kErfcP[9];
  for (int i = 8; i >= 0; --i) p = std::fma(p, t, kErfcP[i]);
  const float w = std::fma(-z, z, p);
  return 0.5f * t * quake_scaled(tier, w, 1.0);
}

}  // namespace

float quake_from_v(ExpTier tier, float v) {
  if (std::isnan(v)) return v;
  v = std::min(std::max(v, 0.0f), quake::kVMax);
  const uint32_t i = static_cast<uint32_t>(static_cast<int32_t>(v));  // truncation; v in [0, 2^31)
  if (tier == ExpTier::quake1) return bits_to_float(i);
  // quake2: 2^floor(t) from the exponent bits, the mantissa bits as M in [1, 2).
  const float e = bits_to_float(i & 0xff800000u);
  const float m = bits_to_float((i & 0x007fffffu) | 0x3f800000u);
  return e * std::fma(m, std::fma(m, quake::kD2, quake::kD1), quake::kD0);
}

float exp_tier(ExpTier tier, float x) {
  if (tier == ExpTier::exact) return static_cast<float>(std::exp(static_cast<double>(x)));
  return quake_scaled(tier, x, 1.0);
}

float sigmoid_tier(ExpTier tier, float x) {
  if (tier == ExpTier::exact) return static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x))));
  return 1.0f / (1.0f + quake_scaled(tier, x, -1.0));
}

float silu_tier(ExpTier tier, float x) {
  if (tier == ExpTier::exact) return static_cast<float>(x / (1.0 + std::exp(-static_cast<double>(x))));
  return x / (1.0f + quake_scaled(tier, x, -1.0));
}

float gelu_tier(ExpTier tier, GeluForm form, float x) {
  if (tier == ExpTier::exact) {
    const double xd = x;
    switch (form) {
      case GeluForm::erf: return static_cast<float>(0.5 * xd * (1.0 + std::erf(xd / std::sqrt(2.0))));
      case GeluForm::sigmoid: return static_cast<float>(xd / (1.0 + std::exp(-1.702 * xd)));
      case GeluForm::tanh: break;
    }
    // 0.5x(1 + tanh(u)) = x / (1 + exp(-2u)): no cancellation for negative x.
    const double k = std::sqrt(2.0 / M_PI);
    return static_cast<float>(xd / (1.0 + std::exp(-2.0 * k * (xd + 0.044715 * xd * xd * xd))));
  }
  switch (form) {
    case GeluForm::erf: {
      const float h = half_erfc_tier(tier, std::fabs(x) * kInvSqrt2);
      return x * (x < 0.0f ? h : 1.0f - h);
    }
    case GeluForm::sigmoid: return x / (1.0f + quake_scaled(tier, x, -(double)kGeluSigmoidK));
    case GeluForm::tanh: break;
  }
  const float w = x * std::fma(x * x, kGeluCubic, 1.0f);
  return x / (1.0f + quake_scaled(tier, w, -(double)kGeluK2));
}

}  // namespace kestrel::ref
