#define KESTREL_ISA_NS sse42
#define KESTREL_XSIMD_ARCH xsimd::sse4_2
#define KESTREL_FILL_FN fill_kernels_sse42
#include "ops/cpu/isa_body.inl"
