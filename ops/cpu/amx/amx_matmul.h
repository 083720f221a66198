// Matmul on Intel AMX tiles (x86-64 Xeons from Sapphire Rapids on): the quantized
// weights Q4_0 / Q5_0 / Q8_0 against 8-bit activations, tdpbssd products of 32 elements on
// 16 x 16 outputs, the scales applied in AVX-512 after each tile product; Q4_K / Q6_K with
// the scales folded into int8 weight planes, one product set per 256-element super-block;
// and F16 / BF16 weights on tdpbf16ps in split precision (amx_matmul_bf16.cpp: not the
// avx512 float kernels' bits, |err| <= ~2^-17 sum|w x|, the same bits at any M).
//
// It is a variant beside the avx512 matmul (ops/cpu/k_matmul.inl), for calls with many
// activation rows (prompts, batched decoding, draft verification); the caller decides
// from how many rows (amx_min_rows(), the crossover measured by bench/bench_amx_matmul.cpp)
// and falls back to its own kernel when amx_matmul() returns false.
//
//   if (Mt >= amx_min_rows(w) && amx_available() && amx_matmul(call, exec)) return true;
//   ... the avx512 kernel ...
//
// Arithmetic: the activations are quantized by the avx512 path's own quantizers (ActQ8,
// BlockQ8_K in k_matmul_act.inl); the integer sums are exact, and the float operations per
// output are the avx512 kernels' (Q4_0 / Q5_0 / Q8_0: per block acc = fma(float(sum),
// d_w * d_x, acc), corr = fma(d_w, offset * c8, corr), y = acc - corr; Q4_K / Q6_K: one
// chain over super-blocks, which the avx512 variant's K-quant kernels sum too where this
// kernel runs, see amx_matmul_kq.cpp). So results are bitwise equal to the
// avx512 matmul's and do not depend on M, the tile an output falls in, or the thread count.
// (Float weights: see amx_matmul_bf16.cpp for their error bound and bits group.)
//
// Weights are repacked per call, panel by panel: a thread decodes 16 weight rows (all
// their blocks; the int8 kernels a group of such panels at once) into tiles once and runs
// every activation row against them, so the repack is amortised over M; bench_amx_matmul's
// M = 1 rows show what it costs (AMX at one activation row is mostly the repack), and its
// crossover is where it stops mattering.
// Not thread-safe per Exec (it uses exec's scratch), like every cpu kernel.
#pragma once

#include "ops/cpu/kernel_table.h"
#include "platform/amx.h"

namespace kestrel::cpu {

// True when this build has the AMX kernels and this process may use AMX-INT8.
bool amx_available();
// The same for the float-weight kernels: AMX-INT8 and AMX-BF16.
bool amx_bf16_available();

// Whether amx_matmul handles this matmul's weight type and shape (Q4_0, Q5_0, Q8_0, Q4_K,
// Q6_K weights with whole blocks, or F16 / BF16 weights; F32 activations, K > 0). Says nothing about the CPU: see amx_available().
bool amx_supports(const OpCall& call);

// The default policy's rows for weight type w: the avx512 matmul runs these kernels from
// this many activation rows on when amx_available() (same bits as its own paths, so only
// the speed changes); 0 when there is no AMX kernel for w (or none compiled in). The
// crossover measured by bench/bench_amx_matmul.cpp.
int64_t amx_min_rows(DType w);

// The AMX kernels as named matmul variants of the avx512 ISA (ops/cpu/matmul_variants.h),
// "<wtype>_matmul__avx512_amx16x16", rows [amx_min_rows(w), unbounded]; available() is
// amx_available(). Their bits groups are those of the avx512 variants they equal.
MatmulVariantList matmul_variants_amx();

// Runs the matmul; false when it cannot (no AMX, an unsupported call, scratch allocation
// failed), with dst untouched: the caller runs its own kernel.
bool amx_matmul(const OpCall& call, Exec& exec);
// The same, with the AMX state given (tests pass amx_probe(true) for a refused one).
bool amx_matmul(const OpCall& call, Exec& exec, const AmxState& amx);

}  // namespace kestrel::cpu
