// Which kernel runs a matmul, and the glue around each: the input preparation of the small-row
// kernels, the OpenMP column bands, the 32-row chunks, the bands of BF16/I8 weights widened for a
// library, and the f32 → bf16 rounding of x for oneDNN.
//
// The choice (choose_matmul_path), from bench/kernel_bench on an AMD EPYC (Zen 5, AVX-512 with
// AVX512_BF16, 2 threads; docs/benchmarks.md has the figures):
//   * up to kSmallRowsMax rows (decode): the own small-row kernels, which read the weights once
//     per step at the memory's speed; F32 over a shared dimension below kRowsMinInner (a LoRA
//     expand over rank r) goes to OpenBLAS, which does not pay a horizontal sum per output.
//     Except BF16 weights from kBf16ProductMinRows rows on, where the product, not the read,
//     bounds the step: oneDNN's bf16 product where the CPU multiplies bf16 natively (32 rows of
//     8b-layers: 53 ms against 98 ms for the own kernel, which widens the weights to f32 and
//     multiplies in f32).
//     BF16 weights below kBf16ProductMinRows rows, on CPUs with AVX512_BF16: VDPBF16PS, one
//     instruction per 32 weights and input row where widening takes four (1 row of 8b-layers:
//     12.0 ms against 13.6; 8 rows: 21.8 against 29.0).
//     Every bf16 product rounds x to bf16 (as a bf16 model computes in PyTorch, which also
//     rounds every output and the residual stream; here those stay f32): one rounding of each
//     input, the same at every batch size (docs/benchmarks.md measures what it costs).
//   * I8 weights, 1 to kI8VnniMaxRows rows, on CPUs with AVX512_VNNI: the integer kernel (x in
//     int16 groups, VPDPWSSD), which does per 64 weights and input row half the work of the
//     widening kernel, reads one row's weights as one stream per thread, and beats oneDNN's
//     widened bf16 product up to 128 rows.
//   * more rows (prefill, large batches): oneDNN where it runs bf16 natively (BF16 and I8
//     weights: it is several times faster than any f32 product here), else OpenBLAS (F32; BF16
//     and I8 widened in bands), else the own kernels over 32-row chunks.
#include "kernels/cpu/cpu_matmul.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_onednn.h"
#include "kernels/cpu/cpu_rows.h"

