// CudaStream: an owned, non-blocking CUDA stream (RAII).
//
// Every kernel, copy and cuBLAS call of one CUDA backend instance goes on its
// stream, so instances never serialize against each other or the legacy
// default stream.
//
//   KESTREL_TRY_ASSIGN(CudaStream s, CudaStream::create());
//   kernel<<<grid, block, 0, s.get()>>>(...);
//   KESTREL_TRY(s.synchronize());
#pragma once

#include <cuda_runtime_api.h>

#include "platform/status.h"

namespace kestrel {

class CudaStream {
 public:
  CudaStream() = default;
  ~CudaStream();
  CudaStream(CudaStream&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  CudaStream& operator=(CudaStream&& o) noexcept;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  // A new stream on the current device.
  static Expected<CudaStream> create();
  cudaStream_t get() const { return s_; }
  // Forgets the stream without destroying it (for teardown after the CUDA
  // runtime has unloaded, when destroying it is no longer allowed).
  void release() { s_ = nullptr; }
  // Waits for all work queued so far; reports any asynchronous kernel error.
  Status synchronize() const;

 private:
  cudaStream_t s_ = nullptr;
};

}  // namespace kestrel
