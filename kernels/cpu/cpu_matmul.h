// The CPU backend's matrix products y = x · wᵀ (+ beta · y) for every weight dtype and batch
// shape, and the choice among the ways to run them (cpu_matmul.cpp says which wins where, as
// measured). x and y are f32; w is an F32, BF16 or I8 weight (out, in).
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"

namespace loraserve::kernels::cpu {

// The ways a matmul can run. Rows* are the own packing-free kernels (cpu_rows.h), run over
// 32-row chunks when there are more rows; the other two are libraries.
enum class MatmulPath : uint8_t {
  kRowsPortable,
  kRowsAvx2,
  kRowsAvx512,
  kRowsBf16Dot,  // BF16 weights only: x rounded to bf16, VDPBF16PS (AVX512_BF16)
  kRowsI8Vnni,   // I8 weights only: x in int16 groups (2^-16 of each group's largest |x|, at
                 // least 2^-127), VPDPWSSD (AVX-512 with AVX512_VNNI)
  kBlas,         // OpenBLAS: sgemv / sgemm; BF16 and I8 weights widened to f32 in bands first
  kOneDnn,       // oneDNN matmul: F32 as f32; BF16 with x rounded to bf16; I8 widened to bf16 in
                 // bands first
};

// BF16 weights: from this many rows on, matmul() runs oneDNN's bf16 product where the CPU
// multiplies bf16 natively; below, the own VDPBF16PS kernel where the CPU has AVX512_BF16, else
// the widening kernels. Both bf16 products round x to bf16. kernel_bench, 8b-layers (2026-12-04,
// AMD EPYC, fastest of 5), the VDPBF16PS kernel against oneDNN: 12 rows 29.2 / 34.6 ms, 16 rows
// 35.5 / 39.5, 24 rows 49.6 / 46.7; the crossover sits where AMX, which only oneDNN uses, can
// only move it lower.
inline constexpr int64_t kBf16ProductMinRows = 16;

// Up to kI8VnniMaxRows rows, matmul() runs I8 weights through the VNNI kernel where the CPU has
// it (over 32-row chunks past kSmallRowsMax); beyond, oneDNN's bf16 product. kernel_bench,
// 8b-layers, VNNI against the next best: 1 row 6.3-6.4 / 8.9-9.1 ms and 2 rows 7.2-7.4 / 10.8-11.1
// (one weight row after another: one sequential stream per thread, prefetched; the widening
// kernel and the 4-row tiles read several rows at once), 8 rows 27 / 36, 32 rows 82 / 141
// (widened to f32), 128 rows 398 / 517 (oneDNN), 256 rows 673 / 579 (oneDNN).
inline constexpr int64_t kI8VnniMaxRows = 128;

std::string_view matmul_path_name(MatmulPath path);
// True when `path` runs here for weights of `dtype` (this build, this CPU, the kernel-level cap).
bool matmul_path_available(MatmulPath path, DType dtype);
// The path matmul() takes for n rows over a shared dimension `in` with weights of `dtype`.
MatmulPath choose_matmul_path(int64_t n, int64_t in, DType dtype);

// y (n, w.rows; row stride ldy) = x (n, w.cols; row stride ldx) · wᵀ + beta · y, through
// choose_matmul_path. The OpenMP threads split the output columns (oneDNN threads itself).
Status matmul(int64_t n, const float* x, int64_t ldx, const Tensor& w, float beta, float* y,
              int64_t ldy);
// The same through `path`. REQUIRES: matmul_path_available(path, w.dtype).
Status matmul_via(MatmulPath path, int64_t n, const float* x, int64_t ldx, const Tensor& w,
                  float beta, float* y, int64_t ldy);

}  // namespace loraserve::kernels::cpu
