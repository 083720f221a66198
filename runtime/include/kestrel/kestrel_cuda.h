/* kestrel's CUDA backend for the C API, from the separate kestrel::cuda
 * archive (a build with KESTREL_CUDA=ON; link it with cudart and cuBLAS).
 *
 *   kestrel_context_params cp = kestrel_context_default_params();
 *   cp.device = KESTREL_DEVICE_AUTO;          // the GPU when one is present
 *   cp.gpu_backend = kestrel_backend_cuda();
 *   kestrel_context_create(model, &cp, &ctx);
 */
#ifndef KESTREL_KESTREL_CUDA_H
#define KESTREL_KESTREL_CUDA_H

#include <kestrel/kestrel.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA backend, for kestrel_context_params.gpu_backend. Never NULL; a
 * machine without a GPU is reported when a context asks for it. */
const kestrel_backend* kestrel_backend_cuda(void);

#ifdef __cplusplus
}
#endif

#endif
