// The CPU backend: f32 weights and activations in host memory, GEMMs through OpenBLAS (or a
// plain C++ kernel when the build has no BLAS), the other ops as OpenMP loops over rows.
// It is the reference every other backend is tested against. Not thread-safe (one engine thread).
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace loraserve::kernels {

// `threads` 0: all cores.
std::unique_ptr<Backend> create_cpu_backend(int32_t threads);

// Seconds the CPU backend has spent in lora_shrink and lora_expand so far (benches read it to
// time the LoRA branch inside real steps); an error for another backend.
Result<double> cpu_lora_seconds(const Backend& backend);

namespace cpu {
// y (n, out) = x (n, in) · w (out, in)ᵀ + beta · y, all f32 with the given row strides.
void gemm(int64_t n, int64_t out, int64_t in, const float* x, int64_t ldx, const float* w,
          int64_t ldw, float beta, float* y, int64_t ldy);
// True when Gemm runs on OpenBLAS.
bool gemm_uses_blas();
// Picks a token from one row of f32 logits; see SampleParams.
void sample_row(const float* logits, int64_t vocab, const SampleParams& params, SampleResult* out);
}  // namespace cpu

}  // namespace loraserve::kernels
