// Exp tiers in device code (ops/exp_tier.h): the same constants and the same
// sequence of fused multiply-adds as the scalar reference (ops/ref/ref_exp.cpp),
// so a cuda kernel matches its tier's reference to float rounding. The exact
// tier is expf / tanhf / erff (CUDA's accurate forms, <= 2 ulp), not __expf.
//
//   const quake::Affine q = quake::quake_affine(T, -1.0, 0.0);   // exp(-x)
//   float e = quake_v<T>(fmaf(x, q.a, q.b));
#pragma once

#include <cstdint>
#include <type_traits>

#include "ops/exp_tier.h"

namespace kestrel::cuda {

// The quake tier's value for v = fma(x, a, b): v clamped to [0, 255*2^23],
// truncated to an int, read as float bits (quake1) or split into 2^floor and
// the mantissa polynomial (quake2). NaN passes.
template <ExpTier T>
__device__ __forceinline__ float quake_v(float v) {
  if (isnan(v)) return v;
  v = fminf(fmaxf(v, 0.0f), quake::kVMax);
  const uint32_t i = static_cast<uint32_t>(__float2int_rz(v));
  if constexpr (T == ExpTier::quake1) {
    return __uint_as_float(i);
  } else {
    const float e = __uint_as_float(i & 0xff800000u);
    const float m = __uint_as_float((i & 0x007fffffu) | 0x3f800000u);
    return e * fmaf(m, fmaf(m, quake::kD2, quake::kD1), quake::kD0);
  }
}

// exp(s * x) of tier T (s a compile-time-known scale folded into the fma).
template <ExpTier T>
__device__ __forceinline__ float exp_scaled(float x, double s) {
  if constexpr (T == ExpTier::exact) {
    return expf(static_cast<float>(s) * x);
  } else {
    constexpr double kB0 = T == ExpTier::quake1 ? quake::kB - quake::kQuake1Shift : quake::kB;
    return quake_v<T>(fmaf(x, static_cast<float>(quake::kA * s), static_cast<float>(kB0)));
  }
}

template <ExpTier T>
__device__ __forceinline__ float sigmoid_t(float x) {
  return 1.0f / (1.0f + exp_scaled<T>(x, -1.0));
}
template <ExpTier T>
__device__ __forceinline__ float silu_t(float x) {
  return x / (1.0f + exp_scaled<T>(x, -1.0));
}

// GELU forms (ops/ref/ref_exp.h): tanh = x / (1 + exp(-2 sqrt(2/pi) x (1 + 0.044715 x^2)))
// on the quake tiers (0.5x(1 + tanh(u)) on the exact one), sigmoid form x / (1 + exp(-1.702x)),
// erf form through erfc(z) = t exp(-z^2 + P(t)) on the quake tiers, erff on the exact one.
template <ExpTier T>
__device__ __forceinline__ float gelu_tanh_t(float x) {
  if constexpr (T == ExpTier::exact) {
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
  } else {
    const float w = x * fmaf(x * x, 0.044715f, 1.0f);
    return x / (1.0f + exp_scaled<T>(w, -(double)(2.0f * 0.7978845608028654f)));
  }
}
template <ExpTier T>
__device__ __forceinline__ float gelu_sigmoid_t(float x) {
  return x / (1.0f + exp_scaled<T>(x, -(double)1.702f));
}
template <ExpTier T>
__device__ __forceinline__ float gelu_erf_t(float x) {
  constexpr float kInvSqrt2 = 0.7071067811865476f;
  if constexpr (T == ExpTier::exact) {
    return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  } else {
    const float z = fabsf(x) * kInvSqrt2;
    const float t = 1.0f / fmaf(0.5f, z, 1.0f);
    float p = 0.17087277f;
    p = fmaf(p, t, -0.82215223f);
    p = fmaf(p, t, 1.48851587f);
    p = fmaf(p, t, -1.13520398f);
    p = fmaf(p, t, 0.27886807f);
    p = fmaf(p, t, -0.18628806f);
    p = fmaf(p, t, 0.09678418f);
    p = fmaf(p, t, 0.37409196f);
    p = fmaf(p, t, 1.00002368f);
    p = fmaf(p, t, -1.26551223f);
    const float w = fmaf(-z, z, p);
    const float h = 0.5f * t * exp_scaled<T>(w, 1.0);
    return x * (x < 0.0f ? h : 1.0f - h);
  }
}

// Calls f(std::integral_constant<ExpTier, T>{}) for the runtime tier t.
template <typename F>
__host__ inline auto with_tier(ExpTier t, F&& f) {
  switch (t) {
    case ExpTier::quake2: return f(std::integral_constant<ExpTier, ExpTier::quake2>{});
    case ExpTier::quake1: return f(std::integral_constant<ExpTier, ExpTier::quake1>{});
    default: return f(std::integral_constant<ExpTier, ExpTier::exact>{});
  }
}

}  // namespace kestrel::cuda
