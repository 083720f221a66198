#include "platform/aligned_alloc.h"

#include <atomic>
#include <cstdlib>

namespace kestrel {

namespace {
std::atomic<AllocFaultHook> g_fault_hook{nullptr};
}  // namespace

void* aligned_alloc_bytes(size_t bytes, size_t alignment) {
  if (bytes == 0) return nullptr;
  const AllocFaultHook hook = g_fault_hook.load(std::memory_order_relaxed);
  if (hook && hook(bytes)) return nullptr;
  void* p = nullptr;
  if (posix_memalign(&p, alignment, bytes) != 0) return nullptr;
  return p;
}

void aligned_free(void* p) { std::free(p); }

void set_alloc_fault_hook(AllocFaultHook hook) { g_fault_hook.store(hook, std::memory_order_relaxed); }

}  // namespace kestrel
