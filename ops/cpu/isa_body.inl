// Included once per ISA translation unit, after it defines:
//   KESTREL_ISA_NS       the namespace for this variant (sse42, avx2, ...)
//   KESTREL_XSIMD_ARCH   the xsimd architecture type
//   KESTREL_FILL_FN      the table-filling function to define
// Everything here lives in kestrel::cpu::KESTREL_ISA_NS, so the same inline
// code compiled with different flags never merges across variants (ODR).
#include <xsimd/xsimd.hpp>

#include "ops/cpu/kernel_table.h"

namespace kestrel::cpu::KESTREL_ISA_NS {
using Arch = KESTREL_XSIMD_ARCH;
using fvec = xsimd::batch<float, Arch>;
constexpr int kLanes = static_cast<int>(fvec::size);
}  // namespace kestrel::cpu::KESTREL_ISA_NS

#include "ops/cpu/k_exp.inl"
#include "ops/cpu/k_elementwise.inl"
#include "ops/cpu/k_norm.inl"
#include "ops/cpu/k_rope.inl"
#include "ops/cpu/k_softmax.inl"
#include "ops/cpu/k_attention.inl"
#include "ops/cpu/k_matmul.inl"
#include "ops/cpu/k_ks_matmul.inl"
#include "ops/cpu/k_spec_verify.inl"
#include "ops/cpu/k_scatter.inl"

namespace kestrel::cpu {
void KESTREL_FILL_FN(KernelTable& table) {
  namespace isa = KESTREL_ISA_NS;
  isa::register_elementwise(table);
  isa::register_norm(table);
  isa::register_rope(table);
  isa::register_softmax(table);
  isa::register_attention(table);
  isa::register_matmul(table);
  isa::register_ks_matmul(table);
  isa::register_spec_verify(table);
  isa::register_scatter(table);
}
}  // namespace kestrel::cpu
