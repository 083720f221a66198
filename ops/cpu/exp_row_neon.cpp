#define KESTREL_ISA_NS neon_exp
#define KESTREL_XSIMD_ARCH xsimd::neon64
#define KESTREL_EXP_ROW_FN exp_row_neon
#include "ops/cpu/exp_row_body.inl"
