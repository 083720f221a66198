// kestrel_backend_cuda() (<kestrel/kestrel_cuda.h>): the C handle of the CUDA
// backend is its BackendInfo, which the runtime's kestrel_context_create()
// turns back into ContextParams::gpu.
#include <kestrel/kestrel_cuda.h>

#include "ops/cuda/cuda_backend.h"

extern "C" const kestrel_backend* kestrel_backend_cuda(void) {
  return reinterpret_cast<const kestrel_backend*>(&kestrel::backend_cuda());
}
