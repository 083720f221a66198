#define KESTREL_ISA_NS avx2
#define KESTREL_XSIMD_ARCH xsimd::fma3<xsimd::avx2>
#define KESTREL_FILL_FN fill_kernels_avx2
#include "ops/cpu/isa_body.inl"
