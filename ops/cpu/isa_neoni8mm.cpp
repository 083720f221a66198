// The neon variant compiled with the dotprod and i8mm extensions
// (-march=armv8.2-a+dotprod+i8mm): sdot as in neondot, and from two activation rows the
// quantized matmuls on smmla tiles (k_matmul_q_i8mm.inl, __ARM_FEATURE_MATMUL_INT8).
// Chosen when HWCAP says asimddp and HWCAP2 says i8mm.
#define KESTREL_ISA_NS neoni8mm
#define KESTREL_XSIMD_ARCH xsimd::neon64
#define KESTREL_FILL_FN fill_kernels_neoni8mm
#include "ops/cpu/isa_body.inl"
