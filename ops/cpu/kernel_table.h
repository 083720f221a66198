// The CPU backend's per-ISA kernel table.
//
// Each ISA variant (isa_sse42.cpp, isa_avx2.cpp, isa_avxvnni.cpp, isa_avx512.cpp, isa_neon.cpp, ...)
// compiles the same kernel sources (isa_body.inl and the k_*.inl families it
// includes) with its own flags, inside its own namespace, and fills one table.
// The backend picks a table once at creation from the detected CPU features.
// Each ISA variant also lists its named matmul kernels (MatmulVariant; the API to list and
// run them is ops/cpu/matmul_variants.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/backend.h"
#include "ops/op_table.h"
#include "platform/thread_pool.h"

namespace kestrel::cpu {

// What a kernel gets to run with: the context's threads and a scratch area.
class Exec {
 public:
  Exec(ThreadPool* pool, int n_threads) : pool_(pool), n_threads_(n_threads) {}
  ~Exec();
  Exec(const Exec&) = delete;
  Exec& operator=(const Exec&) = delete;

  int n_threads() const { return n_threads_; }
  void set_n_threads(int n) { n_threads_ = n < 1 ? 1 : n; }
  ThreadPool& pool() { return *pool_; }
  // job(ith, nth) on up to n threads (min with n_threads()).
  void parallel(int n, ThreadPool::Job job) { pool_->run(n < n_threads_ ? n : n_threads_, job); }
  // 64-byte aligned scratch of at least `bytes`, grown (never shrunk) on demand.
  // Call from the calling thread before parallel(); nullptr when out of memory.
  void* scratch(size_t bytes);

 private:
  ThreadPool* pool_;
  int n_threads_;
  void* scratch_ = nullptr;
  size_t scratch_size_ = 0;
};

// A kernel for an op that validate_op() accepted. Returns false if, after all,
// it cannot run the call (scratch allocation failed).
using KernelFn = bool (*)(const OpCall& call, Exec& exec);
// Whether the kernel handles this call (types, layouts). nullptr = every valid call.
using SupportsFn = bool (*)(const OpCall& call);

struct KernelEntry {
  KernelFn run = nullptr;
  SupportsFn supports = nullptr;
};

// A named matmul kernel (see ops/cpu/matmul_variants.h for the naming scheme and the
// API). run computes a whole matmul OpCall whose weight type is wtype, at any number of
// activation rows; [min_rows, max_rows] is the range the default policy gives it (empty,
// e.g. {0, 0}, when the policy never picks it); available says whether this CPU and OS
// can run it (checked by the caller, not by run). bits_group: 0 when an output row's bits
// may depend on the number of rows M; otherwise they do not, and the variants of one ISA
// and weight type with the same bits_group give the same bits.
struct MatmulVariant {
  const char* name;
  DType wtype;
  int32_t min_rows, max_rows;
  bool (*available)();
  KernelFn run;
  int32_t bits_group;
};
inline constexpr int32_t kRowsUnbounded = INT32_MAX;

struct MatmulVariantList {
  const MatmulVariant* v = nullptr;
  int n = 0;
};

// A variant name built at compile time: "<wtype>_matmul__<isa>_<kind><MR>x<NR>".
struct VariantName {
  char s[48] = {};
};
constexpr VariantName variant_name(const char* wtype, const char* isa, const char* kind, int mr, int nr) {
  VariantName out;
  int n = 0;
  auto put = [&](const char* p) {
    while (*p && n < 47) out.s[n++] = *p++;
  };
  auto put_int = [&](int v) {
    char d[12];
    int k = 0;
    do d[k++] = static_cast<char>('0' + v % 10); while ((v /= 10) > 0);
    while (k > 0 && n < 47) out.s[n++] = d[--k];
  };
  put(wtype);
  put("_matmul__");
  put(isa);
  put("_");
  put(kind);
  put_int(mr);
  put("x");
  put_int(nr);
  return out;
}

struct KernelTable {
  const char* isa_name = "scalar";
  KernelEntry ops[kOpCount];
  KernelEntry& operator[](OpId op) { return ops[static_cast<int>(op)]; }
  const KernelEntry& operator[](OpId op) const { return ops[static_cast<int>(op)]; }
};

// Whether the CPU (and OS) can run the kernels of an ISA variant.
bool isa_runs_here(CpuIsa isa);

void fill_kernels_sse42(KernelTable& table);
void fill_kernels_avx2(KernelTable& table);
void fill_kernels_avxvnni(KernelTable& table);
void fill_kernels_avx512(KernelTable& table);
void fill_kernels_neon(KernelTable& table);
void fill_kernels_neondot(KernelTable& table);
void fill_kernels_neoni8mm(KernelTable& table);

// Each ISA variant's own matmul variants (defined by k_matmul_variants.inl in its
// translation unit; only those compiled in exist, see KESTREL_ISA_*).
MatmulVariantList matmul_variants_sse42();
MatmulVariantList matmul_variants_avx2();
MatmulVariantList matmul_variants_avxvnni();
MatmulVariantList matmul_variants_avx512();
MatmulVariantList matmul_variants_neon();
MatmulVariantList matmul_variants_neondot();
MatmulVariantList matmul_variants_neoni8mm();

}  // namespace kestrel::cpu
