// The CUDA backend's step and ops: each validates its arguments on the host with a message
// naming what is wrong, then records its launch (with a fingerprint of everything the launch
// bakes in) for the next flush.
#include <algorithm>
#include <vector>

#include "formats/hf_config.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace loraserve::kernels::cuda {

// The model passes one LoRA group's tables per shrink/expand call.
static_assert(formats::kMaxLoraGroupSize <= cuda::kMaxLoraTables,
              "a LoRA group has more tables than the CUDA kernels take");

namespace {

constexpr int64_t kMaxGraphRows = 512;  // decode steps up to this many rows become graphs
constexpr int32_t kMaxSplits = 64;      // most blocks sharing one attention tile's context

enum class Op : uint64_t {
  kEmbedding = 1,
  kMatmul,
  kAddBias,
  kRmsNorm,
  kAddRmsNorm,
  kHeadRmsNorm,
  kRope,
  kWriteKv,
  kAttention,
  kSiluMul,
  kGather,
  kLoraShrink,
  kLoraExpand,
};
Fingerprint fingerprint(Op op) { return Fingerprint(static_cast<uint64_t>(op)); }

}  // namespace

// --- steps and ops

Status CudaBackend::begin_step(const StepMeta& meta) {
  LS_RETURN_IF_ERROR(prepare());
  meta_ = nullptr;
  const uint64_t generation = step_.generation();
  LS_RETURN_IF_ERROR(step_.upload(meta, stream_));
  if (step_.generation() != generation) recorder_->clear_graphs();  // they baked the old address
  meta_ = &meta;
  checked_cache_rows_ = -1;
  checked_block_size_ = -1;
  const bool replayable = graphs_ && step_.decode_only() && meta.num_rows() <= kMaxGraphRows;
  recorder_->begin(replayable, reinterpret_cast<uintptr_t>(step_.device_header()));
  return ok_status();
}

Status CudaBackend::embedding(const Tensor& table, const Tensor& out) {
  LS_RETURN_IF_ERROR(need_step("embedding"));
  LS_RETURN_IF_ERROR(check_tensor(table, dtype_, "embedding", "table"));
  LS_RETURN_IF_ERROR(check_tensor(out, dtype_, "embedding", "out"));
  const auto& ids = meta_->token_ids;
  if (out.rows != static_cast<int64_t>(ids.size()) || out.cols != table.cols) {
    return invalid_argument_error("cuda backend: embedding output {}x{} for {} tokens of width {}",
                                  out.rows, out.cols, ids.size(), table.cols);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= table.rows) {
      return invalid_argument_error(
          "cuda backend: embedding: token id {} (row {}) is outside the vocabulary [0, {})", ids[i],
          i, table.rows);
    }
  }
  const cuda::StepHeader* hdr = step_.device_header();
  record(fingerprint(Op::kEmbedding).add(table).add(out), [=, this] {
    return launch_error(cuda::embedding(dtype_, table.data, table.stride, table.rows, table.cols,
                                        hdr, out.rows, out.data, out.stride, stream_),
                        "embedding");
  });
  return ok_status();
}

Status CudaBackend::matmul(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate) {
  LS_RETURN_IF_ERROR(check_tensor(x, dtype_, "matmul", "x"));
  LS_RETURN_IF_ERROR(check_tensor(w, dtype_, "matmul", "w"));
  LS_RETURN_IF_ERROR(check_tensor(y, y.dtype == DType::kF32 ? DType::kF32 : dtype_, "matmul", "y"));
  if (x.cols != w.cols || y.rows != x.rows || y.cols != w.rows) {
    return invalid_argument_error(
        "cuda backend: matmul shapes x {}x{}, w {}x{}, y {}x{} do not fit", x.rows, x.cols, w.rows,
        w.cols, y.rows, y.cols);
  }
  if (x.rows == 0 || w.rows == 0) return ok_status();
  if (x.cols == 0) return invalid_argument_error("cuda backend: matmul over zero columns");
  LS_ASSIGN_OR_RETURN(std::shared_ptr<const cuda::Gemm::Plan> plan,
                      gemm_->plan(dtype_, y.dtype, x.rows, w.rows, x.cols, x.data, x.stride, w.data,
                                  w.stride, y.data, y.stride, accumulate));
  record(fingerprint(Op::kMatmul).add(x).add(w).add(y).add(accumulate),
         [=, this] { return gemm_->run(*plan, x.data, w.data, y.data, stream_); });
  return ok_status();
}