#ifdef LORASERVE_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace loraserve::kernels::cpu {
namespace {

// Below this shared dimension OpenBLAS beats the small-row kernels for F32 (measured: a LoRA
// expand over rank 16 is 2-5× faster in sgemm, whose inner loop runs along the outputs).
constexpr int64_t kRowsMinInner = 256;
// Rows of x rounded to bf16 at a time for oneDNN (bounds the scratch at 512 × in bf16).
constexpr int64_t kOneDnnRowChunk = 512;
// Weight rows widened at a time for a library: to f32 per thread for OpenBLAS (at least 64 rows,
// more while they hold under kBlasWidenElems values: a LoRA B over rank r is widened in a few
// bands, not one sgemm call per 64 outputs; for one input row, kBlasWidenElemsGemv, 8 KiB that
// stay in L1 while sgemv reads them: a 14336 × 16 B took 44 µs so, as fast as sgemv over the F32
// B, and 66 µs in 128 KiB bands), to bf16 for oneDNN.
constexpr int64_t kBlasWidenRows = 64;
constexpr int64_t kBlasWidenElems = 32 * 1024;
constexpr int64_t kBlasWidenElemsGemv = 2048;
constexpr int64_t kOneDnnWidenRows = 512;

bool have_blas() {
#ifdef LORASERVE_HAVE_OPENBLAS
  return true;
#else
  return false;
#endif
}

// Runs slice(o0, o1) on bands of the `out` output columns across the OpenMP threads (one thread
// when the product is too small to pay for waking the others). Each thread owns kBandsPerThread
// consecutive bands and runs them in order (its columns are the same every step, so weights
// that fit in its caches stay there, and its rows of w are one sequential stream); a thread done
// with its own takes the next untaken band of the others, so a thread that the host slows (a
// busy neighbour, another process on its core) does not hold up the step. Each output column is
// still computed whole by one thread, so results do not depend on the split. Bands are rounded
// to 16 columns so each band's rows of w stay aligned to cache lines.
constexpr int64_t kBandsPerThread = 4;
template <typename Slice>
void for_column_bands(int64_t n, int64_t out, int64_t in, Slice&& slice) {
  const int threads = n * out * in < (1 << 18) ? 1 : omp_get_max_threads();
  if (threads == 1) {
    slice(int64_t{0}, out);
    return;
  }
  struct alignas(64) Next {  // a thread's next band of its own; a cache line each
    std::atomic<int64_t> band{0};
  };
  std::vector<Next> next(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    const int64_t nt = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    const int64_t band = ((out + nt * kBandsPerThread - 1) / (nt * kBandsPerThread) + 15) / 16 * 16;
    for (int64_t i = 0; i < nt; ++i) {
      const int64_t owner = (t + i) % nt;
      std::atomic<int64_t>& counter = next[static_cast<size_t>(owner)].band;
      for (int64_t j = counter.fetch_add(1, std::memory_order_relaxed); j < kBandsPerThread;
           j = counter.fetch_add(1, std::memory_order_relaxed)) {
        const int64_t o0 = (owner * kBandsPerThread + j) * band;
        if (o0 >= out) break;
        slice(o0, std::min(out, o0 + band));
      }
    }
  }
}

#ifdef LORASERVE_HAVE_OPENBLAS  // only the OpenBLAS path widens whole bands
// Widens rows [o0, o1) of w into out ((o1 - o0) × w.cols, contiguous) as f32.
void widen_f32(const Tensor& w, int64_t o0, int64_t o1, float* out) {
  // Contiguous BF16 rows as one loop over the band: a LoRA B's rows are a few values each.
  if (w.dtype == DType::kBF16 && w.stride == w.cols) {
    const auto* src = static_cast<const uint16_t*>(w.data) + o0 * w.cols;
    const int64_t count = (o1 - o0) * w.cols;
    for (int64_t k = 0; k < count; ++k) out[k] = bf16_to_f32(src[k]);
    return;
  }
  for (int64_t o = o0; o < o1; ++o) {
    float* dst = out + (o - o0) * w.cols;
    if (w.dtype == DType::kBF16) {
      const auto* src = static_cast<const uint16_t*>(w.data) + o * w.stride;
      for (int64_t k = 0; k < w.cols; ++k) dst[k] = bf16_to_f32(src[k]);
    } else {
      const auto* src = static_cast<const int8_t*>(w.data) + o * w.stride;
      const float* s = w.scales + o * w.scale_stride();
      for (int64_t k = 0; k < w.cols; ++k)
        dst[k] = static_cast<float>(src[k]) * s[k / kI8GroupSize];
    }
  }
}
#endif  // LORASERVE_HAVE_OPENBLAS

struct RowsKernelChoice {
  RowsKernel kernel;
  RowsInput input;
};

RowsKernelChoice rows_kernel(MatmulPath path, DType dtype) {
  switch (path) {
    case MatmulPath::kRowsAvx2:
      if (dtype == DType::kF32) return {rows_f32_avx2, RowsInput::kF32};
      if (dtype == DType::kBF16) return {rows_bf16_avx2, RowsInput::kF32Pairs};
      return {rows_i8_avx2, RowsInput::kF32};
    case MatmulPath::kRowsAvx512:
      if (dtype == DType::kF32) return {rows_f32_avx512, RowsInput::kF32};
      if (dtype == DType::kBF16) return {rows_bf16_avx512, RowsInput::kF32Pairs};
      return {rows_i8_avx512, RowsInput::kF32};
    case MatmulPath::kRowsBf16Dot:
      return {rows_bf16_dot_avx512, RowsInput::kBF16};
    case MatmulPath::kRowsI8Vnni:
      return {rows_i8_vnni_avx512, RowsInput::kI16Groups};
    default:
      if (dtype == DType::kF32) return {rows_f32_portable, RowsInput::kF32};
      if (dtype == DType::kBF16) return {rows_bf16_portable, RowsInput::kF32};
      return {rows_i8_portable, RowsInput::kF32};
  }
}

// The own kernels over chunks of up to kSmallRowsMax rows.
void run_rows(MatmulPath path, int64_t n, const float* x, int64_t ldx, const Tensor& w, float beta,
              float* y, int64_t ldy) {
  const RowsKernelChoice choice = rows_kernel(path, w.dtype);
  thread_local std::vector<char> prepared;
  for (int64_t r0 = 0; r0 < n; r0 += kSmallRowsMax) {
    const int64_t rows = std::min(kSmallRowsMax, n - r0);
    RowsArgs a;
    a.n = rows;
    a.in = w.cols;
    a.x = x + r0 * ldx;
    a.ldx = ldx;
    if (choice.input != RowsInput::kF32) {
      prepared.resize(static_cast<size_t>(prepared_rows_bytes(choice.input, rows, w.cols)));
      prepare_rows(choice.input, rows, w.cols, x + r0 * ldx, ldx, prepared.data());
      a.x = prepared.data();
      a.ldx = w.cols;
      if (choice.input == RowsInput::kI16Groups) {
        a.ldx = i16_row_elems(w.cols);
        a.x_scales =
            reinterpret_cast<const float*>(prepared.data() + i16_scales_offset(rows, w.cols));
        a.ldxs = i16_row_groups(w.cols);
      }
    }
    a.w = w.data;
    a.ldw = w.stride;
    a.scales = w.scales;
    a.lds = w.scale_stride();
    a.beta = beta;
    a.y = y + r0 * ldy;
    a.ldy = ldy;
    for_column_bands(rows, w.rows, w.cols,
                     [&](int64_t o0, int64_t o1) { choice.kernel(a, o0, o1); });
  }
}

#ifdef LORASERVE_HAVE_OPENBLAS
void run_blas(int64_t n, const float* x, int64_t ldx, const Tensor& w, float beta, float* y,
              int64_t ldy) {
  const int in = static_cast<int>(w.cols);
  // OpenBLAS runs single-threaded (set by the backend); the OpenMP threads that run every other
  // op split the output columns between them, so one thread pool serves the whole step.
  for_column_bands(n, w.rows, w.cols, [&](int64_t o0, int64_t o1) {
    if (w.dtype == DType::kF32) {
      const float* wf = static_cast<const float*>(w.data) + o0 * w.stride;
      const int cols = static_cast<int>(o1 - o0), ldw = static_cast<int>(w.stride);
      if (n == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, cols, in, 1.0f, wf, ldw, x, 1, beta, y + o0, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), cols, in, 1.0f, x,
                    static_cast<int>(ldx), wf, ldw, beta, y + o0, static_cast<int>(ldy));
      }
      return;
    }
    const int64_t band =
        std::max(kBlasWidenRows, (n == 1 ? kBlasWidenElemsGemv : kBlasWidenElems) / w.cols);
    thread_local std::vector<float> wide;
    wide.resize(static_cast<size_t>(std::min(band, o1 - o0) * w.cols));
    for (int64_t b0 = o0; b0 < o1; b0 += band) {
      const int64_t b1 = std::min(o1, b0 + band);
      widen_f32(w, b0, b1, wide.data());
      if (n == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(b1 - b0), in, 1.0f, wide.data(),
                    in, x, 1, beta, y + b0, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                    static_cast<int>(b1 - b0), in, 1.0f, x, static_cast<int>(ldx), wide.data(), in,
                    beta, y + b0, static_cast<int>(ldy));
      }
    }
  });
}
#endif

