#define KESTREL_ISA_NS avx512
#define KESTREL_XSIMD_ARCH xsimd::avx512bw
#define KESTREL_FILL_FN fill_kernels_avx512
#include "ops/cpu/isa_body.inl"
