// The packing-free small-row GEMM kernels of the CPU backend (decode steps, LoRA shrinks):
// y[:, o0:o1] = x · w[o0:o1, :]ᵀ + beta · y[:, o0:o1] for a few rows of f32 activations x and
// weight rows w in F32, BF16 or I8. Each kernel holds a tile of weight rows × input rows in
// registers and walks the shared dimension once, so the weights stream from memory once per
// call and every byte read feeds all the input rows of its tile. One kernel per weight dtype and
// instruction set (cpu_rows_portable.cpp, cpu_rows_avx2.cpp, cpu_rows_avx512.cpp); cpu_matmul.cpp
// chooses among them at run time.
#pragma once

#include <cstdint>

#include "common/dtype.h"

namespace loraserve::kernels::cpu {

// The most input rows the small-row kernels are used for (a decode batch of up to 32 sequences).
inline constexpr int64_t kSmallRowsMax = 32;

// How a kernel wants the input rows, made once per call (before the threads split the columns)
// by prepare_rows().
enum class RowsInput : uint8_t {
  kF32,        // x as given
  kF32Pairs,   // f32, each block of 32 reordered as its 16 even then its 16 odd elements (the
               // order a BF16 row splits into when its pairs are widened); the tail as given
  kBF16,       // x rounded to bf16 (the VDPBF16PS kernels)
  kI16Groups,  // x as int16 in groups of kI8GroupSize, each with its f32 scale (the VPDPWSSD
               // kernel for I8 weights): per row, i16_row_elems(in) integers (zeros past `in`);
               // after all the rows' integers, i16_row_groups(in) scales per row. A group's scale
               // is its largest |x| / 32767 (at least 2^-126, the smallest normal f32), each
               // integer x / scale rounded to nearest (so each x within 2^-16 of its group's
               // largest |x|, or within 2^-127); NaN for a group with a NaN or ±Inf (its
               // products are then NaN, as they would be in f32)
};

// kI16Groups: the integers and the scales of one prepared row.
inline int64_t i16_row_groups(int64_t in) { return (in + kI8GroupSize - 1) / kI8GroupSize; }
inline int64_t i16_row_elems(int64_t in) { return i16_row_groups(in) * kI8GroupSize; }
// Where the scales start in n prepared rows: bytes of their integers.
inline int64_t i16_scales_offset(int64_t n, int64_t in) {
  return n * i16_row_elems(in) * static_cast<int64_t>(sizeof(int16_t));
}
// Bytes prepare_rows writes for n rows of `input`.
int64_t prepared_rows_bytes(RowsInput input, int64_t n, int64_t in);

struct RowsArgs {
  int64_t n = 0;                    // input rows, ≤ kSmallRowsMax
  int64_t in = 0;                   // shared dimension
  const void* x = nullptr;          // as RowsInput says
  int64_t ldx = 0;                  // elements between rows of x
  const float* x_scales = nullptr;  // kI16Groups: each row's group scales
  int64_t ldxs = 0;                 // scales between rows
  const void* w = nullptr;          // (out, in) weight rows
  int64_t ldw = 0;                  // elements between rows of w
  const float* scales = nullptr;    // I8: kI8GroupSize elements of a row share one scale
  int64_t lds = 0;                  // scales between rows
  float beta = 0.0f;
  float* y = nullptr;
  int64_t ldy = 0;
};

// Computes output columns [o0, o1) of every row.
using RowsKernel = void (*)(const RowsArgs& args, int64_t o0, int64_t o1);

// Writes x (n, in; row stride ldx) into out as `input` says (n × in contiguous, or as kI16Groups
// lays it out). REQUIRES: input is not kF32 (that one is x itself);
// kI16Groups only on CPUs with AVX-512 (the only kernel that takes it needs it too).
void prepare_rows(RowsInput input, int64_t n, int64_t in, const float* x, int64_t ldx, void* out);

// Portable C++ (any CPU).
void rows_f32_portable(const RowsArgs& args, int64_t o0, int64_t o1);   // x: kF32
void rows_bf16_portable(const RowsArgs& args, int64_t o0, int64_t o1);  // x: kF32
void rows_i8_portable(const RowsArgs& args, int64_t o0, int64_t o1);    // x: kF32
// AVX2 + FMA.
void rows_f32_avx2(const RowsArgs& args, int64_t o0, int64_t o1);   // x: kF32
void rows_bf16_avx2(const RowsArgs& args, int64_t o0, int64_t o1);  // x: kF32Pairs
void rows_i8_avx2(const RowsArgs& args, int64_t o0, int64_t o1);    // x: kF32
// AVX-512.
void rows_f32_avx512(const RowsArgs& args, int64_t o0, int64_t o1);   // x: kF32
void rows_bf16_avx512(const RowsArgs& args, int64_t o0, int64_t o1);  // x: kF32Pairs
void rows_i8_avx512(const RowsArgs& args, int64_t o0, int64_t o1);    // x: kF32
// AVX-512 with AVX512_BF16: bf16 × bf16 products summed in f32.
void rows_bf16_dot_avx512(const RowsArgs& args, int64_t o0, int64_t o1);  // x: kBF16
// One row of x (in elements) as kI16Groups: i16_row_elems(in) integers and i16_row_groups(in)
// scales. AVX-512.
void quantize_row_i16_avx512(const float* x, int64_t in, int16_t* q, float* scales);
// AVX-512 with AVX512_VNNI, I8 weights: int8 weights (widened to int16) × int16 inputs summed in
// int32 per group (VPDPWSSD), each group's sum times its two scales added in f32.
void rows_i8_vnni_avx512(const RowsArgs& args, int64_t o0, int64_t o1);  // x: kI16Groups

}  // namespace loraserve::kernels::cpu
