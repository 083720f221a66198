// cpu_exp_row(): picks the ISA variant's row loop (ops/cpu/exp_row_<isa>.cpp).
#include "ops/cpu/exp_row.h"

namespace kestrel {

Status cpu_exp_row(CpuIsa isa, ExpTier tier, const float* x, float* y, int64_t n) {
  if (!exp_tier_valid(tier)) return Status::invalid_argument("exp: unknown tier %d", (int)tier);
  if (n < 0 || (n > 0 && (!x || !y))) return Status::invalid_argument("exp: bad row");
  CpuIsa avail[8];
  const int n_avail = cpu_isa_available(avail, 8);
  if (isa == CpuIsa::auto_detect) {
    if (n_avail == 0) return Status::unsupported("exp: no SIMD variant runs on this CPU");
    isa = avail[0];
  }
  bool runs = false;
  for (int i = 0; i < n_avail; ++i) runs = runs || avail[i] == isa;
  if (!runs) return Status::unsupported("exp: cpu variant %s is not compiled in or not supported here", cpu_isa_name(isa));
  cpu::ExpRowFn fn = nullptr;
  switch (isa) {
#if defined(KESTREL_ISA_SSE42)
    case CpuIsa::sse42: fn = &cpu::exp_row_sse42; break;
#endif
#if defined(KESTREL_ISA_AVX2)
    case CpuIsa::avx2:
    case CpuIsa::avxvnni: fn = &cpu::exp_row_avx2; break;  // no integer work: one exp row for both
#endif
#if defined(KESTREL_ISA_AVX512)
    case CpuIsa::avx512: fn = &cpu::exp_row_avx512; break;
#endif
#if defined(KESTREL_ISA_NEON)
    case CpuIsa::neon:
    case CpuIsa::neondot:
    case CpuIsa::neoni8mm: fn = &cpu::exp_row_neon; break;  // no integer work: one exp row for all three
#endif
    default: break;
  }
  if (!fn) return Status::unsupported("exp: cpu variant %s is not compiled in", cpu_isa_name(isa));
  fn(tier, x, y, n);
  return {};
}

}  // namespace kestrel
