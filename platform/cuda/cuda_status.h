// CUDA and cuBLAS error codes as kestrel Statuses.
//
// The CUDA backend never aborts on a CUDA error: every runtime and cuBLAS call
// goes through one of these, and a failure travels up as a Status naming the
// call. Allocation failures map to out_of_memory; every other code maps to
// runtime_error (a missing device or driver to unsupported).
//
//   KESTREL_TRY(cuda_check(cudaMemcpyAsync(...), "upload"));
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "platform/status.h"

namespace kestrel {

// ok when err == cudaSuccess; else "what: cudaErrorX (description)".
Status cuda_check(cudaError_t err, const char* what);
// ok when st == CUBLAS_STATUS_SUCCESS; else "what: CUBLAS_STATUS_X".
Status cublas_check(cublasStatus_t st, const char* what);
// The status code a CUDA error maps to (exposed for tests).
StatusCode cuda_error_code(cudaError_t err);
StatusCode cublas_error_code(cublasStatus_t st);

// Reads and clears the last launch error of this thread (cudaGetLastError).
inline Status cuda_check_launch(const char* what) { return cuda_check(cudaGetLastError(), what); }

}  // namespace kestrel
