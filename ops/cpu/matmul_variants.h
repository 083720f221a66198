// Named matmul kernel variants of the cpu backend: list them per ISA and weight type, run
// a chosen one on a whole matmul call, and see which one the default policy picks.
//
// The cpu backend's run() computes a matmul with one of several kernels, picked by the
// weight type and the number of activation rows M (the default policy). Each of those
// kernels is also a variant of its own, correct at any M >= 1 (tails handled inside) though
// fast only for some, so a scheduler can pick another per call.
//
// Names: <wtype>_matmul__<isa>_<kind><MR>x<NR>, as XNNPACK names its micro-kernels:
//   wtype  the weight type as dtype_name() spells it: f32 f16 bf16 q8_0 q4_0 q5_0 q4_K ...
//   isa    the ISA variant it is compiled for: sse42 avx2 avxvnni avx512 neon neondot neoni8mm (or a matrix-engine
//          name for variants with their own translation unit)
//   kind   dot:  a dot-product row kernel, one weight row against MR activation rows
//          tile: a register tile sharing each decoded weight block and each activation
//                block over MR activation rows x NR weight rows
//          gemm: packed weight panels, outer-product micro-tiles of MR x NR
//          vnni: a tile whose lanes are (weight row, activation row) pairs, each block's
//                integer dot products summed by AVX-512 VNNI with no horizontal reduction
//   MR x NR  activation rows x weight rows (outputs) of the kernel's micro-tile.
// E.g. q4_0_matmul__avx2_tile1x8 (decode: one activation row, 8 weight rows per step),
// q4_0_matmul__avx2_tile4x2 (prompt), f16_matmul__avx512_gemm6x32, q4_K_matmul__avx2_dot4x1.
// bench_matmul_variants --list prints every name this build has.
//
// Row ranges: [min_rows, max_rows] is where the default policy uses the variant (empty,
// {0, 0}, when it never does); run() gives bitwise what the variant whose range holds M
// gives. Bits groups: a variant with bits_group != 0 gives a token's output row bitwise the
// same at any M, and so do all variants of its ISA and weight type in the same group, so a
// scheduler may switch among them between steps without changing results. For quantized
// weights every policy variant is in one group (tests/test_matmul_variants.cpp checks all
// of this), which is what keeps tests/test_batch_consistency.cpp bit-exact.
//
// Adding variants compiled elsewhere (their own flags, a run-time CPU/OS check in
// `available`): list them in the kSources table of matmul_variants.cpp.
//
//   auto cpu = backend_cpu().create(BackendOptions{.n_threads = 2});
//   CpuIsa isa;
//   if (!cpu_backend_isa(**cpu, &isa)) return ...;           // not a cpu backend
//   const MatmulVariant* v[kMaxMatmulVariants];
//   const int n = cpu_matmul_variants(isa, DType::Q4_0, v, kMaxMatmulVariants);
//   for (int i = 0; i < n; ++i)
//     if (v[i]->available()) KESTREL_TRY(cpu_run_matmul_variant(**cpu, call, *v[i]));
#pragma once

#include <cstdint>

#include "ops/backend.h"
#include "ops/cpu/kernel_table.h"

namespace kestrel {

using cpu::MatmulVariant;
using cpu::kRowsUnbounded;

// More than any ISA lists for one weight type (an array of this size never truncates).
constexpr int kMaxMatmulVariants = 64;

// The variants of ISA `isa` (auto_detect: the best this CPU runs) for weight type w, in
// policy order, written to out[0 .. max); returns how many exist (possibly more than max).
// Lists every variant compiled in for that ISA: check available() before running one.
int cpu_matmul_variants(CpuIsa isa, DType w, const MatmulVariant** out, int max);

// The variant the default policy of ISA `isa` picks for weight type w at `rows`
// activation rows: the first available one whose row range holds `rows` (variants of other
// translation units listed ahead of the ISA's own can take a range over where available).
// nullptr: no kernel for w, or rows < 1.
const MatmulVariant* cpu_matmul_policy_variant(CpuIsa isa, DType w, int64_t rows);

// A variant by name over every ISA compiled in, or nullptr.
const MatmulVariant* cpu_matmul_find_variant(const char* name);

// The ISA variant a cpu backend was created with; false for any other backend.
bool cpu_backend_isa(const Backend& b, CpuIsa* isa);

// Runs a matmul call on cpu backend `cpu` (its threads and scratch) with variant v instead
// of the default policy, on n_threads threads (0: as many as the backend runs now; at most
// as many as its pool has). invalid_argument: not a cpu backend, not a matmul, a call that
// validate_op() rejects, or a weight type other than v.wtype; unsupported: v is not
// available on this machine; out_of_memory: scratch allocation failed.
Status cpu_run_matmul_variant(Backend& cpu, const OpCall& call, const MatmulVariant& v, int n_threads = 0);

// Where a cpu backend's run() sends one matmul call: variant (nullptr: the default
// policy's pick) on n_threads threads (0: as many as the backend runs now).
struct MatmulRoute {
  const MatmulVariant* variant = nullptr;
  int n_threads = 0;
};

// A per-call choice of matmul kernel and threads for a cpu backend (a scheduler, in the
// runtime). route() sees each validated matmul call the backend runs; what it returns
// must be available on this machine and take the call's weight type (a variant that does
// not is ignored: the default policy runs). Called from the thread that runs the op.
class MatmulRouter {
 public:
  virtual ~MatmulRouter() = default;
  virtual MatmulRoute route(const OpCall& matmul) = 0;
};

// Makes cpu backend `cpu` ask `router` (not owned; nullptr: none, the default policy) for
// every matmul call. False for any other backend.
bool cpu_set_matmul_router(Backend& cpu, MatmulRouter* router);

}  // namespace kestrel
