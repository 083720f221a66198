#define KESTREL_ISA_NS avx512_exp
#define KESTREL_XSIMD_ARCH xsimd::avx512bw
#define KESTREL_EXP_ROW_FN exp_row_avx512
// GCC 12 false positive on AVX-512 intrinsics (see k_elementwise.inl).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "ops/cpu/exp_row_body.inl"
