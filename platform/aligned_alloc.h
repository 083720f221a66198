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

}  // namespace kestrel
