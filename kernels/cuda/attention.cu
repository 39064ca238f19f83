// Attention over the paged KV cache, for decode rows and prefill chunks alike (GQA): one block
// serves the query heads of one KV head for a tile of consecutive rows of one sequence, walking
// a share of that sequence's context in chunks of 32 tokens staged in shared memory, with an
// online softmax (flash-decoding). When the context is split over several blocks, each writes
// its partial (max, sum, unnormalised output) and a second kernel combines them.
#include <cstdint>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kCombineThreads = 512;  // a batch-1 tile's 4 x 128 outputs, one per thread
constexpr int kChunk = 32;            // context tokens per shared-memory chunk: one per lane
constexpr int kDimsPerLane = kMaxHeadDim / 32;
constexpr int kQueriesPerWarp = kAttentionMaxQueries / kWarps;
// Splits of one tile's context; combine_splits_kernel keeps a weight per (query, split) in shared
// memory: 16 x 512 floats = 32 KiB, under the 48 KiB a launch may take without opting in.
constexpr int kMaxSplits = 512;

// Shared memory of one block: queries (pre-scaled), a K chunk (rows padded by one float so that
// lanes reading different tokens hit different banks) and a V chunk.
size_t attention_smem_bytes(int head_dim) {
  return static_cast<size_t>(kAttentionMaxQueries * head_dim + kChunk * (head_dim + 1) +
                             kChunk * head_dim) *
         sizeof(float);
}

// Floats per partial result: the head's output, then its running max and sum.
__host__ __device__ inline int64_t partial_floats(int head_dim) { return head_dim + 2; }

__device__ inline float* partial_at(float* scratch, int64_t tile, int kv_head, int split, int query,
                                    const AttentionDims& d) {
  const int64_t index =
      ((tile * d.num_kv_heads + kv_head) * d.splits + split) * kAttentionMaxQueries + query;
  return scratch + index * partial_floats(d.head_dim);
}

// kernels