Status CudaBackend::add_bias(const Tensor& y, const Tensor& bias) {
  LS_RETURN_IF_ERROR(check_tensor(y, dtype_, "add_bias", "y"));
  LS_RETURN_IF_ERROR(check_tensor(bias, dtype_, "add_bias", "bias"));
  if (bias.rows * bias.cols != y.cols || !bias.contiguous()) {
    return invalid_argument_error("cuda backend: add_bias of a {}x{} bias to {} columns", bias.rows,
                                  bias.cols, y.cols);
  }
  record(fingerprint(Op::kAddBias).add(y).add(bias), [=, this] {
    return launch_error(
        cuda::add_bias(dtype_, y.data, y.stride, y.rows, y.cols, bias.data, stream_), "add_bias");
  });
  return ok_status();
}

Status CudaBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
  LS_RETURN_IF_ERROR(check_tensor(x, dtype_, "rms_norm", "x"));
  LS_RETURN_IF_ERROR(check_tensor(weight, dtype_, "rms_norm", "weight"));
  LS_RETURN_IF_ERROR(check_tensor(out, dtype_, "rms_norm", "out"));
  if (weight.rows * weight.cols != x.cols || out.rows != x.rows || out.cols != x.cols) {
    return invalid_argument_error("cuda backend: rms_norm of {}x{} with a weight of {} into {}x{}",
                                  x.rows, x.cols, weight.rows * weight.cols, out.rows, out.cols);
  }
  record(fingerprint(Op::kRmsNorm).add(x).add(weight).add(eps).add(out), [=, this] {
    return launch_error(cuda::rms_norm(dtype_, x.data, x.stride, nullptr, 0, weight.data, eps,
                                       x.rows, x.cols, out.data, out.stride, stream_),
                        "rms_norm");
  });
  return ok_status();
}

Status CudaBackend::add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight,
                                 float eps, const Tensor& out) {
  LS_RETURN_IF_ERROR(check_tensor(residual, dtype_, "add_rms_norm", "residual"));
  LS_RETURN_IF_ERROR(check_tensor(x, dtype_, "add_rms_norm", "x"));
  LS_RETURN_IF_ERROR(check_tensor(weight, dtype_, "add_rms_norm", "weight"));
  LS_RETURN_IF_ERROR(check_tensor(out, dtype_, "add_rms_norm", "out"));
  if (weight.rows * weight.cols != x.cols || residual.rows != x.rows || residual.cols != x.cols ||
      out.rows != x.rows || out.cols != x.cols) {
    return invalid_argument_error(
        "cuda backend: add_rms_norm shapes residual {}x{}, x {}x{}, weight {}, out {}x{}",
        residual.rows, residual.cols, x.rows, x.cols, weight.rows * weight.cols, out.rows,
        out.cols);
  }
  record(fingerprint(Op::kAddRmsNorm).add(residual).add(x).add(weight).add(eps).add(out),
         [=, this] {
           return launch_error(
               cuda::rms_norm(dtype_, x.data, x.stride, residual.data, residual.stride, weight.data,
                              eps, x.rows, x.cols, out.data, out.stride, stream_),
               "add_rms_norm");
         });
  return ok_status();
}

Status CudaBackend::head_rms_norm(const Tensor& x, int32_t head_dim, const Tensor& weight,
                                  float eps) {
  LS_RETURN_IF_ERROR(check_tensor(x, dtype_, "head_rms_norm", "x"));
  LS_RETURN_IF_ERROR(check_tensor(weight, dtype_, "head_rms_norm", "weight"));
  if (head_dim <= 0 || x.cols % head_dim != 0 || weight.rows * weight.cols != head_dim) {
    return invalid_argument_error(
        "cuda backend: head_rms_norm of {} columns in heads of {} with a weight of {}", x.cols,
        head_dim, weight.rows * weight.cols);
  }
  const int64_t heads = x.cols / head_dim;
  record(fingerprint(Op::kHeadRmsNorm).add(x).add(head_dim).add(weight).add(eps), [=, this] {
    return launch_error(cuda::head_rms_norm(dtype_, x.data, x.stride, x.rows, heads, head_dim,
                                            weight.data, eps, stream_),
                        "head_rms_norm");
  });
  return ok_status();
}

