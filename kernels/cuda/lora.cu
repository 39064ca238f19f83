// LoRA shrink and expand over the step's segments, with mixed ranks and no padding. The host
// cuts every segment into tiles of at most kLoraTileRows rows. The shrink gives one block to each
// (tile, table, rank row); the expand one to each (tile, table, 256 output columns). A one-row
// tile (a decode row with its own adapter) is BGMV; a tile of several rows is SGMV: each row of
// A (shrink) or B (expand) is read once for all the tile's rows. Rows outside every segment, and
// slices of rank 0, get no delta.
#include <cstdint>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {
namespace {

constexpr int kShrinkWarps = 8;      // warps of a shrink block (one block per rank row)
constexpr int kExpandThreads = 256;  // output columns per expand block, one per thread
constexpr int kMaxRank = kMaxLoraRank;

__device__ inline const DeviceLoraSlice& slice_of(const StepHeader* step, int32_t table,
                                                  int32_t segment) {
  return step_array<DeviceLoraSlice>(
      step, step->lora_slices)[int64_t{table} * step->num_segments + segment];
}

// Where table k's columns start in tmp for `segment`: the summed ranks of tables 0 .. k-1.
__device__ inline int tmp_column(const StepHeader* step, const LoraTables& tables, int k,
                                 int32_t segment) {
  int col = 0;
  for (int i = 0; i < k; ++i) col += max(0, slice_of(step, tables.id[i], segment).rank);
  return col;
}

// kernels

// grid: (tiles, tables, rank rows). The block computes rank row j of every row of the tile,
// tmp[row, col + j] = x[row, :] . A[j, :]: its threads split the input dimension (eight columns
// per 16-byte load when aligned), so A[j] is streamed once and the tile's activation rows come
// from L2, then the per-row sums are reduced over the block. One block per rank row keeps a
// decode step's few multi-row tiles spread over the whole GPU (a warp per rank row left a 4-tile
// step on 8 blocks, and the shrink at 190 us a call on an H200).
template <typename T>
__global__ void __launch_bounds__(kShrinkWarps * 32)
    lora_shrink_kernel(const T* x, int64_t x_stride, int64_t in, LoraTables tables,
                       const StepHeader* step, T* tmp, int64_t tmp_stride) {
  __shared__ float partial[kShrinkWarps][kLoraTileRows];
  const int64_t tile_index = blockIdx.x;
  const int k = blockIdx.y;
  const int j = blockIdx.z;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  // Both exits are uniform over the block, before its only barrier.
  if (tile_index >= step->num_lora_tiles) return;
  const LoraTile tile = step_array<LoraTile>(step, step->lora_tiles)[tile_index];
  const DeviceLoraSlice sl = slice_of(step, tables.id[k], tile.segment);
  if (j >= sl.rank) return;
  const int col = tmp_column(step, tables, k, tile.segment);
  const T* a = static_cast<const T*>(sl.a) + int64_t{j} * in;
  const T* xt = x + tile.row_begin * x_stride;
  const int rows = tile.row_count;

  float acc[kLoraTileRows];
#pragma unroll
  for (int r = 0; r < kLoraTileRows; ++r) acc[r] = 0.0f;
  if (in % 8 == 0 && x_stride % 8 == 0 && aligned16(a) && aligned16(xt)) {
    for (int64_t c = int64_t{threadIdx.x} * 8; c < in; c += int64_t{blockDim.x} * 8) {
      float av[8];
      load8(a + c, av);
#pragma unroll
      for (int r = 0; r < kLoraTileRows; ++r) {
        if (r < rows) {
          float xv[8];
          load8(xt + r * x_stride + c, xv);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r] += av[e] * xv[e];
        }
      }
    }
  } else {
    for (int64_t c = threadIdx.x; c < in; c += blockDim.x) {
      const float av = to_float(a[c]);
#pragma unroll
      for (int r = 0; r < kLoraTileRows; ++r) {
        if (r < rows) acc[r] += av * to_float(xt[r * x_stride + c]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kLoraTileRows; ++r) {
    if (r < rows) {
      const float v = warp_sum(acc[r]);
      if (lane == 0) partial[warp][r] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x < rows) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kShrinkWarps; ++w) v += partial[w][threadIdx.x];
    tmp[(tile.row_begin + threadIdx.x) * tmp_stride + col + j] = from_float<T>(v);
  }
}

// grid: (tiles, tables, output columns / kExpandThreads). Thread o adds
// scale * tmp[row, col .. col + rank) · B[o, :] to output column o of every row of the tile.
template <typename T>
__global__ void __launch_bounds__(kExpandThreads)
    lora_expand_kernel(const T* tmp, int64_t tmp_stride, LoraTables tables, LoraOutputs outputs,
                       int32_t max_rank, const StepHeader* step) {
  extern __shared__ float t_s[];  // [row_count][rank], scaled
  const int64_t tile_index = blockIdx.x;
  const int k = blockIdx.y;
  const int64_t o = int64_t{blockIdx.z} * kExpandThreads + threadIdx.x;
  if (tile_index >= step->num_lora_tiles) return;
  const LoraTile tile = step_array<LoraTile>(step, step->lora_tiles)[tile_index];
  const DeviceLoraSlice sl = slice_of(step, tables.id[k], tile.segment);
  const int rank = sl.rank;
  const int64_t cols = outputs.cols[k];
  // rank > max_rank would overrun t_s; the host sizes max_rank from the same slices.
  if (rank <= 0 || rank > max_rank || int64_t{blockIdx.z} * kExpandThreads >= cols) return;
  const int col = tmp_column(step, tables, k, tile.segment);
  for (int i = threadIdx.x; i < tile.row_count * rank; i += blockDim.x) {
    const int r = i / rank, jj = i % rank;
    t_s[i] = to_float(tmp[(tile.row_begin + r) * tmp_stride + col + jj]) * sl.scale;
  }
  __syncthreads();
  if (o >= cols) return;
  const T* b = static_cast<const T*>(sl.b) + o * rank;
  float acc[kLoraTileRows];
#pragma unroll
  for (int r = 0; r < kLoraTileRows; ++r) acc[r] = 0.0f;
  int jj = 0;
  if (rank % 8 == 0 && aligned16(b)) {  // the thread's row of B, 16 bytes a load
    for (; jj < rank; jj += 8) {
      float bv[8];
      load8(b + jj, bv);
#pragma unroll
      for (int r = 0; r < kLoraTileRows; ++r) {
        if (r < tile.row_count) {
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r] += t_s[r * rank + jj + e] * bv[e];
        }
      }
    }
  }
  for (; jj < rank; ++jj) {
    const float bv = to_float(b[jj]);
#pragma unroll
    for (int r = 0; r < kLoraTileRows; ++r) {
      if (r < tile.row_count) acc[r] += t_s[r * rank + jj] * bv;
    }
  }
  T* y = static_cast<T*>(outputs.data[k]);
  const int64_t stride = outputs.stride[k];
#pragma unroll
  for (int r = 0; r < kLoraTileRows; ++r) {
    if (r < tile.row_count) {
      T& dst = y[(tile.row_begin + r) * stride + o];
      dst = from_float<T>(to_float(dst) + acc[r]);
    }
  }
}

Launch check_tables(const LoraTables& tables, int32_t max_rank) {
  if (tables.count < 1 || tables.count > kMaxLoraTables)
    return refuse("lora: between 1 and 8 tables per call");
  if (max_rank < 0 || max_rank > kMaxRank) return refuse("lora: max_rank above kMaxLoraRank");
  return {};
}

}  // namespace

