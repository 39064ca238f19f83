// The Backend contract: memory on a device, copies to and from it, and the short list of
// operations a Llama-family forward pass and its LoRA branches need, on plain 2-D views.
// Backends know nothing of models: layers, modules and adapters are indices the engine chose.
// One Backend is used by one thread at a time (the engine's step thread); ops are ordered
// in call order on the backend's own stream, and CopyToHost / Sample / Synchronize wait for them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace loraserve::kernels {

// A 2-D view in backend memory: `rows` × `cols` elements, `stride` elements between row starts.
// An I8 tensor (int8 weights) also points at its scales: row r's elements [g·kI8GroupSize,
// (g+1)·kI8GroupSize) are worth scales[r · scale_stride() + g] times their integer values.
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;
  float* scales = nullptr;  // I8 only

  static Tensor make(void* data, DType dtype, int64_t rows, int64_t cols) {
    return Tensor{data, dtype, rows, cols, cols};
  }
  // Scales per row of an I8 tensor: one per group of the stride.
  int64_t scale_stride() const { return (stride + kI8GroupSize - 1) / kI8GroupSize; }
  // Rows [begin, begin + count).
  Tensor row_slice(int64_t begin, int64_t count) const {
    return Tensor{static_cast<char*>(data) + begin * stride * dtype_size(dtype),
                  dtype,
                  count,
                  cols,
                  stride,
                  scales ? scales + begin * scale_stride() : nullptr};
  }
  // Columns [begin, begin + count); the stride is kept, so the view is not contiguous.
  // REQUIRES: not I8 (its groups would no longer start at column 0).
  Tensor col_slice(int64_t begin, int64_t count) const {
    return Tensor{static_cast<char*>(data) + begin * dtype_size(dtype), dtype, rows, count, stride};
  }
  bool contiguous() const { return stride == cols; }
  size_t bytes() const { return static_cast<size_t>(rows * stride) * dtype_size(dtype); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// Bytes a contiguous (rows, cols) weight of `dtype` takes, scales included (see weight_view).
size_t weight_storage_bytes(DType dtype, int64_t rows, int64_t cols);
// The (rows, cols) weight view of `dtype` laid out at `base` (weight_storage_bytes of memory,
// 64-byte aligned): the elements, then for I8 the scales from the next 64-byte boundary.
Tensor weight_view(void* base, DType dtype, int64_t rows, int64_t cols);

class Backend;

// How much of a backend's available memory an engine may plan to fill. What is left over is
// for what the backend and its libraries allocate on their own (workspaces, graphs, allocator
// slack) and, on the host, for everything else the machine runs.
struct MemoryHeadroom {
  double usable_fraction = 1.0;  // of available_memory(): weights, activations and KV cache
  // Share of the usable memory left after weights and activations that the KV cache takes when
  // its size is not set.
  double default_kv_fraction = 1.0;
};

// Owns one allocation on a backend; frees it on destruction. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* backend, void* data, size_t bytes, bool host = false)
      : backend_(backend), data_(data), bytes_(bytes), host_(host) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Tensor view(DType dtype, int64_t rows, int64_t cols, size_t byte_offset = 0) const {
    return Tensor::make(static_cast<char*>(data_) + byte_offset, dtype, rows, cols);
  }
  void reset();

 private:
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool host_ = false;  // from AllocateHost
};

// One adapter's low-rank pair for one targeted linear layer, resident on the backend.
struct LoraSlice {
  const void* a = nullptr;    // (rank, in), in `dtype`
  const void* b = nullptr;    // (out, rank), in `dtype`
  int32_t rank = 0;           // 0: this adapter does not target this layer; the slice is skipped
  float scale = 0.0f;         // lora_alpha / r (or / sqrt(r) with rsLoRA)
  DType dtype = DType::kF32;  // of a and b: the backend's lora_dtype() for the adapter's file
};

// Rows [row_begin, row_end) of the step share one adapter. Rows outside every segment have none.
struct LoraSegment {
  int32_t row_begin = 0;
  int32_t row_end = 0;
};

// Integer metadata of one step, built on the host by the engine and handed to BeginStep.
struct StepMeta {
  std::vector<int32_t> token_ids;     // [rows] input token of each row
  std::vector<int32_t> positions;     // [rows] absolute position of each row in its sequence
  std::vector<int32_t> slot_mapping;  // [rows] KV-cache slot (block * block_size + offset) to write
  std::vector<int32_t> row_seq;       // [rows] which block table each row reads
  std::vector<int32_t> block_tables;  // [num_seqs * max_blocks_per_seq] block ids, -1 past the end
  int32_t max_blocks_per_seq = 0;
  std::vector<int32_t>
      logits_rows;  // rows whose final hidden state becomes logits, in output order
  std::vector<LoraSegment> lora_segments;
  // lora_slices[table * lora_segments.size() + segment]: the weights of segment's adapter for
  // `table`, an index the engine assigns (for example layer * 7 + module).
  int32_t num_lora_tables = 0;
  std::vector<LoraSlice> lora_slices;

  int32_t num_rows() const { return static_cast<int32_t>(token_ids.size()); }
};