Status CudaBackend::rope(const Tensor& x, int32_t head_dim, const Tensor& inv_freq) {
  LS_RETURN_IF_ERROR(need_step("rope"));
  LS_RETURN_IF_ERROR(check_tensor(x, dtype_, "rope", "x"));
  LS_RETURN_IF_ERROR(check_tensor(inv_freq, DType::kF32, "rope", "inv_freq"));
  if (head_dim <= 0 || head_dim % 2 != 0 || x.cols % head_dim != 0 ||
      inv_freq.rows * inv_freq.cols < head_dim / 2 || !inv_freq.contiguous()) {
    return invalid_argument_error(
        "cuda backend: rope of {} columns in heads of {} (even) with {} frequencies", x.cols,
        head_dim, inv_freq.rows * inv_freq.cols);
  }
  if (x.rows > meta_->num_rows()) {
    return invalid_argument_error("cuda backend: rope of {} rows; the step has {}", x.rows,
                                  meta_->num_rows());
  }
  const int64_t heads = x.cols / head_dim;
  const cuda::StepHeader* hdr = step_.device_header();
  record(fingerprint(Op::kRope).add(x).add(head_dim).add(inv_freq), [=, this] {
    return launch_error(cuda::rope(dtype_, x.data, x.stride, x.rows, heads, head_dim,
                                   inv_freq.as<float>(), hdr, stream_),
                        "rope");
  });
  return ok_status();
}

Status CudaBackend::write_kv(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                             const Tensor& v_cache) {
  LS_RETURN_IF_ERROR(need_step("write_kv"));
  for (const auto& [t, name] :
       {std::pair{&k, "k"}, {&v, "v"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}}) {
    LS_RETURN_IF_ERROR(check_tensor(*t, dtype_, "write_kv", name));
  }
  if (v.rows != k.rows || v.cols != k.cols || k_cache.cols != k.cols || v_cache.cols != k.cols ||
      v_cache.rows != k_cache.rows || k.rows > meta_->num_rows()) {
    return invalid_argument_error(
        "cuda backend: write_kv shapes k {}x{}, v {}x{}, caches {}x{} and {}x{} ({} step rows)",
        k.rows, k.cols, v.rows, v.cols, k_cache.rows, k_cache.cols, v_cache.rows, v_cache.cols,
        meta_->num_rows());
  }
  for (int64_t r = 0; r < k.rows; ++r) {
    const int64_t slot = meta_->slot_mapping[static_cast<size_t>(r)];
    if (slot < 0 || slot >= k_cache.rows) {
      return invalid_argument_error(
          "cuda backend: write_kv: row {} maps to KV slot {}, outside the cache's {} slots", r,
          slot, k_cache.rows);
    }
  }
  const cuda::StepHeader* hdr = step_.device_header();
  record(fingerprint(Op::kWriteKv).add(k).add(v).add(k_cache).add(v_cache), [=, this] {
    return launch_error(
        cuda::write_kv(dtype_, k.data, k.stride, v.data, v.stride, k.rows, k.cols, k_cache.data,
                       k_cache.stride, v_cache.data, v_cache.stride, k_cache.rows, hdr, stream_),
        "write_kv");
  });
  return ok_status();
}

Status CudaBackend::check_block_tables(int64_t cache_rows, int32_t block_size) {
  if (cache_rows == checked_cache_rows_ && block_size == checked_block_size_) return ok_status();
  const StepMeta& m = *meta_;
  const int64_t stride = m.max_blocks_per_seq;
  const int64_t num_seqs = step_.header().num_seqs;
  if (num_seqs == 0)
    return invalid_argument_error("cuda backend: attention: the step has no block tables");
  std::vector<int32_t> last(static_cast<size_t>(num_seqs), -1);  // highest position per table
  for (size_t r = 0; r < m.positions.size(); ++r) {
    int32_t& l = last[static_cast<size_t>(m.row_seq[r])];
    l = std::max(l, m.positions[r]);
  }
  for (int64_t s = 0; s < num_seqs; ++s) {
    if (last[static_cast<size_t>(s)] < 0) continue;
    const int64_t blocks = last[static_cast<size_t>(s)] / block_size + 1;
    if (blocks > stride) {
      return invalid_argument_error(
          "cuda backend: attention: sequence {} reaches position {}, which needs {} blocks; its "
          "table holds {}",
          s, last[static_cast<size_t>(s)], blocks, stride);
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t id = m.block_tables[static_cast<size_t>(s * stride + b)];
      if (id < 0 || (id + 1) * block_size > cache_rows) {
        return invalid_argument_error(
            "cuda backend: attention: block {} of sequence {}'s table is {}, outside the cache's "
            "{} blocks",
            b, s, id, cache_rows / block_size);
      }
    }
  }
  checked_cache_rows_ = cache_rows;
  checked_block_size_ = block_size;
  return ok_status();
}

