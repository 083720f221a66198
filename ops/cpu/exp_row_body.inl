// Included once per ISA by exp_row_<isa>.cpp, after it defines KESTREL_ISA_NS
// (a namespace of its own, apart from the op kernels'), KESTREL_XSIMD_ARCH and
// KESTREL_EXP_ROW_FN. The row loop of cpu_exp_row() (ops/cpu/exp_row.h).
#include <cstring>

#include <xsimd/xsimd.hpp>

#include "ops/cpu/exp_row.h"

namespace kestrel::cpu::KESTREL_ISA_NS {
using Arch = KESTREL_XSIMD_ARCH;
using fvec = xsimd::batch<float, Arch>;
constexpr int kLanes = static_cast<int>(fvec::size);
}  // namespace kestrel::cpu::KESTREL_ISA_NS

#include "ops/cpu/k_exp.inl"

namespace kestrel::cpu {
void KESTREL_EXP_ROW_FN(ExpTier tier, const float* x, float* y, int64_t n) {
  namespace isa = KESTREL_ISA_NS;
  using isa::fvec;
  isa::vexp::with_tier(tier, [&](auto tc) {
    constexpr ExpTier T = decltype(tc)::value;
    int64_t i = 0;
    for (; i + isa::kLanes <= n; i += isa::kLanes)
      isa::vexp::exp_t<T>(fvec::load_unaligned(x + i)).store_unaligned(y + i);
    if (i < n) {  // the tail through the same vector code
      alignas(64) float t[isa::kLanes] = {};
      std::memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
      isa::vexp::exp_t<T>(fvec::load_aligned(t)).store_aligned(t);
      std::memcpy(y + i, t, (size_t)(n - i) * sizeof(float));
    }
    return 0;
  });
}
}  // namespace kestrel::cpu
