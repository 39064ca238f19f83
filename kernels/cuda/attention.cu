// Attention over the paged KV cache, for decode rows and prefill chunks alike (GQA): one block
// serves the query heads of one KV head for a tile of consecutive rows of one sequence, walking
// a share of that sequence's context in chunks of 32 tokens read straight from the cache, with an
// online softmax (flash-decoding). When the context is split over several blocks, each writes
// its partial (max, sum, unnormalised output) and a second kernel combines them.
#include <cuda_pipeline.h>

#include <cstdint>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kCombineThreads = 512;  // a batch-1 tile's 4 x 128 outputs, one per thread
constexpr int kChunk = 32;            // context tokens a warp takes at a time: one per lane
constexpr int kGroupQueries = 4;      // queries of one warp
constexpr int kUnitBatch = 8;         // 16-byte pieces of a K row loaded before they are used
// Splits of one tile's context; combine_splits_kernel keeps a weight per (query, split) in shared
// memory: 16 x 512 floats = 32 KiB, under the 48 KiB a launch may take without opting in.
constexpr int kMaxSplits = 512;
// The kernel is built for two ceilings on head_dim, 128 and kMaxHeadDim, so that heads of 128
// and less do not hold the registers of 256-wide ones.
constexpr int kSmallHeadDim = 128;
// A lane's output dimensions, two at a time, for heads of at most D.
template <int D>
__host__ __device__ constexpr int pairs_per_lane() {
  return D / 64;
}

__host__ __device__ inline int padded8(int head_dim) { return (head_dim + 7) / 8 * 8; }

// Floats per softmax state, a split's partial result or a warp's final state: the head's
// unnormalised output, then its running max and sum.
__host__ __device__ inline int64_t partial_floats(int head_dim) { return head_dim + 2; }

// Shared memory of one block, in bytes: first the queries ([kAttentionMaxQueries][padded8]
// floats, pre-scaled, zero-padded), a region the warps' final states ([kWarps][kGroupQueries]
// [partial_floats] floats) reuse once every warp is done; then each warp's weights of its chunk
// ([kChunk][kGroupQueries] floats), its chunk's cache slots ([kChunk] int64) and its chunk's V
// rows ([kChunk][padded8] in the cache's 16-bit type).
__host__ __device__ inline int64_t states_offset_bytes(int head_dim) {
  const int64_t queries = int64_t{kAttentionMaxQueries} * padded8(head_dim) * 4;
  const int64_t states = int64_t{kWarps} * kGroupQueries * partial_floats(head_dim) * 4;
  return ((queries > states ? queries : states) + 15) / 16 * 16;
}
size_t attention_smem_bytes(int head_dim) {
  return static_cast<size_t>(states_offset_bytes(head_dim)) +
         static_cast<size_t>(kWarps) * kChunk * (kGroupQueries * 4 + 8 + 2 * padded8(head_dim));
}

__device__ inline float* partial_at(float* scratch, int64_t tile, int kv_head, int split, int query,
                                    const AttentionDims& d) {
  const int64_t index =
      ((tile * d.num_kv_heads + kv_head) * d.splits + split) * kAttentionMaxQueries + query;
  return scratch + index * partial_floats(d.head_dim);
}

__device__ __forceinline__ float2 to_float2(const __nv_bfloat16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}
__device__ __forceinline__ float2 to_float2(const __half* p) {
  return __half22float2(*reinterpret_cast<const __half2*>(p));
}

// Where one context token of the tile's sequence lives, or -1 (past the context, or a slot the
// host has validated never to be read: never read past the cache).
__device__ __forceinline__ int64_t token_slot(const int32_t* table, int token, int ctx,
                                              const AttentionDims& dims, int64_t num_slots) {
  if (token >= ctx) return -1;
  const int64_t block = table[token / dims.block_size];
  const int64_t slot = block * dims.block_size + token % dims.block_size;
  return block >= 0 && slot < num_slots ? slot : -1;
}

// kernels

