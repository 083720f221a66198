#define KESTREL_ISA_NS neon
#define KESTREL_XSIMD_ARCH xsimd::neon64
#define KESTREL_FILL_FN fill_kernels_neon
#include "ops/cpu/isa_body.inl"
