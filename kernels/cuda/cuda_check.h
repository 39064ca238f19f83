// CUDA runtime, cuBLAS and launcher errors as Status values naming the failed call (host side
// of the CUDA backend only: fmt is not used in .cu files).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string_view>

#include "common/status.h"
#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {

// OK for cudaSuccess; RESOURCE_EXHAUSTED for out-of-memory; INTERNAL otherwise. The error is
// reported here, so the runtime's last-error slot is cleared (a sticky error stays): a later
// call must not report it again as its own.
inline Status cuda_error(cudaError_t e, std::string_view what) {
  if (e == cudaSuccess) return ok_status();
  (void)cudaGetLastError();
  if (e == cudaErrorMemoryAllocation)
    return resource_exhausted_error("cuda: {}: {}", what, cudaGetErrorString(e));
  return internal_error("cuda: {}: {} ({})", what, cudaGetErrorName(e), cudaGetErrorString(e));
}

inline Status cublas_error(cublasStatus_t s, std::string_view what) {
  if (s == CUBLAS_STATUS_SUCCESS) return ok_status();
  if (s == CUBLAS_STATUS_ALLOC_FAILED) {
    return resource_exhausted_error("cublasLt: {}: {}", what, cublasLtGetStatusString(s));
  }
  return internal_error("cublasLt: {}: {} ({})", what, cublasLtGetStatusName(s),
                        cublasLtGetStatusString(s));
}

inline Status launch_error(const Launch& l, std::string_view op) {
  if (l.refused != nullptr) return internal_error("cuda backend: {}: refused: {}", op, l.refused);
  return cuda_error(l.error, op);
}

}  // namespace loraserve::kernels::cuda

// Returns from the enclosing function with a Status when the CUDA runtime call fails.
#define LS_CUDA_CHECK(call) \
  LS_RETURN_IF_ERROR(::loraserve::kernels::cuda::cuda_error((call), #call))
#define LS_CUBLAS_CHECK(call) \
  LS_RETURN_IF_ERROR(::loraserve::kernels::cuda::cublas_error((call), #call))