template <typename T>
__global__ void __launch_bounds__(kThreads)
    paged_attention_kernel(const T* q, int64_t q_stride, const T* k_cache, const T* v_cache,
                           int64_t cache_stride, int64_t num_slots, AttentionDims dims,
                           const StepHeader* step, float* scratch, T* out, int64_t out_stride) {
  extern __shared__ float smem[];
  const int hd = dims.head_dim;
  const int group = dims.num_heads / dims.num_kv_heads;
  const int64_t tile_index = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int split = blockIdx.z;
  const int set = attention_tile_set(dims.rows_per_tile);
  if (tile_index >= step->num_attention_tiles[set]) return;
  const AttentionTile tile =
      step_array<AttentionTile>(step, step->attention_tiles[set])[tile_index];
  const int32_t* positions = step_array<int32_t>(step, step->positions);
  const int32_t seq = step_array<int32_t>(step, step->row_seq)[tile.row_begin];
  const int32_t* table =
      step_array<int32_t>(step, step->block_tables) + int64_t{seq} * step->block_table_stride;
  const int num_queries = tile.row_count * group;

  float* q_s = smem;                             // [kAttentionMaxQueries][hd]
  float* k_s = q_s + kAttentionMaxQueries * hd;  // [kChunk][hd + 1]
  float* v_s = k_s + kChunk * (hd + 1);          // [kChunk][hd]

  int ctx = 0;  // tokens the tile's last row sees
  for (int r = 0; r < tile.row_count; ++r) ctx = max(ctx, positions[tile.row_begin + r] + 1);
  const int num_chunks = (ctx + kChunk - 1) / kChunk;
  const int per_split = (num_chunks + dims.splits - 1) / dims.splits;
  const int chunk_begin = split * per_split;
  const int chunk_end = min(num_chunks, chunk_begin + per_split);

  // Query qi is head kv_head * group + qi % group of row tile.row_begin + qi / group.
  for (int i = threadIdx.x; i < num_queries * hd; i += blockDim.x) {
    const int qi = i / hd, d = i % hd;
    const int64_t row = tile.row_begin + qi / group;
    const int64_t head = int64_t{kv_head} * group + qi % group;
    q_s[qi * hd + d] = to_float(q[row * q_stride + head * hd + d]) * dims.scale;
  }

  const bool vector_loads =
      hd % 8 == 0 && cache_stride % 8 == 0 && aligned16(k_cache) && aligned16(v_cache);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float m[kQueriesPerWarp], l[kQueriesPerWarp], acc[kQueriesPerWarp][kDimsPerLane];
  int last[kQueriesPerWarp];  // the query's own position: the last token it may see
#pragma unroll
  for (int j = 0; j < kQueriesPerWarp; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.0f;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) acc[j][e] = 0.0f;
    const int qi = warp + j * kWarps;
    last[j] = qi < num_queries ? positions[tile.row_begin + qi / group] : -1;
  }
  __syncthreads();

  for (int c = chunk_begin; c < chunk_end; ++c) {
    const int t0 = c * kChunk;
    // Stage the chunk's K and V: eight elements per 16-byte load when the cache allows it.
    const int per_load = vector_loads ? 8 : 1;
    const int loads_per_token = hd / per_load;
    for (int i = threadIdx.x; i < kChunk * loads_per_token; i += blockDim.x) {
      const int t = i / loads_per_token, d0 = (i % loads_per_token) * per_load;
      const int token = t0 + t;
      float kv[8] = {}, vv[8] = {};
      if (token < ctx) {
        const int64_t block = table[token / dims.block_size];
        const int64_t slot = block * dims.block_size + token % dims.block_size;
        if (block >= 0 && slot < num_slots) {  // validated on the host; never read past the cache
          const int64_t off = slot * cache_stride + int64_t{kv_head} * hd + d0;
          if (vector_loads) {
            load8(k_cache + off, kv);
            load8(v_cache + off, vv);
          } else {
            kv[0] = to_float(k_cache[off]);
            vv[0] = to_float(v_cache[off]);
          }
        }
      }
      for (int e = 0; e < per_load; ++e) {
        k_s[t * (hd + 1) + d0 + e] = kv[e];
        v_s[t * hd + d0 + e] = vv[e];
      }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kQueriesPerWarp; ++j) {
      const int qi = warp + j * kWarps;
      if (qi < num_queries) {
        const int token = t0 + lane;
        const bool visible = token <= last[j];
        float s = -INFINITY;
        if (visible) {
          const float* qv = q_s + qi * hd;
          const float* kv = k_s + lane * (hd + 1);
          float dot = 0.0f;
          for (int d = 0; d < hd; ++d) dot += qv[d] * kv[d];
          s = dot;
        }
        const float m_new = fmaxf(m[j], warp_max(s));
        if (m_new != -INFINITY) {  // else nothing visible yet: the state stays empty
          const float p = visible ? expf(s - m_new) : 0.0f;
          const float correction = expf(m[j] - m_new);
          l[j] = l[j] * correction + warp_sum(p);
#pragma unroll
          for (int e = 0; e < kDimsPerLane; ++e) acc[j][e] *= correction;
          for (int t = 0; t < kChunk; ++t) {
            const float pt = __shfl_sync(0xffffffffu, p, t);
            if (pt == 0.0f) continue;
            const float* vrow = v_s + t * hd;
#pragma unroll
            for (int e = 0; e < kDimsPerLane; ++e) {
              const int d = lane + 32 * e;
              if (d < hd) acc[j][e] += pt * vrow[d];
            }
          }
          m[j] = m_new;
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int j = 0; j < kQueriesPerWarp; ++j) {
    const int qi = warp + j * kWarps;
    if (qi >= num_queries) continue;
    if (dims.splits == 1) {
      const int64_t row = tile.row_begin + qi / group;
      const int64_t head = int64_t{kv_head} * group + qi % group;
      const float inv = l[j] > 0.0f ? 1.0f / l[j] : 0.0f;
#pragma unroll
      for (int e = 0; e < kDimsPerLane; ++e) {
        const int d = lane + 32 * e;
        if (d < hd) out[row * out_stride + head * hd + d] = from_float<T>(acc[j][e] * inv);
      }
    } else {
      float* part = partial_at(scratch, tile_index, kv_head, split, qi, dims);
#pragma unroll
      for (int e = 0; e < kDimsPerLane; ++e) {
        const int d = lane + 32 * e;
        if (d < hd) part[d] = acc[j][e];
      }
      if (lane == 0) {
        part[hd] = m[j];
        part[hd + 1] = l[j];
      }
    }
  }
}

// One block per (tile, KV head): merges the splits' partials into the output. A warp per query
// reduces its splits' maxima and sums across its lanes and leaves each split's weight
// exp(m_s - m) / sum in shared memory ([kAttentionMaxQueries][splits]); then a thread per
// (query, dimension) sums the weighted partial outputs. (A thread per query walking every split
// twice took 33 us a layer at batch 1 on an H200, twice the attention itself.)
template <typename T>
__global__ void __launch_bounds__(kCombineThreads)
    combine_splits_kernel(AttentionDims dims, const StepHeader* step, float* scratch, T* out,
                          int64_t out_stride) {
  extern __shared__ float weight_s[];  // [kAttentionMaxQueries][dims.splits]
  const int64_t tile_index = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int set = attention_tile_set(dims.rows_per_tile);
  if (tile_index >= step->num_attention_tiles[set]) return;
  const AttentionTile tile =
      step_array<AttentionTile>(step, step->attention_tiles[set])[tile_index];
  const int hd = dims.head_dim;
  const int group = dims.num_heads / dims.num_kv_heads;
  const int num_queries = tile.row_count * group;
  const int splits = dims.splits;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int qi = warp; qi < num_queries; qi += kCombineThreads / 32) {
    float mx = -INFINITY;
    for (int s = lane; s < splits; s += 32) {
      const float* part = partial_at(scratch, tile_index, kv_head, s, qi, dims);
      if (part[hd + 1] > 0.0f) mx = fmaxf(mx, part[hd]);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int s = lane; s < splits; s += 32) {
      const float* part = partial_at(scratch, tile_index, kv_head, s, qi, dims);
      const float w = part[hd + 1] > 0.0f ? expf(part[hd] - mx) : 0.0f;
      weight_s[qi * splits + s] = w;
      sum += part[hd + 1] * w;
    }
    sum = warp_sum(sum);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    __syncwarp();
    for (int s = lane; s < splits; s += 32) weight_s[qi * splits + s] *= inv;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < num_queries * hd; i += blockDim.x) {
    const int qi = i / hd, d = i % hd;
    const float* w = weight_s + qi * splits;
    // Every split's block wrote its partial (zeros, weight 0, when its share of the context was
    // empty), so the loads need no branch and eight can be in flight.
    float a = 0.0f;
#pragma unroll 8
    for (int s = 0; s < splits; ++s)
      a += partial_at(scratch, tile_index, kv_head, s, qi, dims)[d] * w[s];
    const int64_t row = tile.row_begin + qi / group;
    const int64_t head = int64_t{kv_head} * group + qi % group;
    out[row * out_stride + head * hd + d] = from_float<T>(a);
  }
}

}  // namespace

