// The launchers of the CUDA backend's own kernels. Each takes plain device pointers, sizes in
// elements (strides are elements between row starts), the compute dtype and a stream; checks its
// preconditions; launches; and reports the launch's error. They know nothing of Tensor or
// Status: the backend (cuda_backend.cpp) validates arguments with full messages first, so a
// refusal here means a bug in the backend, said in words.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "kernels/cuda/step_layout.h"

namespace loraserve::kernels::cuda {

// What a launcher reports: launched, or the precondition it refused, or the CUDA error.
struct Launch {
  const char* refused = nullptr;  // a violated precondition, in words
  cudaError_t error = cudaSuccess;
  bool ok() const { return refused == nullptr && error == cudaSuccess; }
};

// Largest head_dim the attention kernel serves, and most query heads per KV head.
inline constexpr int32_t kMaxHeadDim = 256;
inline constexpr int32_t kMaxQueryGroup = kAttentionMaxQueries;
// Most LoRA tables one shrink or expand call handles: the model asks for one LoRA group at a time
// (formats::kMaxLoraGroupSize, q, k and v together; cuda_ops.cpp asserts it fits).
inline constexpr int32_t kMaxLoraTables = 8;
// Largest LoRA rank of one module (the expand kernel stages a tile's rows x rank in shared memory).
inline constexpr int32_t kMaxLoraRank = 512;

// Opts kernels into the shared memory they may need; once per device, never during capture.
Launch prepare_kernels();

// --- elementwise (elementwise.cu)

// dst = src converted, element by element. F32, F16 and BF16 convert into each other; I32 only
// copies to I32.
Launch convert(const void* src, DType src_dtype, int64_t src_stride, void* dst, DType dst_dtype,
               int64_t dst_stride, int64_t rows, int64_t cols, cudaStream_t stream);
// data = uniform [lo, hi) values of a counter-based generator (element (r, c) draws from
// seed and r * cols + c, so the values do not depend on the stride).
Launch fill_uniform(void* data, DType dtype, int64_t rows, int64_t cols, int64_t stride,
                    uint64_t seed, float lo, float hi, cudaStream_t stream);
// *out += the sum of n floats. REQUIRES: n % 4 == 0, data 16-byte aligned, *out on the device.
Launch sum_floats(const float* data, int64_t n, float* out, int sm_count, cudaStream_t stream);
// out[i] = table[token_ids[i]], rows i < rows. table: (vocab, dim).
Launch embedding(DType dtype, const void* table, int64_t table_stride, int64_t vocab, int64_t dim,
                 const StepHeader* step, int64_t rows, void* out, int64_t out_stride,
                 cudaStream_t stream);
// y[r] += bias, bias: (1, cols).
Launch add_bias(DType dtype, void* y, int64_t y_stride, int64_t rows, int64_t cols,
                const void* bias, cudaStream_t stream);
// out = silu(gate_up[:, :f]) * gate_up[:, f:2f].
Launch silu_mul(DType dtype, const void* gate_up, int64_t gate_up_stride, void* out,
                int64_t out_stride, int64_t rows, int64_t f, cudaStream_t stream);
// In place, rotate-half RoPE on `heads` heads of head_dim per row at the step's positions.
// inv_freq: f32 (head_dim / 2).
Launch rope(DType dtype, void* x, int64_t x_stride, int64_t rows, int64_t heads, int64_t head_dim,
            const float* inv_freq, const StepHeader* step, cudaStream_t stream);
// k_cache[slot_mapping[r]] = k[r], likewise v, rows r < rows; slots outside [0, num_slots) are
// skipped (the backend has refused such steps already).
Launch write_kv(DType dtype, const void* k, int64_t k_stride, const void* v, int64_t v_stride,
                int64_t rows, int64_t kv_dim, void* k_cache, int64_t k_cache_stride, void* v_cache,
                int64_t v_cache_stride, int64_t num_slots, const StepHeader* step,
                cudaStream_t stream);
// out[j] = x[logits_rows[j]], j < rows_out.
Launch gather_rows(DType dtype, const void* x, int64_t x_stride, int64_t cols,
                   const StepHeader* step, int64_t rows_out, void* out, int64_t out_stride,
                   cudaStream_t stream);

// --- norms (norm.cu)

// out = x / rms(x) * weight per row; with `residual`: residual += x first, then
// out = residual / rms(residual) * weight. Sums in f32. weight: (1, cols).
Launch rms_norm(DType dtype, const void* x, int64_t x_stride, void* residual,
                int64_t residual_stride, const void* weight, float eps, int64_t rows, int64_t cols,
                void* out, int64_t out_stride, cudaStream_t stream);
// In place, each head_dim-wide head of each row normalised with weight (1, head_dim).
Launch head_rms_norm(DType dtype, void* x, int64_t x_stride, int64_t rows, int64_t heads,
                     int64_t head_dim, const void* weight, float eps, cudaStream_t stream);

// --- attention (attention.cu)

struct AttentionDims {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 0;
  float scale = 0.0f;
  int32_t rows_per_tile = 1;  // attention_rows_per_tile(group): picks the step's tile set
  int32_t splits = 1;         // blocks sharing one tile's context (flash-decoding)
};
// Floats of scratch paged_attention needs for `max_tiles` tiles (0 when splits == 1).
size_t attention_scratch_floats(int64_t max_tiles, const AttentionDims& dims);
// Causal attention over the paged caches for every query row of the step's attention tiles:
// row r attends to positions [0, positions[r]] of its sequence. grid: (max_tiles, kv heads,
// splits); blocks past the tile count of their set return at once.
Launch paged_attention(DType dtype, const void* q, int64_t q_stride, const void* k_cache,
                       const void* v_cache, int64_t cache_stride, int64_t num_slots,
                       const AttentionDims& dims, const StepHeader* step, int64_t max_tiles,
                       float* scratch, void* out, int64_t out_stride, cudaStream_t stream);

// --- LoRA (lora.cu)

struct LoraTables {
  int32_t count = 0;
  int32_t id[kMaxLoraTables] = {};
};
struct LoraOutputs {
  void* data[kMaxLoraTables] = {};
  int64_t stride[kMaxLoraTables] = {};
  int32_t cols[kMaxLoraTables] = {};
};
// Shrink over the step's LoRA tiles: tmp[rows of tile, c_t + j] = x[rows] · A_t[j] for each
// table t and j < rank_t (c_t: summed ranks of the earlier tables of that segment). One-row
// tiles take a BGMV path (one warp per rank row streams A), multi-row tiles an SGMV path (each
// A row read once per tile; the tile's activation rows come from L1/L2). `max_rank`: the
// largest rank among the tables' slices of this step (sizes the grid).
Launch lora_shrink(DType dtype, const void* x, int64_t x_stride, int64_t in,
                   const LoraTables& tables, int32_t max_rank, const StepHeader* step,
                   int64_t max_tiles, void* tmp, int64_t tmp_stride, cudaStream_t stream);
// Expand: outputs[k][rows of tile] += scale · tmp[rows, c_t .. c_t + r_t) · B_tᵀ.
Launch lora_expand(DType dtype, const void* tmp, int64_t tmp_stride, const LoraTables& tables,
                   const LoraOutputs& outputs, int32_t max_rank, const StepHeader* step,
                   int64_t max_tiles, cudaStream_t stream);

// --- sampling (sample.cu)

struct DeviceSampleParams {
  float temperature;
  int32_t top_k;
  float top_p;
  float uniform;
  int32_t num_logprobs;
  // Temperature sampling restricted by top-k or top-p: the draw walks the logit-sorted order.
  // Otherwise a temperature draw walks token-id order, as on the CPU, even when the row is sorted
  // for its top logprobs.
  int32_t filtered;
  int32_t sorted_row;  // index among the rows sorted by logit, or -1 when the row needs no order
};
struct DeviceSampleResult {
  int32_t token_id;
  float logprob;
};
// Bytes of scratch sample_rows needs for `rows` rows of `vocab` logits, `sorted_rows` of them
// sorted.
size_t sample_scratch_bytes(int64_t rows, int64_t sorted_rows, int64_t vocab);
// Picks a token per row of logits (rows, vocab; F32 or the compute dtype) with the CPU
// sampler's semantics (kernels/cpu/cpu_sample.cpp); rows with sorted_row >= 0 (filtered, or
// with top logprobs) are sorted by logit first. top_p <= 0 keeps the single most likely token.
// results[row]; top[row * max_logprobs + j] for j < num_logprobs (token ids in top_ids, logprobs in
// top_logprobs).
Launch sample_rows(DType logits_dtype, const void* logits, int64_t logits_stride, int64_t rows,
                   int64_t vocab, const DeviceSampleParams* params, int64_t sorted_rows,
                   int32_t max_logprobs, void* scratch, size_t scratch_bytes,
                   DeviceSampleResult* results, int32_t* top_ids, float* top_logprobs,
                   cudaStream_t stream);

}  // namespace loraserve::kernels::cuda