struct AttentionShape {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;  // num_heads is a multiple of it (grouped-query attention)
  int32_t head_dim = 0;
  int32_t block_size = 0;  // KV-cache slots per block
  float scale = 0.0f;      // usually 1 / sqrt(head_dim)
};

// One token's change to the logits a token is picked from, applied as vLLM applies a request's
// logit_bias, repetition penalty and frequency / presence penalties, in that order:
// x = x + bias; x = x > 0 ? x / penalty : x * penalty; x = x - subtract. A bias of -inf masks
// the token (min_tokens). The reported logprobs stay those of the raw logits.
struct LogitEdit {
  int32_t token_id = 0;
  float bias = 0.0f;
  float penalty = 1.0f;  // > 0
  float subtract = 0.0f;
};

// How to pick one token from one row of logits.
struct SampleParams {
  float temperature = 0.0f;  // 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float uniform = 0.0f;      // a draw from U[0, 1) made by the caller's per-request generator
  int32_t num_logprobs = 0;  // how many top alternatives to report (besides the chosen token)
  bool want_logprob = true;  // false (and num_logprobs 0): logprob may be left 0
  // Applied one after the other (a token may appear more than once) to a copy of the row that
  // the token is picked from. Token ids are in [0, vocab). Owned by the caller.
  std::span<const LogitEdit> edits;
  // Only these tokens (in [0, vocab)) can be picked; empty: every token. Owned by the caller.
  std::span<const int32_t> allowed;
  // Temperature sampling keeps only the tokens whose probability (after temperature) is at
  // least min_p times the most likely token's, before top-k and top-p. 0: off.
  float min_p = 0.0f;
};

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token_id = 0;
  // log-softmax of the raw logits (before temperature, top-k, top-p); NaN when the row's logits
  // are not all finite (the engine ends that request with an error), even when not asked for.
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;  // the num_logprobs most likely tokens, most likely first
};

