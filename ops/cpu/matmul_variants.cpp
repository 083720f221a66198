// The table of named matmul variants over the ISA variants compiled in (see
// ops/cpu/matmul_variants.h). Running one lives in cpu_backend.cpp, next to the backend
// whose threads and scratch it uses.
#include "ops/cpu/matmul_variants.h"

#include <cstring>

#if defined(KESTREL_HAVE_AMX)
#include "ops/cpu/amx/amx_matmul.h"
#endif

namespace kestrel {

namespace {

using VariantListFn = cpu::MatmulVariantList (*)();

struct VariantSource {
  CpuIsa isa;
  VariantListFn list;
};

// Where each ISA's variants come from, in listing order. A kernel family compiled in its
// own translation unit adds a row {isa whose backend may run it, its list function}; its
// variants' available() does the run-time check (CPU features, OS permission). Their rows
// range stays {0, 0} unless k_matmul's policy is changed to pick them; a family the policy
// prefers where available (e.g. a matrix engine from some M on) goes before the ISA's own
// row, since the policy's pick is the first available variant whose range holds M.
constexpr VariantSource kSources[] = {
#if defined(KESTREL_ISA_SSE42)
    {CpuIsa::sse42, &cpu::matmul_variants_sse42},
#endif
#if defined(KESTREL_ISA_AVX2)
    {CpuIsa::avx2, &cpu::matmul_variants_avx2},
#endif
#if defined(KESTREL_ISA_AVXVNNI)
    {CpuIsa::avxvnni, &cpu::matmul_variants_avxvnni},
#endif
#if defined(KESTREL_HAVE_AMX)
    {CpuIsa::avx512, &cpu::matmul_variants_amx},  // AMX tiles (ops/cpu/amx), from amx_min_rows()
#endif
#if defined(KESTREL_ISA_AVX512)
    {CpuIsa::avx512, &cpu::matmul_variants_avx512},
#endif
#if defined(KESTREL_ISA_NEONDOT)
    {CpuIsa::neondot, &cpu::matmul_variants_neondot},
#endif
#if defined(KESTREL_ISA_NEONI8MM)
    {CpuIsa::neoni8mm, &cpu::matmul_variants_neoni8mm},
#endif
#if defined(KESTREL_ISA_NEON)
    {CpuIsa::neon, &cpu::matmul_variants_neon},
#endif
    {CpuIsa::scalar, nullptr},  // keeps the array non-empty; lists nothing
};

CpuIsa resolve(CpuIsa isa) {
  if (isa != CpuIsa::auto_detect) return isa;
  CpuIsa best[8];
  return cpu_isa_available(best, 8) > 0 ? best[0] : CpuIsa::scalar;
}

}  // namespace

int cpu_matmul_variants(CpuIsa isa, DType w, const MatmulVariant** out, int max) {
  isa = resolve(isa);
  int n = 0;
  for (const VariantSource& src : kSources) {
    if (src.isa != isa || !src.list) continue;
    const cpu::MatmulVariantList l = src.list();
    for (int i = 0; i < l.n; ++i) {
      if (l.v[i].wtype != w) continue;
      if (n < max) out[n] = &l.v[i];
      ++n;
    }
  }
  return n;
}

const MatmulVariant* cpu_matmul_policy_variant(CpuIsa isa, DType w, int64_t rows) {
  if (rows < 1) return nullptr;
  const MatmulVariant* v[kMaxMatmulVariants];
  const int n = cpu_matmul_variants(isa, w, v, kMaxMatmulVariants);
  for (int i = 0; i < n && i < kMaxMatmulVariants; ++i)
    if (rows >= v[i]->min_rows && rows <= v[i]->max_rows && v[i]->available()) return v[i];
  return nullptr;
}

const MatmulVariant* cpu_matmul_find_variant(const char* name) {
  if (!name) return nullptr;
  for (const VariantSource& src : kSources) {
    if (!src.list) continue;
    const cpu::MatmulVariantList l = src.list();
    for (int i = 0; i < l.n; ++i)
      if (std::strcmp(l.v[i].name, name) == 0) return &l.v[i];
  }
  return nullptr;
}

}  // namespace kestrel
