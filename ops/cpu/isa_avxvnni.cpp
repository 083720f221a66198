// The avx2 variant compiled with AVX-VNNI (-mavxvnni): the int8 dot products use the
// VEX-encoded vpdpbusd / vpdpwssd on ymm where avx2 pairs vpmaddubsw with vpmaddwd
// (k_matmul_q.inl, k_matmul_q_rows.inl, k_matmul_q1.inl: __AVXVNNI__). Chosen when
// CPUID reports AVX-VNNI (leaf 7 subleaf 1, EAX bit 4) and no avx512 variant runs.
#define KESTREL_ISA_NS avxvnni
#define KESTREL_XSIMD_ARCH xsimd::fma3<xsimd::avx2>
#define KESTREL_FILL_FN fill_kernels_avxvnni
#include "ops/cpu/isa_body.inl"
