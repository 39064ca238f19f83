// oneDNN matmuls for the CPU backend's blocked path (steps of many rows: prefill, large
// batches): y = x · wᵀ + beta · y with bf16 or f32 operands and an f32 y. oneDNN picks its own
// kernels for the CPU at run time (AVX512_BF16, AMX, ...) and threads them with the same OpenMP
// runtime as the rest of the backend. Primitives are made once per shape and kept. Built only
// when oneDNN was found (LORASERVE_HAVE_DNNL); callers ask available() first. Not thread-safe:
// one caller at a time (the engine thread; a mutex guards the primitive cache).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace loraserve::kernels::cpu::onednn {

// True when this build has oneDNN.
bool available();
// True when oneDNN runs bf16 matmuls natively on this CPU (AVX512_BF16 or AMX), not emulated.
bool native_bf16();
// oneDNN's version and the instruction set it dispatches to here, e.g. "oneDNN 2.6.3
// (avx512_core_bf16)".
std::string describe();

// y (n, out; row stride ldy) = x (n, in; contiguous) · w (out, in; row stride ldw)ᵀ + beta · y.
Status matmul_bf16(int64_t n, int64_t out, int64_t in, const uint16_t* x, const uint16_t* w,
                   int64_t ldw, float beta, float* y, int64_t ldy);
// The same in f32, with x's row stride ldx.
Status matmul_f32(int64_t n, int64_t out, int64_t in, const float* x, int64_t ldx, const float* w,
                  int64_t ldw, float beta, float* y, int64_t ldy);

}  // namespace loraserve::kernels::cpu::onednn
