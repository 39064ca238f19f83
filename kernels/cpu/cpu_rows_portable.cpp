// The small-row kernels in plain C++ for CPUs without AVX2 (and the input reordering every
// instruction set shares). Four input rows per pass over a weight row.
#include <algorithm>
#include <cstdint>

#include "common/dtype.h"
#include "kernels/cpu/cpu_rows.h"

namespace loraserve::kernels::cpu {
namespace {

constexpr int64_t kRowBlock = 4;

// Weight element k of row `o` as f32, scales applied.
struct F32Weights {
  const RowsArgs& a;
  float operator()(int64_t o, int64_t k) const {
    return static_cast<const float*>(a.w)[o * a.ldw + k];
  }
};
struct BF16Weights {
  const RowsArgs& a;
  float operator()(int64_t o, int64_t k) const {
    return bf16_to_f32(static_cast<const uint16_t*>(a.w)[o * a.ldw + k]);
  }
};
struct I8Weights {
  const RowsArgs& a;
  float operator()(int64_t o, int64_t k) const {
    return static_cast<float>(static_cast<const int8_t*>(a.w)[o * a.ldw + k]) *
           a.scales[o * a.lds + k / kI8GroupSize];
  }
};

template <typename Weights>
void rows_portable(const RowsArgs& a, int64_t o0, int64_t o1) {
  const Weights weight{a};
  const auto* x = static_cast<const float*>(a.x);
  for (int64_t o = o0; o < o1; ++o) {
    for (int64_t r0 = 0; r0 < a.n; r0 += kRowBlock) {
      const int64_t r1 = std::min(a.n, r0 + kRowBlock);
      float acc[kRowBlock] = {0, 0, 0, 0};
      for (int64_t k = 0; k < a.in; ++k) {
        const float wk = weight(o, k);
        for (int64_t r = r0; r < r1; ++r) acc[r - r0] += x[r * a.ldx + k] * wk;
      }
      for (int64_t r = r0; r < r1; ++r) {
        float* yr = a.y + r * a.ldy + o;
        *yr = a.beta == 0.0f ? acc[r - r0] : acc[r - r0] + a.beta * *yr;
      }
    }
  }
}

}  // namespace

int64_t prepared_rows_bytes(RowsInput input, int64_t n, int64_t in) {
  switch (input) {
    case RowsInput::kF32:
      return 0;
    case RowsInput::kF32Pairs:
      return n * in * static_cast<int64_t>(sizeof(float));
    case RowsInput::kBF16:
      return n * in * static_cast<int64_t>(sizeof(uint16_t));
    case RowsInput::kI16Groups:
      return i16_scales_offset(n, in) +
             n * i16_row_groups(in) * static_cast<int64_t>(sizeof(float));
  }
  return 0;
}

void prepare_rows(RowsInput input, int64_t n, int64_t in, const float* x, int64_t ldx, void* out) {
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * ldx;
    if (input == RowsInput::kBF16) {
      uint16_t* o = static_cast<uint16_t*>(out) + r * in;
      for (int64_t k = 0; k < in; ++k) o[k] = f32_to_bf16(xr[k]);
      continue;
    }
    if (input == RowsInput::kI16Groups) {
      int16_t* q = static_cast<int16_t*>(out) + r * i16_row_elems(in);
      float* scales = reinterpret_cast<float*>(static_cast<char*>(out) + i16_scales_offset(n, in));
      quantize_row_i16_avx512(xr, in, q, scales + r * i16_row_groups(in));
      continue;
    }
    float* o = static_cast<float*>(out) + r * in;
    int64_t k = 0;
    for (; k + 32 <= in; k += 32) {
      for (int64_t i = 0; i < 16; ++i) {
        o[k + i] = xr[k + 2 * i];
        o[k + 16 + i] = xr[k + 2 * i + 1];
      }
    }
    for (; k < in; ++k) o[k] = xr[k];
  }
}

void rows_f32_portable(const RowsArgs& a, int64_t o0, int64_t o1) {
  rows_portable<F32Weights>(a, o0, o1);
}
void rows_bf16_portable(const RowsArgs& a, int64_t o0, int64_t o1) {
  rows_portable<BF16Weights>(a, o0, o1);
}
void rows_i8_portable(const RowsArgs& a, int64_t o0, int64_t o1) {
  rows_portable<I8Weights>(a, o0, o1);
}

}  // namespace loraserve::kernels::cpu
