// RMSNorm kernels of the CUDA backend: per row (optionally fused with the residual add that
// precedes it) and per head (Qwen3's q/k norm). Sums of squares in f32, as the CPU backend does.
#include <cstdint>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {
namespace {

constexpr int kRowThreads = 512;
constexpr int kHeadWarps = 8;

// kernels

// One block per row. With `residual`, each thread first stores residual + x (rounded to T, as
// the residual stream is kept) and normalises that sum; it re-reads only the elements it wrote.
// Eight elements per 16-byte load when every operand is aligned: a 4096-wide row is then one load
// per thread of a 512-thread block, where 2-byte loads made a chain of 16 (15 us a call on an
// H200, the cost of reading 30 MB).
template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    rms_norm_kernel(const T* x, int64_t x_stride, T* residual, int64_t residual_stride,
                    const T* weight, float eps, int64_t cols, T* out, int64_t out_stride,
                    bool vector_io) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * x_stride;
  T* res = residual != nullptr ? residual + r * residual_stride : nullptr;
  T* o = out + r * out_stride;
  float ss = 0.0f;
  if (vector_io) {
    for (int64_t c = int64_t{threadIdx.x} * 8; c < cols; c += int64_t{blockDim.x} * 8) {
      float v[8];
      load8(xr + c, v);
      if (res != nullptr) {
        float rv[8];
        load8(res + c, rv);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = to_float(from_float<T>(rv[e] + v[e]));
        store8(res + c, v);
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) ss += v[e] * v[e];
    }
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      float v;
      if (res != nullptr) {
        const T sum = from_float<T>(to_float(res[c]) + to_float(xr[c]));
        res[c] = sum;
        v = to_float(sum);
      } else {
        v = to_float(xr[c]);
      }
      ss += v * v;
    }
  }
  ss = block_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(cols) + eps);
  if (vector_io) {
    for (int64_t c = int64_t{threadIdx.x} * 8; c < cols; c += int64_t{blockDim.x} * 8) {
      float v[8], w[8];
      load8(res != nullptr ? res + c : xr + c, v);
      load8(weight + c, w);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = w[e] * (v[e] * inv);
      store8(o + c, v);
    }
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float v = to_float(res != nullptr ? res[c] : xr[c]);
      o[c] = from_float<T>(to_float(weight[c]) * (v * inv));
    }
  }
}

// One warp per (row, head).
template <typename T>
__global__ void head_rms_norm_kernel(T* x, int64_t x_stride, int64_t rows, int64_t heads,
                                     int64_t head_dim, const T* weight, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t item = blockIdx.x * static_cast<int64_t>(kHeadWarps) + (threadIdx.x >> 5);
  if (item >= rows * heads) return;
  T* v = x + (item / heads) * x_stride + (item % heads) * head_dim;
  float ss = 0.0f;
  for (int64_t d = lane; d < head_dim; d += 32) {
    const float e = to_float(v[d]);
    ss += e * e;
  }
  ss = warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(head_dim) + eps);
  for (int64_t d = lane; d < head_dim; d += 32) {
    v[d] = from_float<T>(to_float(weight[d]) * (to_float(v[d]) * inv));
  }
}

}  // namespace

// launchers

Launch rms_norm(DType dtype, const void* x, int64_t x_stride, void* residual,
                int64_t residual_stride, const void* weight, float eps, int64_t rows, int64_t cols,
                void* out, int64_t out_stride, cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || x_stride < cols || out_stride < cols ||
      (residual != nullptr && residual_stride < cols)) {
    return refuse("rms_norm: bad shape");
  }
  if (rows == 0) return {};
  const bool vector_io = cols % 8 == 0 && x_stride % 8 == 0 && out_stride % 8 == 0 &&
                         aligned16(x) && aligned16(out) && aligned16(weight) &&
                         (residual == nullptr || (residual_stride % 8 == 0 && aligned16(residual)));
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(rms_norm_kernel<T>, static_cast<unsigned>(rows), kRowThreads, 0, stream,
                  static_cast<const T*>(x), x_stride, static_cast<T*>(residual), residual_stride,
                  static_cast<const T*>(weight), eps, cols, static_cast<T*>(out), out_stride,
                  vector_io);
  });
}

Launch head_rms_norm(DType dtype, void* x, int64_t x_stride, int64_t rows, int64_t heads,
                     int64_t head_dim, const void* weight, float eps, cudaStream_t stream) {
  if (rows < 0 || heads <= 0 || head_dim <= 0 || x_stride < heads * head_dim)
    return refuse("head_rms_norm: bad shape");
  if (rows == 0) return {};
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    const unsigned blocks = static_cast<unsigned>((rows * heads + kHeadWarps - 1) / kHeadWarps);
    return launch(head_rms_norm_kernel<T>, blocks, kHeadWarps * 32, 0, stream, static_cast<T*>(x),
                  x_stride, rows, heads, head_dim, static_cast<const T*>(weight), eps);
  });
}

}  // namespace loraserve::kernels::cuda
