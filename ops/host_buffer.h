// Host memory buffers and the host half of the Backend interface, shared by
// the ref and cpu backends.
#pragma once

#include "ops/backend.h"

namespace kestrel {

class HostBuffer final : public Buffer {
 public:
  HostBuffer(void* p, size_t n) : p_(p), n_(n) {}
  ~HostBuffer() override;
  void* data() override { return p_; }
  size_t size() const override { return n_; }
  bool is_host() const override { return true; }

 private:
  void* p_;
  size_t n_;
};

// 64-byte aligned host allocation as a Buffer; out_of_memory on failure.
Expected<std::unique_ptr<Buffer>> alloc_host_buffer(size_t bytes);

class HostBackend : public Backend {
 public:
  bool is_host() const override { return true; }
  Expected<std::unique_ptr<Buffer>> alloc_buffer(size_t bytes) override { return alloc_host_buffer(bytes); }
  Status upload(Buffer& dst, size_t offset, const void* src, size_t bytes) override;
  Status download(void* dst, Buffer& src, size_t offset, size_t bytes) override;
};

}  // namespace kestrel
