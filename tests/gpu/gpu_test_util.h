// Shared by the GPU tests: whether a GPU is visible, and the skip every GPU test starts with.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "kernels/backend.h"
#ifdef LORASERVE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace loraserve::testing {

// Why GPU tests cannot run here, or "" when a GPU is visible.
inline std::string no_gpu_reason() {
#ifdef LORASERVE_HAVE_CUDA
  if (kernels::cuda_device_count() > 0) return "";
  return kernels::cuda_unavailable_reason();
#else
  return "this build has no CUDA backend";
#endif
}

}  // namespace loraserve::testing

// Skips the test, visibly ("skipped: no GPU", which ctest reports as a skip), when no GPU is
// visible. A GPU that is visible but fails later fails the test: nothing else skips.
#define LS_SKIP_WITHOUT_GPU()                                                  \
  do {                                                                         \
    const std::string ls_why = ::loraserve::testing::no_gpu_reason();          \
    if (!ls_why.empty()) GTEST_SKIP() << "skipped: no GPU (" << ls_why << ")"; \
  } while (0)