Status run_onednn(int64_t n, const float* x, int64_t ldx, const Tensor& w, float beta, float* y,
                  int64_t ldy) {
  const int64_t out = w.rows, in = w.cols;
  if (w.dtype == DType::kF32) {
    return onednn::matmul_f32(n, out, in, x, ldx, static_cast<const float*>(w.data), w.stride, beta,
                              y, ldy);
  }
  thread_local std::vector<uint16_t> xb, wb;
  for (int64_t r0 = 0; r0 < n; r0 += kOneDnnRowChunk) {
    const int64_t rows = std::min(kOneDnnRowChunk, n - r0);
    xb.resize(static_cast<size_t>(rows * in));
    uint16_t* const xbp = xb.data();  // the buffers are this thread's: pass their addresses
#pragma omp parallel for schedule(static) if (rows * in >= (1 << 16))
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = x + (r0 + r) * ldx;
      uint16_t* dst = xbp + r * in;
      for (int64_t k = 0; k < in; ++k) dst[k] = f32_to_bf16(src[k]);
    }
    if (w.dtype == DType::kBF16) {
      LS_RETURN_IF_ERROR(onednn::matmul_bf16(rows, out, in, xbp,
                                             static_cast<const uint16_t*>(w.data), w.stride, beta,
                                             y + r0 * ldy, ldy));
      continue;
    }
    wb.resize(static_cast<size_t>(std::min(out, kOneDnnWidenRows) * in));
    uint16_t* const wbp = wb.data();
    for (int64_t b0 = 0; b0 < out; b0 += kOneDnnWidenRows) {
      const int64_t b1 = std::min(out, b0 + kOneDnnWidenRows);
#pragma omp parallel for schedule(static)
      for (int64_t o = b0; o < b1; ++o) {
        const auto* src = static_cast<const int8_t*>(w.data) + o * w.stride;
        const float* s = w.scales + o * w.scale_stride();
        uint16_t* dst = wbp + (o - b0) * in;
        for (int64_t k = 0; k < in; ++k)
          dst[k] = f32_to_bf16(static_cast<float>(src[k]) * s[k / kI8GroupSize]);
      }
      LS_RETURN_IF_ERROR(
          onednn::matmul_bf16(rows, b1 - b0, in, xbp, wbp, in, beta, y + r0 * ldy + b0, ldy));
    }
  }
  return ok_status();
}

