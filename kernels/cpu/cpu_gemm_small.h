// GEMM for few rows without packing (kernels/cpu/cpu_gemm_small.cpp); used by cpu::gemm.
#pragma once

#include <cstdint>

namespace loraserve::kernels::cpu {

// With OpenBLAS, small_gemm_slice is used for up to this many rows when the shared dimension is
// at least kSmallGemmMinInner (measured: faster than sgemm there; with a short shared dimension,
// e.g. a LoRA expand over rank r, every output costs a horizontal sum and sgemm wins).
inline constexpr int64_t kSmallGemmMaxRows = 32;
inline constexpr int64_t kSmallGemmMinInner = 256;

// True when this CPU runs the small-row kernel (x86-64 with AVX2 and FMA).
bool small_gemm_available();

// y[:, o0:o1] = x · w[o0:o1, :]ᵀ + beta · y[:, o0:o1] for n rows; REQUIRES small_gemm_available().
void small_gemm_slice(int64_t n, int64_t o0, int64_t o1, int64_t in, const float* x, int64_t ldx,
                      const float* w, int64_t ldw, float beta, float* y, int64_t ldy);

}  // namespace loraserve::kernels::cpu
