#include "ops/host_buffer.h"

#include <cstring>
#include <new>

#include "platform/aligned_alloc.h"

namespace kestrel {

HostBuffer::~HostBuffer() { aligned_free(p_); }

Expected<std::unique_ptr<Buffer>> alloc_host_buffer(size_t bytes) {
  void* p = aligned_alloc_bytes(bytes, 64);
  if (!p && bytes) return Status::out_of_memory("host buffer of %zu bytes", bytes);
  std::unique_ptr<Buffer> b(new (std::nothrow) HostBuffer(p, bytes));
  if (!b) {
    aligned_free(p);
    return Status::out_of_memory("host buffer object");
  }
  return b;
}

Status HostBackend::upload(Buffer& dst, size_t offset, const void* src, size_t bytes) {
  if (offset > dst.size() || bytes > dst.size() - offset)
    return Status::invalid_argument("upload of %zu bytes at %zu past a %zu-byte buffer", bytes, offset,
                                    dst.size());
  if (bytes) std::memcpy(static_cast<char*>(dst.data()) + offset, src, bytes);
  return {};
}

Status HostBackend::download(void* dst, Buffer& src, size_t offset, size_t bytes) {
  if (offset > src.size() || bytes > src.size() - offset)
    return Status::invalid_argument("download of %zu bytes at %zu past a %zu-byte buffer", bytes, offset,
                                    src.size());
  if (bytes) std::memcpy(dst, static_cast<char*>(src.data()) + offset, bytes);
  return {};
}

}  // namespace kestrel
