// The CPU backend's per-ISA kernel table.
//
// Each ISA variant (isa_sse42.cpp, isa_avx2.cpp, isa_avx512.cpp, isa_neon.cpp)
// compiles the same kernel sources (isa_body.inl and the k_*.inl families it
// includes) with its own flags, inside its own namespace, and fills one table.
// The backend picks a table once at creation from the detected CPU features.
#pragma once

#include <cstddef>

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

struct KernelTable {
  const char* isa_name = "scalar";
  KernelEntry ops[kOpCount];
  KernelEntry& operator[](OpId op) { return ops[static_cast<int>(op)]; }
  const KernelEntry& operator[](OpId op) const { return ops[static_cast<int>(op)]; }
};

void fill_kernels_sse42(KernelTable& table);
void fill_kernels_avx2(KernelTable& table);
void fill_kernels_avx512(KernelTable& table);
void fill_kernels_neon(KernelTable& table);

}  // namespace kestrel::cpu