// The own kernels of the best instruction set in use.
MatmulPath rows_path() {
  const KernelLevel level = kernel_level();
  return level >= KernelLevel::kAvx512 ? MatmulPath::kRowsAvx512
         : level >= KernelLevel::kAvx2 ? MatmulPath::kRowsAvx2
                                       : MatmulPath::kRowsPortable;
}

}  // namespace

std::string_view matmul_path_name(MatmulPath path) {
  switch (path) {
    case MatmulPath::kRowsPortable:
      return "rows-portable";
    case MatmulPath::kRowsAvx2:
      return "rows-avx2";
    case MatmulPath::kRowsAvx512:
      return "rows-avx512";
    case MatmulPath::kRowsBf16Dot:
      return "rows-avx512bf16-dot";
    case MatmulPath::kRowsI8Vnni:
      return "rows-avx512vnni-i8";
    case MatmulPath::kBlas:
      return "openblas";
    case MatmulPath::kOneDnn:
      return "onednn";
  }
  return "?";
}

bool matmul_path_available(MatmulPath path, DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kI8) return false;
  const KernelLevel level = kernel_level();
  switch (path) {
    case MatmulPath::kRowsPortable:
      return true;
    case MatmulPath::kRowsAvx2:
      return level >= KernelLevel::kAvx2;
    case MatmulPath::kRowsAvx512:
      return level >= KernelLevel::kAvx512;
    case MatmulPath::kRowsBf16Dot:
      return dtype == DType::kBF16 && level >= KernelLevel::kAvx512Bf16;
    case MatmulPath::kRowsI8Vnni:
      return dtype == DType::kI8 && level >= KernelLevel::kAvx512 && cpu_features().avx512_vnni;
    case MatmulPath::kBlas:
      return have_blas();
    case MatmulPath::kOneDnn:
      // BF16 products where oneDNN would emulate them are slower than the own kernels.
      return onednn::available() && (dtype == DType::kF32 || onednn::native_bf16());
  }
  return false;
}

