// Device-side helpers shared by the kernel files: 16-bit <-> f32 conversions, warp and block
// reductions, grid sizing, and the dispatch from a runtime DType to a kernel template.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

__host__ __device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

// Eight consecutive 16-bit values from a 16-byte-aligned address, as floats.
template <typename T>
__device__ __forceinline__ void load8(const T* p, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) out[i] = to_float(v[i]);
}

// Eight floats rounded to T and stored as one 16-byte write to a 16-byte-aligned address.
template <typename T>
__device__ __forceinline__ void store8(T* p, const float* in) {
  uint4 raw;
  T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = from_float<T>(in[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum of v over the block, returned to every thread. REQUIRES: every thread of the block
// calls it; blockDim.x is a multiple of 32 and at most 1024.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // an earlier call may still read warp_sums
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  return warp_sum(lane < num_warps ? warp_sums[lane] : 0.0f);
}

// Blocks of `threads` threads covering n items, capped at `cap` (kernels then stride by grid).
inline unsigned grid_for(int64_t n, int threads, int64_t cap = 1 << 20) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks);
}

inline Launch refuse(const char* why) { return Launch{why, cudaSuccess}; }

// Launches kernel<<<grid, block, smem, stream>>>(args...) and reports the launch's own error.
// The runtime's last-error slot is cleared first: an earlier failed runtime call (a graph capture
// or instantiation, an event query) already reported its error to its caller, and must not be
// blamed on this launch. A sticky error (the context is lost) is not cleared and is reported.
template <typename... Params, typename... Args>
Launch launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
              Args&&... args) {
  (void)cudaGetLastError();
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  return Launch{nullptr, cudaGetLastError()};
}

// Calls f(T{}) with T the 16-bit type of `dtype`; refuses other dtypes.
template <typename F>
Launch dispatch_half(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kBF16:
      return f(__nv_bfloat16{});
    case DType::kF16:
      return f(__half{});
    default:
      return refuse("compute dtype must be BF16 or F16");
  }
}

}  // namespace loraserve::kernels::cuda
