// GEMM for the CPU backend: few rows (decode) through the small-row AVX2 kernel when the CPU has
// it; otherwise OpenBLAS when built with it, else a cache-blocked C++ loop. The OpenMP threads
// split the output columns.
#include <omp.h>

#include <algorithm>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_gemm_small.h"

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

namespace {

// Runs slice(o0, o1) on bands of the `out` output columns, one band per OpenMP thread (one thread
// when the product is too small to pay for waking the others). Bands are rounded to 16 columns so
// each thread's rows of w stay aligned to cache lines.
template <typename Slice>
void for_column_bands(int64_t n, int64_t out, int64_t in, Slice&& slice) {
  const int threads = n * out * in < (1 << 18) ? 1 : omp_get_max_threads();
  if (threads == 1) {
    slice(int64_t{0}, out);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    const int64_t band = ((out + nt - 1) / nt + 15) / 16 * 16;
    const int64_t o0 = std::min(out, t * band);
    const int64_t o1 = std::min(out, o0 + band);
    if (o1 > o0) slice(o0, o1);
  }
}

// Whether n rows over a shared dimension `in` go through the small-row kernel. With OpenBLAS: 2
// to kSmallGemmMaxRows rows over at least kSmallGemmMinInner (one row is sgemv's; a short shared
// dimension, e.g. a LoRA expand, is sgemm's). Without it: up to kSmallGemmMaxRows rows.
bool use_small_gemm(int64_t n, int64_t in) {
#ifdef LORASERVE_HAVE_OPENBLAS
  return n > 1 && n <= kSmallGemmMaxRows && in >= kSmallGemmMinInner && small_gemm_available();
#else
  (void)in;
  return n <= kSmallGemmMaxRows && small_gemm_available();
#endif
}

// Runs the small-row kernel over column bands.
void small_gemm(int64_t n, int64_t out, int64_t in, const float* x, int64_t ldx, const float* w,
                int64_t ldw, float beta, float* y, int64_t ldy) {
  for_column_bands(n, out, in, [&](int64_t o0, int64_t o1) {
    small_gemm_slice(n, o0, o1, in, x, ldx, w, ldw, beta, y, ldy);
  });
}

}  // namespace

#ifdef LORASERVE_HAVE_OPENBLAS

namespace {

// One thread's share: output columns [o0, o1).
void gemm_slice(int64_t n, int64_t o0, int64_t o1, int64_t in, const float* x, int64_t ldx, const float* w,
                int64_t ldw, float beta, float* y, int64_t ldy) {
  const int cols = static_cast<int>(o1 - o0);
  if (cols <= 0) return;
  if (n == 1) {
    // One row is a matrix-vector product: sgemv streams w once, which is all decode at batch 1 is.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, cols, static_cast<int>(in), 1.0f, w + o0 * ldw,
                static_cast<int>(ldw), x, 1, beta, y + o0, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), cols, static_cast<int>(in), 1.0f, x,
              static_cast<int>(ldx), w + o0 * ldw, static_cast<int>(ldw), beta, y + o0, static_cast<int>(ldy));
}

}  // namespace

void gemm(int64_t n, int64_t out, int64_t in, const float* x, int64_t ldx, const float* w,
          int64_t ldw, float beta, float* y, int64_t ldy) {
  if (n == 0 || out == 0) return;
  if (use_small_gemm(n, in)) return small_gemm(n, out, in, x, ldx, w, ldw, beta, y, ldy);
  // OpenBLAS runs single-threaded (set by the backend); the OpenMP threads that run every other
  // op split the output columns between them, so one thread pool serves the whole step.
  for_column_bands(n, out, in, [&](int64_t o0, int64_t o1) {
    gemm_slice(n, o0, o1, in, x, ldx, w, ldw, beta, y, ldy);
  });
}

#else

void gemm(int64_t n, int64_t out, int64_t in, const float* x, int64_t ldx, const float* w,
          int64_t ldw, float beta, float* y, int64_t ldy) {
  if (use_small_gemm(n, in)) return small_gemm(n, out, in, x, ldx, w, ldw, beta, y, ldy);
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