// launchers

Launch lora_shrink(DType dtype, const void* x, int64_t x_stride, int64_t in,
                   const LoraTables& tables, int32_t max_rank, const StepHeader* step,
                   int64_t max_tiles, void* tmp, int64_t tmp_stride, cudaStream_t stream) {
  Launch l = check_tables(tables, max_rank);
  if (!l.ok()) return l;
  if (in <= 0 || x_stride < in) return refuse("lora_shrink: bad shape");
  if (max_tiles <= 0 || max_rank == 0) return {};
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(max_tiles), static_cast<unsigned>(tables.count),
                    static_cast<unsigned>(max_rank));
    return launch(lora_shrink_kernel<T>, grid, kShrinkWarps * 32, 0, stream,
                  static_cast<const T*>(x), x_stride, in, tables, step, static_cast<T*>(tmp),
                  tmp_stride);
  });
}

Launch lora_expand(DType dtype, const void* tmp, int64_t tmp_stride, const LoraTables& tables,
                   const LoraOutputs& outputs, int32_t max_rank, const StepHeader* step,
                   int64_t max_tiles, cudaStream_t stream) {
  Launch l = check_tables(tables, max_rank);
  if (!l.ok()) return l;
  int64_t max_cols = 0;
  for (int k = 0; k < tables.count; ++k) {
    if (outputs.data[k] == nullptr || outputs.cols[k] <= 0 || outputs.stride[k] < outputs.cols[k])
      return refuse("lora_expand: bad output");
    max_cols = max_cols > outputs.cols[k] ? max_cols : outputs.cols[k];
  }
  if (max_tiles <= 0 || max_rank == 0) return {};
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(max_tiles), static_cast<unsigned>(tables.count),
                    static_cast<unsigned>((max_cols + kExpandThreads - 1) / kExpandThreads));
    const size_t smem = static_cast<size_t>(kLoraTileRows) * max_rank * sizeof(float);
    return launch(lora_expand_kernel<T>, grid, kExpandThreads, smem, stream,
                  static_cast<const T*>(tmp), tmp_stride, tables, outputs, max_rank, step);
  });
}

}  // namespace loraserve::kernels::cuda
