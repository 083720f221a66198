// CudaBuffer: plain device memory (cudaMalloc, never managed memory) as a
// kestrel Buffer, plus checked host <-> device copies.
//
//   KESTREL_TRY_ASSIGN(auto buf, alloc_cuda_buffer(bytes, device));
//   KESTREL_TRY(cuda_buffer_upload(*buf, 0, host, bytes, stream));
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "ops/backend.h"

namespace kestrel {

class CudaBuffer final : public Buffer {
 public:
  CudaBuffer(void* p, size_t n, int device) : p_(p), n_(n), device_(device) {}
  ~CudaBuffer() override;
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  void* data() override { return p_; }
  size_t size() const override { return n_; }
  bool is_host() const override { return false; }
  int device() const { return device_; }

 private:
  void* p_;
  size_t n_;
  int device_;
};

// `bytes` of device memory on `device` (current device must be `device`).
// A 0-byte buffer has a null data pointer. out_of_memory when the device is full.
Expected<std::unique_ptr<Buffer>> alloc_cuda_buffer(size_t bytes, int device);

// Bounds-checked copies; `dst`/`src` must be CudaBuffers. They return when the
// copy is complete (the host memory may be reused at once).
Status cuda_buffer_upload(Buffer& dst, size_t offset, const void* src, size_t bytes, cudaStream_t stream);
Status cuda_buffer_download(void* dst, Buffer& src, size_t offset, size_t bytes, cudaStream_t stream);

}  // namespace kestrel