Status CudaBackend::attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                              const AttentionShape& s, const Tensor& out) {
  LS_RETURN_IF_ERROR(need_step("attention"));
  for (const auto& [t, name] :
       {std::pair{&q, "q"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}, {&out, "out"}}) {
    LS_RETURN_IF_ERROR(check_tensor(*t, dtype_, "attention", name));
  }
  if (s.num_heads <= 0 || s.num_kv_heads <= 0 || s.num_heads % s.num_kv_heads != 0 ||
      s.head_dim <= 0 || s.block_size <= 0) {
    return invalid_argument_error(
        "cuda backend: attention with {} heads, {} KV heads, head_dim {}, block size {}",
        s.num_heads, s.num_kv_heads, s.head_dim, s.block_size);
  }
  const int32_t group = s.num_heads / s.num_kv_heads;
  if (group > cuda::kMaxQueryGroup || s.head_dim > cuda::kMaxHeadDim) {
    return unimplemented_error(
        "cuda backend: attention serves up to {} query heads per KV head and head_dim up to {} "
        "(this model: {} and {})",
        cuda::kMaxQueryGroup, cuda::kMaxHeadDim, group, s.head_dim);
  }
  const int64_t n = meta_->num_rows();
  const int64_t width = int64_t{s.num_heads} * s.head_dim;
  const int64_t kv_width = int64_t{s.num_kv_heads} * s.head_dim;
  if (q.rows != n || out.rows != n || q.cols != width || out.cols != width ||
      k_cache.cols != kv_width || v_cache.cols != kv_width || v_cache.rows != k_cache.rows ||
      k_cache.stride != v_cache.stride) {
    return invalid_argument_error(
        "cuda backend: attention shapes q {}x{}, out {}x{}, caches {}x{} and {}x{} for {} rows of "
        "{} heads and {} KV heads of {}",
        q.rows, q.cols, out.rows, out.cols, k_cache.rows, k_cache.cols, v_cache.rows, v_cache.cols,
        n, s.num_heads, s.num_kv_heads, s.head_dim);
  }
  LS_RETURN_IF_ERROR(check_block_tables(k_cache.rows, s.block_size));
  // The step carries a tile set for every shape (step_layout.h): nothing is re-cut here, so a
  // layer of another shape later in the step cannot change the tiles this launch reads.
  const int32_t rows_per_tile = cuda::attention_rows_per_tile(group);
  const int64_t tiles = step_.header().num_attention_tiles[cuda::attention_tile_set(rows_per_tile)];
  cuda::AttentionDims dims;
  dims.num_heads = s.num_heads;
  dims.num_kv_heads = s.num_kv_heads;
  dims.head_dim = s.head_dim;
  dims.block_size = s.block_size;
  dims.scale = s.scale;
  dims.rows_per_tile = rows_per_tile;
  // Enough blocks to fill the GPU twice; a decode step does not cap by its context, which grows
  // from step to step while its graph stays the same.
  const int64_t blocks = tiles * s.num_kv_heads;
  int64_t splits = std::clamp<int64_t>((2 * sm_count_ + blocks - 1) / blocks, 1, kMaxSplits);
  if (!step_.decode_only()) {
    const int32_t max_pos = *std::max_element(meta_->positions.begin(), meta_->positions.end());
    splits = std::min<int64_t>(splits, (max_pos + 1 + 31) / 32);
  }
  dims.splits = static_cast<int32_t>(splits);
  const int64_t max_tiles = grid_tiles(tiles);
  LS_RETURN_IF_ERROR(
      ensure(attention_scratch_, cuda::attention_scratch_floats(max_tiles, dims) * sizeof(float)));
  float* scratch = static_cast<float*>(attention_scratch_.data);
  const cuda::StepHeader* hdr = step_.device_header();
  record(fingerprint(Op::kAttention)
             .add(q)
             .add(k_cache)
             .add(v_cache)
             .add(out)
             .add(s.num_heads)
             .add(s.num_kv_heads)
             .add(s.head_dim)
             .add(s.block_size)
             .add(s.scale)
             .add(rows_per_tile)
             .add(dims.splits)
             .add(max_tiles)
             .add(static_cast<const void*>(scratch)),
         [=, this] {
           return launch_error(
               cuda::paged_attention(dtype_, q.data, q.stride, k_cache.data, v_cache.data,
                                     k_cache.stride, k_cache.rows, dims, hdr, max_tiles, scratch,
                                     out.data, out.stride, stream_),
               "attention");
         });
  return ok_status();
}

