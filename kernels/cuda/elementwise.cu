// Element-wise and row-copy kernels of the CUDA backend: dtype conversion, random fill, the
// bandwidth probe's sum, embedding lookup, bias, SiLU·mul, RoPE, KV-cache writes, row gathers.
#include <cstdint>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// kernels

__device__ __forceinline__ float load_as_float(const void* p, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(p)[i];
    case DType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::kF16:
      return __half2float(static_cast<const __half*>(p)[i]);
    default:
      return 0.0f;
  }
}

__device__ __forceinline__ void store_from_float(void* p, DType dtype, int64_t i, float v) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(p)[i] = v;
      return;
    case DType::kBF16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
      return;
    case DType::kF16:
      static_cast<__half*>(p)[i] = __float2half_rn(v);
      return;
    default:
      return;
  }
}

__global__ void convert_kernel(const void* src, DType src_dtype, int64_t src_stride, void* dst,
                               DType dst_dtype, int64_t dst_stride, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    if (src_dtype == DType::kI32) {
      static_cast<int32_t*>(dst)[r * dst_stride + c] =
          static_cast<const int32_t*>(src)[r * src_stride + c];
    } else {
      store_from_float(dst, dst_dtype, r * dst_stride + c,
                       load_as_float(src, src_dtype, r * src_stride + c));
    }
  }
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__global__ void fill_uniform_kernel(void* data, DType dtype, int64_t rows, int64_t cols,
                                    int64_t stride, uint64_t seed, float lo, float hi) {
  const int64_t n = rows * cols;
  const uint64_t key = mix64(seed + 0x9E3779B97F4A7C15ull);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t bits = mix64(key + static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull);
    const float u = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
    store_from_float(data, dtype, (i / cols) * stride + i % cols, lo + (hi - lo) * u);
  }
}

__global__ void sum_floats_kernel(const float4* data, int64_t n4, float* out) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  float acc = 0.0f;
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  // Four independent loads in flight per thread.
  for (; i + 3 * step < n4; i += 4 * step) {
    const float4 a = data[i], b = data[i + step], c = data[i + 2 * step], d = data[i + 3 * step];
    acc += (a.x + a.y + a.z + a.w) + (b.x + b.y + b.z + b.w) + (c.x + c.y + c.z + c.w) +
           (d.x + d.y + d.z + d.w);
  }
  for (; i < n4; i += step) {
    const float4 a = data[i];
    acc += a.x + a.y + a.z + a.w;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) atomicAdd(out, acc);
}

template <typename T>
__global__ void embedding_kernel(const T* table, int64_t table_stride, int64_t vocab, int64_t dim,
                                 const StepHeader* step, T* out, int64_t out_stride) {
  const int64_t r = blockIdx.x;
  const int32_t id = step_array<int32_t>(step, step->token_ids)[r];
  if (id < 0 || id >= vocab) return;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    out[r * out_stride + c] = table[id * table_stride + c];
  }
}

template <typename T>
__global__ void add_bias_kernel(T* y, int64_t y_stride, int64_t rows, int64_t cols, const T* bias) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    T& v = y[r * y_stride + c];
    v = from_float<T>(to_float(v) + to_float(bias[c]));
  }
}

template <typename T>
__global__ void silu_mul_kernel(const T* gate_up, int64_t gate_up_stride, T* out,
                                int64_t out_stride, int64_t rows, int64_t f) {
  const int64_t n = rows * f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / f, c = i % f;
    const float g = to_float(gate_up[r * gate_up_stride + c]);
    const float u = to_float(gate_up[r * gate_up_stride + f + c]);
    out[r * out_stride + c] = from_float<T>(g / (1.0f + expf(-g)) * u);
  }
}