MatmulPath choose_matmul_path(int64_t n, int64_t in, DType dtype) {
  const KernelLevel level = kernel_level();
  const MatmulPath rows = rows_path();
  if (dtype == DType::kBF16 && n >= kBf16ProductMinRows &&
      matmul_path_available(MatmulPath::kOneDnn, dtype)) {
    return MatmulPath::kOneDnn;
  }
  if (dtype == DType::kBF16 && n < kBf16ProductMinRows &&
      matmul_path_available(MatmulPath::kRowsBf16Dot, dtype)) {
    return MatmulPath::kRowsBf16Dot;
  }
  if (dtype == DType::kI8 && n <= kI8VnniMaxRows &&
      matmul_path_available(MatmulPath::kRowsI8Vnni, dtype)) {
    return MatmulPath::kRowsI8Vnni;
  }
  if (n <= kSmallRowsMax) {
    if (dtype == DType::kF32 && have_blas()) {
      // One row without AVX-512, or a short shared dimension: sgemv / sgemm.
      if (in < kRowsMinInner || (n == 1 && level < KernelLevel::kAvx512)) return MatmulPath::kBlas;
    }
    return rows;
  }
  if (dtype != DType::kF32 && matmul_path_available(MatmulPath::kOneDnn, dtype))
    return MatmulPath::kOneDnn;
  if (have_blas()) return MatmulPath::kBlas;
  return rows;
}

Status matmul(int64_t n, const float* x, int64_t ldx, const Tensor& w, float beta, float* y,
              int64_t ldy) {
  return matmul_via(choose_matmul_path(n, w.cols, w.dtype), n, x, ldx, w, beta, y, ldy);
}

Status matmul_via(MatmulPath path, int64_t n, const float* x, int64_t ldx, const Tensor& w,
                  float beta, float* y, int64_t ldy) {
  if (n == 0 || w.rows == 0) return ok_status();
  if (!matmul_path_available(path, w.dtype)) {
    return failed_precondition_error("matmul path {} does not run {} weights here",
                                     matmul_path_name(path), dtype_name(w.dtype));
  }
  switch (path) {
    case MatmulPath::kBlas:
#ifdef LORASERVE_HAVE_OPENBLAS
      run_blas(n, x, ldx, w, beta, y, ldy);
#endif
      return ok_status();
    case MatmulPath::kOneDnn:
      return run_onednn(n, x, ldx, w, beta, y, ldy);
    default:
      run_rows(path, n, x, ldx, w, beta, y, ldy);
      return ok_status();
  }
}

bool gemm_uses_blas() { return have_blas(); }

void lora_gemm(int64_t n, const float* x, int64_t ldx, const Tensor& w, float beta, float* y,
               int64_t ldy) {
  if (n == 0 || w.rows == 0) return;
  // LoRA's products (small, often inside a parallel loop over segments): the own kernels or
  // OpenBLAS, chosen as for F32 weights, never oneDNN, so nothing here can fail and x stays f32
  // (a BF16 A or B is widened exactly, in registers or in bands for sgemm).
  MatmulPath path = choose_matmul_path(n, w.cols, DType::kF32);
  if (path == MatmulPath::kOneDnn) path = have_blas() ? MatmulPath::kBlas : rows_path();
#ifdef LORASERVE_HAVE_OPENBLAS
  if (path == MatmulPath::kBlas) return run_blas(n, x, ldx, w, beta, y, ldy);
#endif
  run_rows(path, n, x, ldx, w, beta, y, ldy);
}

}  // namespace loraserve::kernels::cpu
