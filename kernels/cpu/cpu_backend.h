// The CPU backend: weight matrices in F32, BF16 or I8 (--weights-dtype), adapters' A and B in
// F32 or BF16 (--lora-dtype), activations, the KV cache, norms and biases in f32, all in host
// memory. Matrix products through
// cpu::matmul (own kernels, OpenBLAS or oneDNN, chosen per weight dtype and batch shape), the
// other ops as OpenMP loops over rows. It is the reference every other backend is tested
// against. Not thread-safe (one engine thread).
#pragma once

#include <memory>
#include <optional>

#include "kernels/backend.h"

namespace loraserve::kernels {

// `threads` 0: all cores. `weight_dtype` F32, BF16 or I8; `lora_dtype` F32 or BF16; nullopt:
// auto (see BackendOptions).
std::unique_ptr<Backend> create_cpu_backend(int32_t threads,
                                            std::optional<DType> weight_dtype = std::nullopt,
                                            std::optional<DType> lora_dtype = std::nullopt);

// Seconds the CPU backend has spent in lora_shrink and lora_expand so far (benches read it to
// time the LoRA branch inside real steps); an error for another backend.
Result<double> cpu_lora_seconds(const Backend& backend);

namespace cpu {
// y (n, w.rows) = x (n, w.cols) · wᵀ + beta · y with the given row strides, for LoRA's products:
// w is an adapter's A or B in F32 or BF16 (widened to f32 exactly), x stays f32 (see cpu_matmul.h
// for the base weights' products).
void lora_gemm(int64_t n, const float* x, int64_t ldx, const Tensor& w, float beta, float* y,
               int64_t ldy);
// True when the build has OpenBLAS.
bool gemm_uses_blas();
// Picks a token from one row of f32 logits; see SampleParams.
void sample_row(const float* logits, int64_t vocab, const SampleParams& params, SampleResult* out);

// Symmetric int8 of one row of n values: per group of kI8GroupSize, scale = max|v| / 127 and
// q = v · (127 / max|v|) rounded to the nearest integer, ties to even (0 for an all-zero group).
void quantize_i8_row(const float* src, int64_t n, int8_t* q, float* scales);
// Fills the weight view dst (F32, BF16 or I8, any row stride) from dst.rows × dst.cols
// contiguous elements of src_dtype (F32, F16 or BF16).
Status convert_weights(const Tensor& dst, const void* src, DType src_dtype);
// Row r of t (any float dtype, or I8 with its scales) as f32 (t.cols values).
void widen_row(const Tensor& t, int64_t r, float* out);
}  // namespace cpu

}  // namespace loraserve::kernels