template <typename T>
__global__ void rope_kernel(T* x, int64_t x_stride, int64_t rows, int64_t heads, int64_t head_dim,
                            const float* inv_freq, const StepHeader* step) {
  const int64_t half = head_dim / 2;
  const int64_t n = rows * heads * half;
  const int32_t* positions = step_array<int32_t>(step, step->positions);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i % half;
    const int64_t h = (i / half) % heads;
    const int64_t r = i / (half * heads);
    const float angle = static_cast<float>(positions[r]) * inv_freq[j];
    float s, c;
    sincosf(angle, &s, &c);
    T* v = x + r * x_stride + h * head_dim;
    const float a = to_float(v[j]), b = to_float(v[j + half]);
    v[j] = from_float<T>(a * c - b * s);
    v[j + half] = from_float<T>(b * c + a * s);
  }
}

template <typename T>
__global__ void write_kv_kernel(const T* k, int64_t k_stride, const T* v, int64_t v_stride,
                                int64_t rows, int64_t kv_dim, T* k_cache, int64_t k_cache_stride,
                                T* v_cache, int64_t v_cache_stride, int64_t num_slots,
                                const StepHeader* step) {
  const int64_t n = rows * kv_dim;
  const int32_t* slots = step_array<int32_t>(step, step->slot_mapping);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / kv_dim, c = i % kv_dim;
    const int64_t slot = slots[r];
    if (slot < 0 || slot >= num_slots) continue;
    k_cache[slot * k_cache_stride + c] = k[r * k_stride + c];
    v_cache[slot * v_cache_stride + c] = v[r * v_stride + c];
  }
}

template <typename T>
__global__ void gather_rows_kernel(const T* x, int64_t x_stride, int64_t cols,
                                   const StepHeader* step, T* out, int64_t out_stride) {
  const int64_t j = blockIdx.x;
  const int32_t src = step_array<int32_t>(step, step->logits_rows)[j];
  if (src < 0 || src >= step->num_rows) return;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    out[j * out_stride + c] = x[src * x_stride + c];
  }
}

bool float_dtype(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

}  // namespace

// launchers

Launch convert(const void* src, DType src_dtype, int64_t src_stride, void* dst, DType dst_dtype,
               int64_t dst_stride, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || src_stride < cols || dst_stride < cols)
    return refuse("convert: bad shape");
  if (src_dtype == DType::kI32 ? dst_dtype != DType::kI32
                               : !(float_dtype(src_dtype) && float_dtype(dst_dtype))) {
    return refuse("convert: unsupported dtype pair");
  }
  if (rows * cols == 0) return {};
  return launch(convert_kernel, grid_for(rows * cols, kThreads), kThreads, 0, stream, src,
                src_dtype, src_stride, dst, dst_dtype, dst_stride, rows, cols);
}

Launch fill_uniform(void* data, DType dtype, int64_t rows, int64_t cols, int64_t stride,
                    uint64_t seed, float lo, float hi, cudaStream_t stream) {
  if (!float_dtype(dtype)) return refuse("fill_uniform: dtype must be F32, F16 or BF16");
  if (rows < 0 || cols < 0 || stride < cols) return refuse("fill_uniform: bad shape");
  if (rows * cols == 0) return {};
  return launch(fill_uniform_kernel, grid_for(rows * cols, kThreads), kThreads, 0, stream, data,
                dtype, rows, cols, stride, seed, lo, hi);
}

Launch sum_floats(const float* data, int64_t n, float* out, int sm_count, cudaStream_t stream) {
  if (n % 4 != 0 || reinterpret_cast<uintptr_t>(data) % 16 != 0)
    return refuse("sum_floats: n must be a multiple of 4 and data 16-byte aligned");
  constexpr int kSumThreads = 512;
  const unsigned blocks = grid_for(n / 4, kSumThreads, 4LL * (sm_count > 0 ? sm_count : 1));
  return launch(sum_floats_kernel, blocks, kSumThreads, 0, stream,
                reinterpret_cast<const float4*>(data), n / 4, out);
}

