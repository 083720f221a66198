// Aligned host allocation that reports failure instead of throwing.
//
//   float* p = static_cast<float*>(aligned_alloc_bytes(n * 4, 64));
//   if (!p) return Status::out_of_memory(...);
//   aligned_free(p);
#pragma once

#include <cstddef>
#include <memory>

namespace kestrel {

// nullptr on failure or when bytes == 0. alignment: a power of two >= sizeof(void*).
void* aligned_alloc_bytes(size_t bytes, size_t alignment = 64);
void aligned_free(void* p);

struct AlignedDeleter {
  void operator()(void* p) const { aligned_free(p); }
};
template <typename T>
using AlignedPtr = std::unique_ptr<T, AlignedDeleter>;

// Fault injection for the out-of-memory tests (tests/test_oom.cpp): while a
// hook is installed, aligned_alloc_bytes asks it before each allocation and
// returns nullptr when it answers true, as if the system had refused. One
// process-wide pointer (an atomic: one relaxed load per allocation when unset);
// nullptr removes it. Not meant for production use.
using AllocFaultHook = bool (*)(size_t bytes);
void set_alloc_fault_hook(AllocFaultHook hook);

}  // namespace kestrel
