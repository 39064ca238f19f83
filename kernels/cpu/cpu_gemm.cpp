// GEMM for the CPU backend: OpenBLAS when built with it, else a cache-blocked C++ loop.
#include <omp.h>

#include <algorithm>

#include "kernels/cpu/cpu_backend.h"

#ifdef LORASERVE_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace loraserve::kernels::cpu {

bool gemm_uses_blas() {
#ifdef LORASERVE_HAVE_OPENBLAS
  return true;
#else
  return false;
#endif
}

#ifdef LORASERVE_HAVE_OPENBLAS

void gemm(int64_t n, int64_t out, int64_t in, const float* x, int64_t ldx, const float* w,
          int64_t ldw, float beta, float* y, int64_t ldy) {
  if (n == 0 || out == 0) return;
  if (n == 1) {
    // One row is a matrix-vector product: sgemv streams w once, which is all decode at batch 1 is.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(out), static_cast<int>(in), 1.0f, w,
                static_cast<int>(ldw), x, 1, beta, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(out),
              static_cast<int>(in), 1.0f, x, static_cast<int>(ldx), w, static_cast<int>(ldw), beta,
              y, static_cast<int>(ldy));
}

#else

void gemm(int64_t n, int64_t out, int64_t in, const float* x, int64_t ldx, const float* w,
          int64_t ldw, float beta, float* y, int64_t ldy) {
  // Each thread owns a band of output columns (rows of w) and reads each of them once per block
  // of 4 input rows.
  constexpr int64_t kRowBlock = 4;
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < out; ++o) {
    const float* wr = w + o * ldw;
    for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
      const int64_t r1 = std::min(n, r0 + kRowBlock);
      float acc[kRowBlock] = {0, 0, 0, 0};
      for (int64_t k = 0; k < in; ++k) {
        const float wk = wr[k];
        for (int64_t r = r0; r < r1; ++r) acc[r - r0] += x[r * ldx + k] * wk;
      }
      for (int64_t r = r0; r < r1; ++r) {
        float* yr = y + r * ldy + o;
        *yr = acc[r - r0] + (beta == 0.0f ? 0.0f : beta * *yr);
      }
    }
  }
}

#endif

}  // namespace loraserve::kernels::cpu
