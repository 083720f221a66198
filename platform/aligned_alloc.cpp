#include "platform/aligned_alloc.h"

#include <cstdlib>

namespace kestrel {

void* aligned_alloc_bytes(size_t bytes, size_t alignment) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  if (posix_memalign(&p, alignment, bytes) != 0) return nullptr;
  return p;
}

void aligned_free(void* p) { std::free(p); }

}  // namespace kestrel