// Each row's allowed tokens and edits are in [0, vocab), and its penalties are positive: what every
// backend's sample() checks before it touches the row.
Status check_sample_params(std::span<const SampleParams> params, int64_t vocab);

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu (2 threads, OpenBLAS)", "cuda:0 NVIDIA H200 (sm_90)".
  virtual std::string describe() const = 0;
  virtual std::string kind() const = 0;  // "cpu" or "cuda"
  // Dtype the weight matrices (embedding, projections, lm_head) are kept in, given the
  // checkpoint's (CPU: F32, BF16 or I8 by --weights-dtype; CUDA: BF16, or F16 for F16).
  virtual DType weight_dtype(DType checkpoint) const = 0;
  // Why weight_dtype(checkpoint) is what it is, in words for the log.
  virtual std::string weight_dtype_reason(DType checkpoint) const;
  // Dtype of activations, the KV cache, and the model's vectors (norm weights and biases).
  virtual DType activation_dtype() const = 0;
  // Dtype an adapter's A and B are kept in, given the dtype of its file's A and B tensors (F32
  // when they differ). CPU: F32 or BF16 by --lora-dtype (auto keeps a BF16 file in BF16, which
  // loses nothing, and holds every other in F32); CUDA: the activation dtype.
  virtual DType lora_dtype(DType file) const {
    (void)file;
    return activation_dtype();
  }
  // Bytes this backend could still allocate for weights and the KV cache.
  virtual size_t available_memory() const = 0;
  // How much of available_memory() the engine may plan for (see MemoryHeadroom).
  virtual MemoryHeadroom memory_headroom() const = 0;
  // True when ops read host memory directly (the CPU backend): adapters then need no device copy.
  virtual bool shares_host_memory() const = 0;

  // --- memory
  virtual Result<DeviceBuffer> allocate(size_t bytes) = 0;
  // Frees what Allocate returned; called by DeviceBuffer.
  virtual void free(void* data) = 0;
  // Host memory the device reads fastest (pinned on GPUs; plain memory on the CPU backend):
  // where adapters wait on the host, and the source of asynchronous uploads.
  virtual Result<DeviceBuffer> allocate_host(size_t bytes) = 0;
  virtual void free_host(void* data) = 0;
  // Copies `n` elements of `src_dtype` from host memory into dst, converting to dst.dtype.
  // REQUIRES: dst is contiguous with rows * cols == n.
  virtual Status copy_to_device(const Tensor& dst, const void* src, DType src_dtype, size_t n) = 0;
  // Starts a copy like CopyToDevice that neither waits for running ops nor makes them wait (its
  // own stream on GPUs), so adapter uploads overlap decoding. `src` must stay valid and `dst`
  // unread until upload_done(ticket). REQUIRES: src_dtype == dst.dtype.
  virtual Result<uint64_t> copy_to_device_async(const Tensor& dst, const void* src, DType src_dtype,
                                                size_t n) = 0;
  // True once the upload has landed, false while it runs; an error when it failed (then `dst`
  // holds nothing usable).
  virtual Result<bool> upload_done(uint64_t ticket) = 0;
  // Copies a tensor into host memory as f32 (rows * cols floats), waiting for pending ops.
  virtual Status copy_to_host(const Tensor& src, float* dst) = 0;
  virtual Status synchronize() = 0;

  // --- ops (all shapes in elements; x, y, out are activation-dtype tensors unless said)
  // Makes `meta` the metadata the following ops read, until the next BeginStep.
  virtual Status begin_step(const StepMeta& meta) = 0;
  // out[i] = table[meta.token_ids[i]]. table: (vocab, dim) in weight dtype.
  virtual Status embedding(const Tensor& table, const Tensor& out) = 0;
  // y = x · wᵀ (+ y when accumulate). x: (n, in), w: (out, in) in weight dtype, y: (n, out).
  virtual Status matmul(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate) = 0;
  // y[i] += bias. bias: (1, cols) in activation dtype.
  virtual Status add_bias(const Tensor& y, const Tensor& bias) = 0;
  // out = x / rms(x) * weight, per row. weight: (1, cols) in activation dtype.
  virtual Status rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) = 0;
  // residual += x; out = rms_norm(residual). The residual add of a layer fused with its norm.
  virtual Status add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight,
                              float eps, const Tensor& out) = 0;
  // In place: every head_dim-wide head of every row of x normalised with weight (1, head_dim).
  virtual Status head_rms_norm(const Tensor& x, int32_t head_dim, const Tensor& weight,
                               float eps) = 0;
  // In place, HF rotate-half RoPE on every head of x at meta.positions. inv_freq: (1, head_dim/2)
  // f32 (frequency scaling already applied).
  virtual Status rope(const Tensor& x, int32_t head_dim, const Tensor& inv_freq) = 0;
  // Writes each row of k and v into cache slots meta.slot_mapping. caches: (slots, kv_dim).
  virtual Status write_kv(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                          const Tensor& v_cache) = 0;
  // Causal attention: row i attends to positions [0, meta.positions[i]] of its sequence, read
  // from the paged caches through meta.block_tables. q, out: (n, num_heads * head_dim).
  virtual Status attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const AttentionShape& shape, const Tensor& out) = 0;
  // out = silu(gate_up[:, :f]) * gate_up[:, f:], f = out.cols.
  virtual Status silu_mul(const Tensor& gate_up, const Tensor& out) = 0;
  // out[j] = x[meta.logits_rows[j]].
  virtual Status gather_logits_rows(const Tensor& x, const Tensor& out) = 0;
  // LoRA shrink over the step's segments: for segment s, tmp[rows of s, c_t .. c_t + r_t) =
  // x[rows of s] · A_tᵀ for each t in `tables`, where c_t is the sum of the ranks of the earlier
  // tables of that segment (no padding between them). tmp: (n, ≥ max summed rank).
  virtual Status lora_shrink(const Tensor& x, std::span<const int32_t> tables,
                             const Tensor& tmp) = 0;
  // LoRA expand: y_t[rows of s] += scale · tmp[rows of s, c_t .. c_t + r_t) · B_tᵀ for each
  // table t, where y_t = outputs[k] for tables[k] (column slices of one output are typical).
  virtual Status lora_expand(const Tensor& tmp, std::span<const int32_t> tables,
                             std::span<const Tensor> outputs) = 0;
  // Picks one token from each row of logits (rows, vocab) as params[row] says.
  virtual Status sample(const Tensor& logits, std::span<const SampleParams> params,
                        std::vector<SampleResult>* results) = 0;
};

struct BackendOptions {
  std::string device = "auto";  // "cpu", "cuda", "cuda:N", "auto" (a GPU when present, else cpu)
  int32_t cpu_threads = 0;      // 0: all cores
  // CUDA: the one 16-bit dtype of weights, activations and the KV cache (BF16, or F16, which
  // open_engine picks for F16 checkpoints), and whether repeated decode steps replay as graphs.
  DType cuda_dtype = DType::kBF16;
  bool cuda_graphs = true;
  // CPU: the dtype of weight matrices (F32, BF16 or I8); nullopt: auto, which is BF16 for BF16 and
  // F16 checkpoints on CPUs with AVX512_BF16 or AMX, else F32.
  std::optional<DType> cpu_weight_dtype;
  // CPU: the dtype of adapters' A and B (F32 or BF16); nullopt: auto, which keeps BF16 adapter
  // files in BF16 and holds the others in F32 (see Backend::lora_dtype).
  std::optional<DType> cpu_lora_dtype;
};

// "auto" (nullopt), "f32", "bf16" or "int8", as --weights-dtype spells them; INVALID_ARGUMENT
// naming the flag otherwise.
Result<std::optional<DType>> parse_weights_dtype_flag(std::string_view value);
// "auto" (nullopt), "f32" or "bf16", as --lora-dtype spells them; INVALID_ARGUMENT naming the flag
// otherwise.
Result<std::optional<DType>> parse_lora_dtype_flag(std::string_view value);

// Builds the backend `options.device` names. "cuda" without a GPU (or a build without CUDA) is
// an error that says so; "auto" falls back to the CPU and logs why.
Result<std::unique_ptr<Backend>> create_backend(const BackendOptions& options);

// True when this build contains the CUDA backend.
bool cuda_compiled_in();

}  // namespace loraserve::kernels
