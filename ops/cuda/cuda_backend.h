// The "cuda" backend: kestrel's ops on an NVIDIA GPU, behind ops/backend.h.
//
// Built only with KESTREL_CUDA=ON, as the separate archive kestrel::cuda.
// Tensors passed to run() must live in this backend's device buffers
// (alloc_buffer); upload/download move bytes across. Work is queued on the
// backend's own stream: run() returns once queued, synchronize() or a
// download waits for it and reports asynchronous faults as a Status.
//
//   auto gpu = backend_cuda().create(BackendOptions{.device = 0});
//   if (!gpu) return gpu.status();            // unsupported: "no CUDA device"
//   KESTREL_TRY_ASSIGN(auto buf, (*gpu)->alloc_buffer(bytes));
//   KESTREL_TRY((*gpu)->upload(*buf, 0, host, bytes));
#pragma once

#include "ops/backend.h"

namespace kestrel {

const BackendInfo& backend_cuda();

}  // namespace kestrel
