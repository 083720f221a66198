// exp over a row on one cpu variant and exp tier: the tiers on their own, for
// tests (accuracy of each ISA variant) and benches (speed of exp alone). The
// ops (softmax, gelu, silu, sigmoid, ...) use the same inline code
// (ops/cpu/k_exp.inl) through their ExpTier parameter.
//
//   KESTREL_TRY(cpu_exp_row(CpuIsa::avx2, ExpTier::quake2, x, y, n));
#pragma once

#include <cstdint>

#include "ops/backend.h"
#include "ops/exp_tier.h"
#include "platform/status.h"

namespace kestrel {

// y[i] = exp(x[i]) on `tier` (x and y may alias), vectorized on `isa`, one
// thread. unsupported when the variant is not compiled in or the CPU lacks it;
// CpuIsa::auto_detect picks the best variant.
Status cpu_exp_row(CpuIsa isa, ExpTier tier, const float* x, float* y, int64_t n);

namespace cpu {
using ExpRowFn = void (*)(ExpTier tier, const float* x, float* y, int64_t n);
void exp_row_sse42(ExpTier tier, const float* x, float* y, int64_t n);
void exp_row_avx2(ExpTier tier, const float* x, float* y, int64_t n);
void exp_row_avx512(ExpTier tier, const float* x, float* y, int64_t n);
void exp_row_neon(ExpTier tier, const float* x, float* y, int64_t n);
}  // namespace cpu

}  // namespace kestrel