// grid: (tiles, KV heads, splits); kThreads threads; head_dim at most D.
//
// The tile's queries (at most 16) are cut into groups of four; each group goes to
// kWarps / groups warps (streams), which take turns over the split's chunks of 32 context
// tokens, each warp with its own online softmax. Per chunk, the warp first starts asynchronous
// copies of the chunk's V rows into its own shared memory (cp.async, 16 bytes each); lane t then
// scores token t against the warp's queries, its K row read straight from the cache 16 bytes at a
// time (each K element converted once for four queries); then, for each token of the chunk,
// every lane reads two elements of the staged V row per pair of output dimensions it owns and
// accumulates them for the four queries. No block barrier inside the loop: the warps meet once
// at the end, where each group's streams are merged (the split combine's arithmetic) into the
// output or the split's partial. Scores sum in the order of a plain loop over the dimensions, in
// f32. Caches a 16-byte load cannot read (head_dim not a multiple of 8, unaligned) take the same
// steps an element or a pair at a time.
//
// On an H200 (Nsight Compute, 8B shapes, 512 tokens of context): 102 us a layer at batch 64,
// where a warp per query over K and V chunks staged in shared memory by the whole block took
// 200-220 us (issue-bound: 3,500 instructions per warp and chunk), and this kernel with V read
// from global memory in its value loop 164 us. At batch 1 (33 splits of one chunk or none) 25 us,
// against 17 us for the block-staged kernel: one warp of the block works.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    paged_attention_kernel(const T* q, int64_t q_stride, const T* k_cache, const T* v_cache,
                           int64_t cache_stride, int64_t num_slots, AttentionDims dims,
                           const StepHeader* step, float* scratch, T* out, int64_t out_stride) {
  extern __shared__ uint4 smem_units[];  // 16-byte aligned
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

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int q_row = padded8(hd);
  float* q_s = reinterpret_cast<float*>(smem_units);  // [kAttentionMaxQueries][q_row]
  char* per_warp = reinterpret_cast<char*>(smem_units) + states_offset_bytes(hd);
  float* w_s = reinterpret_cast<float*>(per_warp) + warp * kChunk * kGroupQueries;
  int64_t* slot_s =
      reinterpret_cast<int64_t*>(per_warp + kWarps * kChunk * kGroupQueries * 4) + warp * kChunk;
  T* v_s = reinterpret_cast<T*>(per_warp + kWarps * kChunk * (kGroupQueries * 4 + 8)) +
           warp * kChunk * padded8(hd);

  int ctx = 0;  // tokens the tile's last row sees
  for (int r = 0; r < tile.row_count; ++r) ctx = max(ctx, positions[tile.row_begin + r] + 1);
  const int num_chunks = (ctx + kChunk - 1) / kChunk;
  const int per_split = (num_chunks + dims.splits - 1) / dims.splits;
  const int chunk_begin = split * per_split;
  const int chunk_end = min(num_chunks, chunk_begin + per_split);

  // Query qi is head kv_head * group + qi % group of row tile.row_begin + qi / group.
  for (int i = threadIdx.x; i < num_queries * q_row; i += blockDim.x) {
    const int qi = i / q_row, d = i % q_row;
    const int64_t row = tile.row_begin + qi / group;
    const int64_t head = int64_t{kv_head} * group + qi % group;
    q_s[i] = d < hd ? to_float(q[row * q_stride + head * hd + d]) * dims.scale : 0.0f;
  }
  __syncthreads();

  // This warp's queries q0 .. q0 + nq - 1, and its stream among the warps of that group.
  const int groups = (num_queries + kGroupQueries - 1) / kGroupQueries;
  const int streams = kWarps / groups;
  const int stream = warp / groups;
  const bool active = stream < streams;  // with 3 groups, the fourth warp idles
  const int q0 = (warp % groups) * kGroupQueries;
  const int nq = min(kGroupQueries, num_queries - q0);

  constexpr int kPairs = pairs_per_lane<D>();
  const int pairs = (hd + 1) / 2;
  float m[kGroupQueries], l[kGroupQueries], acc[kGroupQueries][2 * kPairs];
  int last[kGroupQueries];  // the query's own position: the last token it may see
#pragma unroll
  for (int j = 0; j < kGroupQueries; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.0f;
#pragma unroll
    for (int e = 0; e < 2 * kPairs; ++e) acc[j][e] = 0.0f;
    last[j] = j < nq ? positions[tile.row_begin + (q0 + j) / group] : -1;
  }

  const int64_t head_offset = int64_t{kv_head} * hd;
  const bool vector_k = hd % 8 == 0 && cache_stride % 8 == 0 && aligned16(k_cache);
  // V rows copied into shared memory 16 bytes at a time, asynchronously, while K is scored.
  const bool staged_v = hd % 8 == 0 && cache_stride % 8 == 0 && aligned16(v_cache);
  // V read two elements at a time (staged rows always can be: staged_v implies pair_v).
  const bool pair_v =
      hd % 2 == 0 && cache_stride % 2 == 0 && (reinterpret_cast<uintptr_t>(v_cache) & 3) == 0;
  const int units = hd / 8;
  for (int c = chunk_begin + stream; active && c < chunk_end; c += streams) {
    const int t0 = c * kChunk;
    const int64_t my_slot = token_slot(table, t0 + lane, ctx, dims, num_slots);
    slot_s[lane] = my_slot;
    if (staged_v) {
      __syncwarp();  // every lane's slot is in slot_s
      for (int t = 0; t < kChunk; ++t) {
        const int64_t slot = slot_s[t];
        for (int u = lane; slot >= 0 && u < units; u += 32) {
          __pipeline_memcpy_async(v_s + t * hd + 8 * u,
                                  v_cache + slot * cache_stride + head_offset + 8 * u, 16);
        }
      }
      __pipeline_commit();
    }

    // Scores of lane t's token (zero for a slot that is not read, as a zero K row would give).
    float dot[kGroupQueries];
#pragma unroll
    for (int j = 0; j < kGroupQueries; ++j) dot[j] = 0.0f;
    if (my_slot >= 0) {
      const T* krow = k_cache + my_slot * cache_stride + head_offset;
      if (vector_k) {
        for (int u0 = 0; u0 < units; u0 += kUnitBatch) {
          uint4 raw[kUnitBatch];
#pragma unroll
          for (int b = 0; b < kUnitBatch; ++b) {
            if (u0 + b < units) raw[b] = *reinterpret_cast<const uint4*>(krow + 8 * (u0 + b));
          }
#pragma unroll
          for (int b = 0; b < kUnitBatch; ++b) {
            if (u0 + b < units) {
              const T* kv = reinterpret_cast<const T*>(&raw[b]);
              float kf[8];
#pragma unroll
              for (int e = 0; e < 8; ++e) kf[e] = to_float(kv[e]);
#pragma unroll
              for (int j = 0; j < kGroupQueries; ++j) {
                if (j < nq) {
                  const float4* qp =
                      reinterpret_cast<const float4*>(q_s + (q0 + j) * q_row + 8 * (u0 + b));
                  const float4 a = qp[0], c4 = qp[1];
                  dot[j] += a.x * kf[0];
                  dot[j] += a.y * kf[1];
                  dot[j] += a.z * kf[2];
                  dot[j] += a.w * kf[3];
                  dot[j] += c4.x * kf[4];
                  dot[j] += c4.y * kf[5];
                  dot[j] += c4.z * kf[6];
                  dot[j] += c4.w * kf[7];
                }
              }
            }
          }
        }
      } else {
        for (int d = 0; d < hd; ++d) {
          const float kf = to_float(krow[d]);
#pragma unroll
          for (int j = 0; j < kGroupQueries; ++j) {
            if (j < nq) dot[j] += q_s[(q0 + j) * q_row + d] * kf;
          }
        }
      }
    }

    // Online softmax per query; the chunk's weights go to shared memory for the value pass.
#pragma unroll
    for (int j = 0; j < kGroupQueries; ++j) {
      float p = 0.0f;
      if (j < nq) {
        const bool visible = t0 + lane <= last[j];
        const float s = visible ? dot[j] : -INFINITY;
        const float m_new = fmaxf(m[j], warp_max(s));
        if (m_new != -INFINITY) {  // else nothing visible yet: the state stays empty
          p = visible ? expf(s - m_new) : 0.0f;
          const float correction = expf(m[j] - m_new);
          l[j] = l[j] * correction + warp_sum(p);
#pragma unroll
          for (int e = 0; e < 2 * kPairs; ++e) acc[j][e] *= correction;
          m[j] = m_new;
        }
      }
      w_s[lane * kGroupQueries + j] = p;
    }
    if (staged_v) __pipeline_wait_prior(0);
    __syncwarp();  // the weights and the staged V rows are visible to the warp

    // Values: every token of the chunk whose slot is read (others add nothing).
#pragma unroll 4
    for (int t = 0; t < kChunk; ++t) {
      const int64_t slot = slot_s[t];
      if (slot < 0) continue;
      const float4 w = *reinterpret_cast<const float4*>(w_s + t * kGroupQueries);
      const T* vrow = staged_v ? v_s + t * hd : v_cache + slot * cache_stride + head_offset;
#pragma unroll
      for (int e = 0; e < kPairs; ++e) {
        const int pair = lane + 32 * e;
        if (pair < pairs) {
          float2 v;
          if (pair_v) {
            v = to_float2(vrow + 2 * pair);
          } else {
            v.x = to_float(vrow[2 * pair]);
            v.y = 2 * pair + 1 < hd ? to_float(vrow[2 * pair + 1]) : 0.0f;
          }
          acc[0][2 * e] += w.x * v.x;
          acc[0][2 * e + 1] += w.x * v.y;
          acc[1][2 * e] += w.y * v.x;
          acc[1][2 * e + 1] += w.y * v.y;
          acc[2][2 * e] += w.z * v.x;
          acc[2][2 * e + 1] += w.z * v.y;
          acc[3][2 * e] += w.w * v.x;
          acc[3][2 * e + 1] += w.w * v.y;
        }
      }
    }
    __syncwarp();  // the next chunk rewrites w_s, slot_s and v_s
  }

  // Merge each group's streams: state (m, l, acc) of query j of warp w at
  // states[(w * kGroupQueries + j) * partial_floats(hd)]: acc[0, hd), m, l, as a partial.
  __syncthreads();  // every warp is done with the queries: their region holds the states
  float* states = reinterpret_cast<float*>(smem_units);
  const int state_row = static_cast<int>(partial_floats(hd));
  if (active) {
#pragma unroll
    for (int j = 0; j < kGroupQueries; ++j) {
      if (j >= nq) continue;
      float* st = states + (warp * kGroupQueries + j) * state_row;
#pragma unroll
      for (int e = 0; e < 2 * kPairs; ++e) {
        const int d = 2 * (lane + 32 * (e / 2)) + e % 2;
        if (d < hd) st[d] = acc[j][e];
      }
      if (lane == 0) {
        st[hd] = m[j];
        st[hd + 1] = l[j];
      }
    }
  }
  __syncthreads();
  if (!active || stream != 0) return;
#pragma unroll
  for (int j = 0; j < kGroupQueries; ++j) {
    if (j >= nq) continue;
    const int qi = q0 + j;
    float mx = -INFINITY;
#pragma unroll
    for (int s = 0; s < kWarps; ++s) {
      if (s >= streams) continue;
      const float* st = states + ((warp + s * groups) * kGroupQueries + j) * state_row;
      if (st[hd + 1] > 0.0f) mx = fmaxf(mx, st[hd]);
    }
    float weight[kWarps], sum = 0.0f;
#pragma unroll
    for (int s = 0; s < kWarps; ++s) {
      weight[s] = 0.0f;
      if (s < streams) {
        const float* st = states + ((warp + s * groups) * kGroupQueries + j) * state_row;
        if (st[hd + 1] > 0.0f) weight[s] = expf(st[hd] - mx);
        sum += st[hd + 1] * weight[s];
      }
    }
    const int64_t row = tile.row_begin + qi / group;
    const int64_t head = int64_t{kv_head} * group + qi % group;
    float* part =
        dims.splits == 1 ? nullptr : partial_at(scratch, tile_index, kv_head, split, qi, dims);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int d = lane; d < hd; d += 32) {
      float a = 0.0f;
#pragma unroll
      for (int s = 0; s < kWarps; ++s) {
        if (s < streams)
          a += states[((warp + s * groups) * kGroupQueries + j) * state_row + d] * weight[s];
      }
      if (part == nullptr) {
        out[row * out_stride + head * hd + d] = from_float<T>(a * inv);
      } else {
        part[d] = a;
      }
    }
    if (part != nullptr && lane == 0) {
      part[hd] = mx;
      part[hd + 1] = sum;
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
  const int small = static_cast<int>(attention_smem_bytes(kSmallHeadDim));
  const int large = static_cast<int>(attention_smem_bytes(kMaxHeadDim));
  const cudaFuncAttribute attr = cudaFuncAttributeMaxDynamicSharedMemorySize;
  for (const cudaError_t e :
       {cudaFuncSetAttribute(paged_attention_kernel<__nv_bfloat16, kSmallHeadDim>, attr, small),
        cudaFuncSetAttribute(paged_attention_kernel<__half, kSmallHeadDim>, attr, small),
        cudaFuncSetAttribute(paged_attention_kernel<__nv_bfloat16, kMaxHeadDim>, attr, large),
        cudaFuncSetAttribute(paged_attention_kernel<__half, kMaxHeadDim>, attr, large)}) {
    if (e != cudaSuccess) return Launch{nullptr, e};
  }
  return {};
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
    auto* kernel = dims.head_dim <= kSmallHeadDim ? paged_attention_kernel<T, kSmallHeadDim>
                                                  : paged_attention_kernel<T, kMaxHeadDim>;
    Launch l = launch(kernel, grid, kThreads, attention_smem_bytes(dims.head_dim), stream,
                      static_cast<const T*>(q), q_stride, static_cast<const T*>(k_cache),
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
