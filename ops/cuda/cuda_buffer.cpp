#include "ops/cuda/cuda_buffer.h"

#include <new>

#include "platform/cuda/cuda_status.h"

namespace kestrel {

CudaBuffer::~CudaBuffer() {
  if (p_) (void)cudaFree(p_);
}

Expected<std::unique_ptr<Buffer>> alloc_cuda_buffer(size_t bytes, int device) {
  void* p = nullptr;
  if (bytes) {
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // an allocation failure is not sticky; clear it
      Status s = cuda_check(err, "cudaMalloc");
      return Status(s.code(), "device buffer of " + std::to_string(bytes) + " bytes: " + s.message());
    }
  }
  std::unique_ptr<Buffer> b(new (std::nothrow) CudaBuffer(p, bytes, device));
  if (!b) {
    if (p) (void)cudaFree(p);
    return Status::out_of_memory("device buffer object");
  }
  return b;
}

namespace {
Status check_range(Buffer& b, size_t offset, size_t bytes, const char* what) {
  if (b.is_host() || !dynamic_cast<CudaBuffer*>(&b))
    return Status::invalid_argument("%s: not a CUDA device buffer", what);
  if (offset > b.size() || bytes > b.size() - offset)
    return Status::invalid_argument("%s of %zu bytes at %zu past a %zu-byte buffer", what, bytes, offset, b.size());
  return {};
}
}  // namespace

Status cuda_buffer_upload(Buffer& dst, size_t offset, const void* src, size_t bytes, cudaStream_t stream) {
  KESTREL_TRY(check_range(dst, offset, bytes, "upload"));
  if (!bytes) return {};
  if (!src) return Status::invalid_argument("upload: null source");
  KESTREL_TRY(cuda_check(cudaMemcpyAsync(static_cast<char*>(dst.data()) + offset, src, bytes,
                                         cudaMemcpyHostToDevice, stream),
                         "upload"));
  return cuda_check(cudaStreamSynchronize(stream), "upload");
}

Status cuda_buffer_download(void* dst, Buffer& src, size_t offset, size_t bytes, cudaStream_t stream) {
  KESTREL_TRY(check_range(src, offset, bytes, "download"));
  if (!bytes) return {};
  if (!dst) return Status::invalid_argument("download: null destination");
  KESTREL_TRY(cuda_check(cudaMemcpyAsync(dst, static_cast<const char*>(src.data()) + offset, bytes,
                                         cudaMemcpyDeviceToHost, stream),
                         "download"));
  return cuda_check(cudaStreamSynchronize(stream), "download");
}

}  // namespace kestrel
