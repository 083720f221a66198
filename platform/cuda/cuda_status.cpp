#include "platform/cuda/cuda_status.h"

namespace kestrel {

StatusCode cuda_error_code(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return StatusCode::ok;
    case cudaErrorMemoryAllocation: return StatusCode::out_of_memory;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice: return StatusCode::unsupported;
    case cudaErrorInvalidValue: return StatusCode::invalid_argument;
    default: return StatusCode::runtime_error;
  }
}

Status cuda_check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return {};
  const StatusCode code = cuda_error_code(err);
  const char* name = cudaGetErrorName(err);
  const char* desc = cudaGetErrorString(err);
  std::string msg = std::string(what) + ": " + (name ? name : "cudaError?") + " (" + (desc ? desc : "") + ")";
  return Status(code, std::move(msg));
}

StatusCode cublas_error_code(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_SUCCESS: return StatusCode::ok;
    case CUBLAS_STATUS_ALLOC_FAILED: return StatusCode::out_of_memory;
    case CUBLAS_STATUS_INVALID_VALUE: return StatusCode::invalid_argument;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH: return StatusCode::unsupported;
    default: return StatusCode::runtime_error;
  }
}

namespace {
const char* cublas_status_name(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
}  // namespace

Status cublas_check(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return {};
  return Status(cublas_error_code(st), std::string(what) + ": " + cublas_status_name(st));
}

}  // namespace kestrel