Launch embedding(DType dtype, const void* table, int64_t table_stride, int64_t vocab, int64_t dim,
                 const StepHeader* step, int64_t rows, void* out, int64_t out_stride,
                 cudaStream_t stream) {
  if (rows <= 0 || dim <= 0 || table_stride < dim || out_stride < dim)
    return refuse("embedding: bad shape");
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(embedding_kernel<T>, static_cast<unsigned>(rows), kThreads, 0, stream,
                  static_cast<const T*>(table), table_stride, vocab, dim, step,
                  static_cast<T*>(out), out_stride);
  });
}

Launch add_bias(DType dtype, void* y, int64_t y_stride, int64_t rows, int64_t cols,
                const void* bias, cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || y_stride < cols) return refuse("add_bias: bad shape");
  if (rows == 0) return {};
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(add_bias_kernel<T>, grid_for(rows * cols, kThreads), kThreads, 0, stream,
                  static_cast<T*>(y), y_stride, rows, cols, static_cast<const T*>(bias));
  });
}

Launch silu_mul(DType dtype, const void* gate_up, int64_t gate_up_stride, void* out,
                int64_t out_stride, int64_t rows, int64_t f, cudaStream_t stream) {
  if (rows < 0 || f <= 0 || gate_up_stride < 2 * f || out_stride < f)
    return refuse("silu_mul: bad shape");
  if (rows == 0) return {};
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(silu_mul_kernel<T>, grid_for(rows * f, kThreads), kThreads, 0, stream,
                  static_cast<const T*>(gate_up), gate_up_stride, static_cast<T*>(out), out_stride,
                  rows, f);
  });
}

Launch rope(DType dtype, void* x, int64_t x_stride, int64_t rows, int64_t heads, int64_t head_dim,
            const float* inv_freq, const StepHeader* step, cudaStream_t stream) {
  if (rows < 0 || heads <= 0 || head_dim <= 0 || head_dim % 2 != 0 || x_stride < heads * head_dim) {
    return refuse("rope: bad shape (head_dim must be even)");
  }
  if (rows == 0) return {};
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(rope_kernel<T>, grid_for(rows * heads * (head_dim / 2), kThreads), kThreads, 0,
                  stream, static_cast<T*>(x), x_stride, rows, heads, head_dim, inv_freq, step);
  });
}

Launch write_kv(DType dtype, const void* k, int64_t k_stride, const void* v, int64_t v_stride,
                int64_t rows, int64_t kv_dim, void* k_cache, int64_t k_cache_stride, void* v_cache,
                int64_t v_cache_stride, int64_t num_slots, const StepHeader* step,
                cudaStream_t stream) {
  if (rows < 0 || kv_dim <= 0 || k_stride < kv_dim || v_stride < kv_dim ||
      k_cache_stride < kv_dim || v_cache_stride < kv_dim) {
    return refuse("write_kv: bad shape");
  }
  if (rows == 0) return {};
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(write_kv_kernel<T>, grid_for(rows * kv_dim, kThreads), kThreads, 0, stream,
                  static_cast<const T*>(k), k_stride, static_cast<const T*>(v), v_stride, rows,
                  kv_dim, static_cast<T*>(k_cache), k_cache_stride, static_cast<T*>(v_cache),
                  v_cache_stride, num_slots, step);
  });
}

Launch gather_rows(DType dtype, const void* x, int64_t x_stride, int64_t cols,
                   const StepHeader* step, int64_t rows_out, void* out, int64_t out_stride,
                   cudaStream_t stream) {
  if (rows_out < 0 || cols <= 0 || x_stride < cols || out_stride < cols)
    return refuse("gather_rows: bad shape");
  if (rows_out == 0) return {};
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch(gather_rows_kernel<T>, static_cast<unsigned>(rows_out), kThreads, 0, stream,
                  static_cast<const T*>(x), x_stride, cols, step, static_cast<T*>(out), out_stride);
  });
}

}  // namespace loraserve::kernels::cuda
