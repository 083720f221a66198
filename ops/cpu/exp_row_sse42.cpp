#define KESTREL_ISA_NS sse42_exp
#define KESTREL_XSIMD_ARCH xsimd::sse4_2
#define KESTREL_EXP_ROW_FN exp_row_sse42
#include "ops/cpu/exp_row_body.inl"
