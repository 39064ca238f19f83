// Weight conversion at load time: any checkpoint float dtype into F32, BF16 (round to nearest
// even) or I8 (symmetric, one scale per kI8GroupSize elements of a row); and back to f32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace loraserve::kernels::cpu {

void quantize_i8_row(const float* src, int64_t n, int8_t* q, float* scales) {
  for (int64_t g0 = 0; g0 < n; g0 += kI8GroupSize) {
    const int64_t g1 = std::min(n, g0 + kI8GroupSize);
    float max_abs = 0.0f;
    bool nan = false;
    for (int64_t k = g0; k < g1; ++k) {
      nan = nan || std::isnan(src[k]);
      max_abs = std::max(max_abs, std::fabs(src[k]));
    }
    // A NaN or an infinity makes the scale NaN or infinite with every integer 0, so the group's
    // products are NaN, as some would be in f32.
    if (nan || std::isinf(max_abs)) {
      scales[g0 / kI8GroupSize] = nan ? NAN : INFINITY;
      std::fill(q + g0, q + g1, int8_t{0});
      continue;
    }
    scales[g0 / kI8GroupSize] = max_abs / 127.0f;
    const float inv = max_abs == 0.0f ? 0.0f : 127.0f / max_abs;
    for (int64_t k = g0; k < g1; ++k) {
      const float v = std::nearbyint(src[k] * inv);
      q[k] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
  }
}

Status convert_weights(const Tensor& dst, const void* src, DType src_dtype) {
  const int64_t rows = dst.rows, cols = dst.cols;
  if (src_dtype == DType::kI8 || src_dtype == DType::kI32) {
    return invalid_argument_error("cpu backend: weights cannot be read from {}",
                                  dtype_name(src_dtype));
  }
  const size_t src_size = dtype_size(src_dtype);
  const auto* in = static_cast<const char*>(src);
  if (dst.dtype == DType::kF32 || (dst.dtype == DType::kBF16 && src_dtype == DType::kBF16)) {
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 20))
    for (int64_t r = 0; r < rows; ++r) {
      void* out = static_cast<char*>(dst.data) + r * dst.stride * dtype_size(dst.dtype);
      const char* row = in + static_cast<size_t>(r * cols) * src_size;
      if (dst.dtype == src_dtype) {
        std::memcpy(out, row, static_cast<size_t>(cols) * src_size);
      } else {
        convert_to_f32(src_dtype, row, static_cast<float*>(out), static_cast<size_t>(cols));
      }
    }
    return ok_status();
  }
  if (dst.dtype != DType::kBF16 && dst.dtype != DType::kI8) {
    return invalid_argument_error("cpu backend: weights cannot be kept as {}",
                                  dtype_name(dst.dtype));
  }
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 20))
  for (int64_t r = 0; r < rows; ++r) {
    thread_local std::vector<float> wide;
    wide.resize(static_cast<size_t>(cols));
    convert_to_f32(src_dtype, in + static_cast<size_t>(r * cols) * src_size, wide.data(),
                   static_cast<size_t>(cols));
    if (dst.dtype == DType::kBF16) {
      auto* out = static_cast<uint16_t*>(dst.data) + r * dst.stride;
      for (int64_t k = 0; k < cols; ++k) out[k] = f32_to_bf16(wide[static_cast<size_t>(k)]);
    } else {
      quantize_i8_row(wide.data(), cols, static_cast<int8_t*>(dst.data) + r * dst.stride,
                      dst.scales + r * dst.scale_stride());
    }
  }
  return ok_status();
}

void widen_row(const Tensor& t, int64_t r, float* out) {
  const char* row = static_cast<const char*>(t.data) + r * t.stride * dtype_size(t.dtype);
  if (t.dtype != DType::kI8) {
    convert_to_f32(t.dtype, row, out, static_cast<size_t>(t.cols));
    return;
  }
  const auto* q = reinterpret_cast<const int8_t*>(row);
  const float* s = t.scales + r * t.scale_stride();
  for (int64_t k = 0; k < t.cols; ++k) out[k] = static_cast<float>(q[k]) * s[k / kI8GroupSize];
}

}  // namespace loraserve::kernels::cpu