Status CudaBackend::silu_mul(const Tensor& gate_up, const Tensor& out) {
  LS_RETURN_IF_ERROR(check_tensor(gate_up, dtype_, "silu_mul", "gate_up"));
  LS_RETURN_IF_ERROR(check_tensor(out, dtype_, "silu_mul", "out"));
  if (gate_up.rows != out.rows || gate_up.cols != 2 * out.cols || out.cols == 0) {
    return invalid_argument_error("cuda backend: silu_mul of {}x{} into {}x{}", gate_up.rows,
                                  gate_up.cols, out.rows, out.cols);
  }
  record(fingerprint(Op::kSiluMul).add(gate_up).add(out), [=, this] {
    return launch_error(cuda::silu_mul(dtype_, gate_up.data, gate_up.stride, out.data, out.stride,
                                       out.rows, out.cols, stream_),
                        "silu_mul");
  });
  return ok_status();
}

Status CudaBackend::gather_logits_rows(const Tensor& x, const Tensor& out) {
  LS_RETURN_IF_ERROR(need_step("gather_logits_rows"));
  LS_RETURN_IF_ERROR(check_tensor(x, dtype_, "gather_logits_rows", "x"));
  LS_RETURN_IF_ERROR(check_tensor(out, dtype_, "gather_logits_rows", "out"));
  if (out.rows != static_cast<int64_t>(meta_->logits_rows.size()) || out.cols != x.cols ||
      x.rows != meta_->num_rows()) {
    return invalid_argument_error(
        "cuda backend: gather_logits_rows of {} rows from {}x{} into {}x{}",
        meta_->logits_rows.size(), x.rows, x.cols, out.rows, out.cols);
  }
  const cuda::StepHeader* hdr = step_.device_header();
  record(fingerprint(Op::kGather).add(x).add(out), [=, this] {
    return launch_error(cuda::gather_rows(dtype_, x.data, x.stride, x.cols, hdr, out.rows, out.data,
                                          out.stride, stream_),
                        "gather_logits_rows");
  });
  return ok_status();
}

Status CudaBackend::check_lora_call(const char* op, std::span<const int32_t> tables,
                                    const Tensor& tmp, int32_t* max_rank,
                                    cuda::LoraTables* lt) const {
  const StepMeta& m = *meta_;
  if (tables.empty() || tables.size() > static_cast<size_t>(cuda::kMaxLoraTables)) {
    return invalid_argument_error("cuda backend: {} of {} tables (1 to {})", op, tables.size(),
                                  cuda::kMaxLoraTables);
  }
  lt->count = static_cast<int32_t>(tables.size());
  for (size_t k = 0; k < tables.size(); ++k) {
    if (tables[k] < 0 || tables[k] >= m.num_lora_tables) {
      return invalid_argument_error("cuda backend: {}: LoRA table {} outside [0, {})", op,
                                    tables[k], m.num_lora_tables);
    }
    lt->id[k] = tables[k];
  }
  const size_t num_segments = m.lora_segments.size();
  *max_rank = 0;
  for (size_t s = 0; s < num_segments; ++s) {
    if (m.lora_segments[s].row_end > tmp.rows) {
      return invalid_argument_error("cuda backend: {}: segment {} ends at row {}; tmp has {}", op,
                                    s, m.lora_segments[s].row_end, tmp.rows);
    }
    int64_t sum = 0;
    for (int32_t t : tables) {
      const int32_t rank = m.lora_slices[static_cast<size_t>(t) * num_segments + s].rank;
      sum += rank;
      *max_rank = std::max(*max_rank, rank);
    }
    if (sum > tmp.cols) {
      return internal_error(
          "cuda backend: {}: LoRA scratch of {} columns narrower than the "
          "summed rank {} of segment {}",
          op, tmp.cols, sum, s);
    }
  }
  return ok_status();
}

