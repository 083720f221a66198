#define KESTREL_ISA_NS avx2_exp
#define KESTREL_XSIMD_ARCH xsimd::fma3<xsimd::avx2>
#define KESTREL_EXP_ROW_FN exp_row_avx2
#include "ops/cpu/exp_row_body.inl"