// launchers

Launch prepare_kernels() {
  const int bytes = static_cast<int>(attention_smem_bytes(kMaxHeadDim));
  cudaError_t e = cudaFuncSetAttribute(paged_attention_kernel<__nv_bfloat16>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) {
    e = cudaFuncSetAttribute(paged_attention_kernel<__half>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  }
  return Launch{nullptr, e};
}

size_t attention_scratch_floats(int64_t max_tiles, const AttentionDims& dims) {
  if (dims.splits <= 1) return 0;
  return static_cast<size_t>(max_tiles * dims.num_kv_heads * dims.splits * kAttentionMaxQueries *
                             partial_floats(dims.head_dim));
}

Launch paged_attention(DType dtype, const void* q, int64_t q_stride, const void* k_cache,
                       const void* v_cache, int64_t cache_stride, int64_t num_slots,
                       const AttentionDims& dims, const StepHeader* step, int64_t max_tiles,
                       float* scratch, void* out, int64_t out_stride, cudaStream_t stream) {
  if (dims.num_heads <= 0 || dims.num_kv_heads <= 0 || dims.num_heads % dims.num_kv_heads != 0)
    return refuse("attention: num_heads must be a positive multiple of num_kv_heads");
  const int group = dims.num_heads / dims.num_kv_heads;
  if (dims.head_dim <= 0 || dims.head_dim > kMaxHeadDim)
    return refuse("attention: head_dim must be in [1, 256]");
  if (dims.rows_per_tile != attention_rows_per_tile(group))
    return refuse("attention: rows_per_tile must be attention_rows_per_tile(group)");
  if (dims.block_size <= 0) return refuse("attention: block_size must be positive");
  if (dims.splits < 1 || dims.splits > kMaxSplits) return refuse("attention: splits out of range");
  if (dims.splits > 1 && scratch == nullptr) return refuse("attention: splits need scratch");
  const int64_t width = int64_t{dims.num_heads} * dims.head_dim;
  const int64_t kv_width = int64_t{dims.num_kv_heads} * dims.head_dim;
  if (q_stride < width || out_stride < width || cache_stride < kv_width)
    return refuse("attention: strides narrower than the heads");
  if (max_tiles <= 0) return {};
  return dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(max_tiles), static_cast<unsigned>(dims.num_kv_heads),
                    static_cast<unsigned>(dims.splits));
    Launch l =
        launch(paged_attention_kernel<T>, grid, kThreads, attention_smem_bytes(dims.head_dim),
               stream, static_cast<const T*>(q), q_stride, static_cast<const T*>(k_cache),
               static_cast<const T*>(v_cache), cache_stride, num_slots, dims, step, scratch,
               static_cast<T*>(out), out_stride);
    if (!l.ok() || dims.splits == 1) return l;
    const dim3 combine_grid(static_cast<unsigned>(max_tiles),
                            static_cast<unsigned>(dims.num_kv_heads));
    const size_t combine_smem =
        static_cast<size_t>(kAttentionMaxQueries) * dims.splits * sizeof(float);
    return launch(combine_splits_kernel<T>, combine_grid, kCombineThreads, combine_smem, stream,
                  dims, step, scratch, static_cast<T*>(out), out_stride);
  });
}

}  // namespace loraserve::kernels::cuda