Status CudaBackend::lora_shrink(const Tensor& x, std::span<const int32_t> tables,
                                const Tensor& tmp) {
  LS_RETURN_IF_ERROR(need_step("lora_shrink"));
  if (meta_->lora_segments.empty()) return ok_status();
  LS_RETURN_IF_ERROR(check_tensor(x, dtype_, "lora_shrink", "x"));
  LS_RETURN_IF_ERROR(check_tensor(tmp, dtype_, "lora_shrink", "tmp"));
  if (x.rows != tmp.rows || x.cols == 0) {
    return invalid_argument_error("cuda backend: lora_shrink of {}x{} into {} rows", x.rows, x.cols,
                                  tmp.rows);
  }
  int32_t max_rank = 0;
  cuda::LoraTables lt;
  LS_RETURN_IF_ERROR(check_lora_call("lora_shrink", tables, tmp, &max_rank, &lt));
  if (max_rank == 0) return ok_status();
  const int64_t max_tiles = grid_tiles(step_.header().num_lora_tiles);
  const cuda::StepHeader* hdr = step_.device_header();
  Fingerprint f = fingerprint(Op::kLoraShrink).add(x).add(tmp).add(max_rank).add(max_tiles);
  for (int32_t t : tables) f.add(t);
  record(f, [=, this] {
    return launch_error(cuda::lora_shrink(dtype_, x.data, x.stride, x.cols, lt, max_rank, hdr,
                                          max_tiles, tmp.data, tmp.stride, stream_),
                        "lora_shrink");
  });
  return ok_status();
}

Status CudaBackend::lora_expand(const Tensor& tmp, std::span<const int32_t> tables,
                                std::span<const Tensor> outputs) {
  LS_RETURN_IF_ERROR(need_step("lora_expand"));
  if (meta_->lora_segments.empty()) return ok_status();
  LS_RETURN_IF_ERROR(check_tensor(tmp, dtype_, "lora_expand", "tmp"));
  if (outputs.size() != tables.size()) {
    return invalid_argument_error("cuda backend: lora_expand of {} tables into {} outputs",
                                  tables.size(), outputs.size());
  }
  int32_t max_rank = 0;
  cuda::LoraTables lt;
  LS_RETURN_IF_ERROR(check_lora_call("lora_expand", tables, tmp, &max_rank, &lt));
  if (max_rank == 0) return ok_status();
  cuda::LoraOutputs lo;
  Fingerprint f = fingerprint(Op::kLoraExpand).add(tmp).add(max_rank);
  for (size_t k = 0; k < outputs.size(); ++k) {
    const Tensor& y = outputs[k];
    LS_RETURN_IF_ERROR(check_tensor(y, dtype_, "lora_expand", "output"));
    if (y.rows < tmp.rows || y.cols == 0) {
      return invalid_argument_error("cuda backend: lora_expand output {} is {}x{} for {} rows", k,
                                    y.rows, y.cols, tmp.rows);
    }
    lo.data[k] = y.data;
    lo.stride[k] = y.stride;
    lo.cols[k] = static_cast<int32_t>(y.cols);
    f.add(tables[k]).add(y);
  }
  const int64_t max_tiles = grid_tiles(step_.header().num_lora_tiles);
  f.add(max_tiles);
  const cuda::StepHeader* hdr = step_.device_header();
  record(f, [=, this] {
    return launch_error(
        cuda::lora_expand(dtype_, tmp.data, tmp.stride, lt, lo, max_rank, hdr, max_tiles, stream_),
        "lora_expand");
  });
  return ok_status();
}

}  // namespace loraserve::kernels::cuda
