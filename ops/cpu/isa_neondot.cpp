// The neon variant compiled with the dotprod extension (-march=armv8.2-a+dotprod):
// the quantized dot products use sdot (vdotq_s32) where plain neon widens and
// pairs (k_matmul_q.inl, __ARM_FEATURE_DOTPROD). Chosen when HWCAP says asimddp.
#define KESTREL_ISA_NS neondot
#define KESTREL_XSIMD_ARCH xsimd::neon64
#define KESTREL_FILL_FN fill_kernels_neondot
#include "ops/cpu/isa_body.inl"
