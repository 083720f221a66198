#include "platform/cuda/cuda_stream.h"

#include "platform/cuda/cuda_status.h"

namespace kestrel {

CudaStream::~CudaStream() {
  if (s_) (void)cudaStreamDestroy(s_);
}

CudaStream& CudaStream::operator=(CudaStream&& o) noexcept {
  if (this != &o) {
    if (s_) (void)cudaStreamDestroy(s_);
    s_ = o.s_;
    o.s_ = nullptr;
  }
  return *this;
}

Expected<CudaStream> CudaStream::create() {
  CudaStream s;
  KESTREL_TRY(cuda_check(cudaStreamCreateWithFlags(&s.s_, cudaStreamNonBlocking), "cudaStreamCreate"));
  return s;
}

Status CudaStream::synchronize() const { return cuda_check(cudaStreamSynchronize(s_), "cudaStreamSynchronize"); }

}  // namespace kestrel
