#include "kernels/cpu/cpu_backend.h"

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/host_memory.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/cpu_matmul.h"
#include "kernels/cpu/cpu_onednn.h"
#include "kernels/host_buffer_pool.h"

#ifdef LORASERVE_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace loraserve::kernels {
namespace {

// Rows per OpenMP chunk below which a loop runs on one thread (thread wake-up costs more).
constexpr int64_t kMinParallelElems = 1 << 14;
constexpr int64_t kMaxHalfHeadDim = 512;

// What the machine, the container's memory cgroup and RLIMIT_AS leave (common/host_memory.h).
size_t mem_available_bytes() { return static_cast<size_t>(host_memory().available); }

Status check_f32(const Tensor& t, const char* what) {
  if (t.dtype != DType::kF32) {
    return invalid_argument_error("cpu backend: {} has dtype {}, expected F32", what,
                                  dtype_name(t.dtype));
  }
  return ok_status();
}

// Runs where the compiler may use AVX2 and FMA, chosen at run time (x86-64-v3 clones of the hot
// loops); elsewhere the baseline code.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LS_HOT_LOOP __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LS_HOT_LOOP
#endif

// One row's attention for the `group` query heads that share KV head `kvh`: q (group·head_dim)
// against the row's first `ctx` cached positions (through its block table); softmax in f32;
// the weighted sum of V into acc (group·head_dim, the row's output). scores: ctx·group floats
// of scratch.
LS_HOT_LOOP void attend_kv_head(const float* qr, const Tensor& k_cache, const Tensor& v_cache,
                                const int32_t* table, int64_t ctx, int64_t kvh, int64_t group,
                                const AttentionShape& s, float* scores, float* acc) {
  const int64_t hd = s.head_dim;
  for (int64_t t = 0; t < ctx; ++t) {
    const int64_t slot =
        static_cast<int64_t>(table[t / s.block_size]) * s.block_size + t % s.block_size;
    const float* kt = k_cache.as<float>() + slot * k_cache.stride + kvh * hd;
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = qr + g * hd;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < hd; ++i) dot += qg[i] * kt[i];
      scores[g * ctx + t] = dot * s.scale;
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* sc = scores + g * ctx;
    float m = -INFINITY;
    for (int64_t t = 0; t < ctx; ++t) m = std::max(m, sc[t]);
    float sum = 0.0f;
    for (int64_t t = 0; t < ctx; ++t) sum += (sc[t] = std::exp(sc[t] - m));
    const float inv = 1.0f / sum;
    for (int64_t t = 0; t < ctx; ++t) sc[t] *= inv;
  }
  std::fill(acc, acc + group * hd, 0.0f);
  for (int64_t t = 0; t < ctx; ++t) {
    const int64_t slot =
        static_cast<int64_t>(table[t / s.block_size]) * s.block_size + t % s.block_size;
    const float* vt = v_cache.as<float>() + slot * v_cache.stride + kvh * hd;
    for (int64_t g = 0; g < group; ++g) {
      const float p = scores[g * ctx + t];
      float* a = acc + g * hd;
#pragma omp simd
      for (int64_t i = 0; i < hd; ++i) a[i] += p * vt[i];
    }
  }
}

bool is_weight_dtype(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kI8; }

class CpuBackend final : public Backend {
 public:
  CpuBackend(int32_t threads, std::optional<DType> weight_dtype, std::optional<DType> lora_dtype)
      : threads_(threads), weight_dtype_(weight_dtype), lora_dtype_(lora_dtype) {
    omp_set_num_threads(threads_);
#ifdef LORASERVE_HAVE_OPENBLAS
    openblas_set_num_threads(1);  // cpu::matmul splits work over the OpenMP threads itself
#endif
  }

  std::string describe() const override {
    return fmt::format("cpu ({} threads, {}; kernels {}, {}, {})", threads_,
                       cpu::describe_cpu_features(), cpu::kernel_level_name(cpu::kernel_level()),
                       cpu::gemm_uses_blas() ? "OpenBLAS" : "no BLAS", cpu::onednn::describe());
  }
  std::string kind() const override { return "cpu"; }
  DType weight_dtype(DType checkpoint) const override {
    if (weight_dtype_) return *weight_dtype_;
    return auto_bf16(checkpoint) ? DType::kBF16 : DType::kF32;
  }
  std::string weight_dtype_reason(DType checkpoint) const override {
    if (weight_dtype_) {
      std::string why = fmt::format("--weights-dtype {}", dtype_name(*weight_dtype_));
      if (*weight_dtype_ == DType::kBF16 && !native_bf16()) {
        why +=
            " (this CPU has neither AVX512_BF16 nor AMX: bf16 weights are widened to f32 in "
            "registers)";
      }
      return why;
    }
    const bool half = checkpoint == DType::kBF16 || checkpoint == DType::kF16;
    if (auto_bf16(checkpoint)) {
      return fmt::format(
          "auto: the checkpoint is {} and this CPU has {}{}", dtype_name(checkpoint),
          cpu::cpu_features().amx_bf16 ? "AMX" : "AVX512_BF16",
          checkpoint == DType::kF16 ? " (F16 values rounded to bf16's 8-bit mantissa)" : "");
    }
    if (!half) return fmt::format("auto: the checkpoint is {}", dtype_name(checkpoint));
    return fmt::format("auto: the checkpoint is {} but this CPU has neither AVX512_BF16 nor AMX",
                       dtype_name(checkpoint));
  }
  DType activation_dtype() const override { return DType::kF32; }
  DType lora_dtype(DType file) const override {
    if (lora_dtype_) return *lora_dtype_;
    return file == DType::kBF16 ? DType::kBF16 : DType::kF32;
  }
  size_t available_memory() const override { return mem_available_bytes(); }
  // Host memory is shared with the rest of the machine: plan for 85% of what is free, and give
  // the KV cache half of what weights and activations leave unless it is sized explicitly.
  MemoryHeadroom memory_headroom() const override { return {0.85, 0.5}; }
  bool shares_host_memory() const override { return true; }

  Result<DeviceBuffer> allocate(size_t bytes) override {
    const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr)
      return resource_exhausted_error("cpu backend: cannot allocate {} bytes", bytes);
    return DeviceBuffer(this, p, bytes);
  }
  void free(void* data) override { std::free(data); }
  // Host buffers hold adapters; those of evicted adapters are kept for the next loads.
  Result<DeviceBuffer> allocate_host(size_t bytes) override {
    LS_ASSIGN_OR_RETURN(void* p, host_pool_.take(std::max<size_t>(64, (bytes + 63) / 64 * 64)));
    return DeviceBuffer(this, p, bytes, /*host=*/true);
  }
  void free_host(void* data) override { host_pool_.give_back(data); }

  Status copy_to_device(const Tensor& dst, const void* src, DType src_dtype, size_t n) override {
    if (!dst.contiguous() || static_cast<size_t>(dst.rows * dst.cols) != n) {
      return invalid_argument_error("cpu backend: CopyToDevice of {} elements into a {}x{} view", n,
                                    dst.rows, dst.cols);
    }
    if (dst.dtype == DType::kI8 || (dst.dtype == DType::kBF16 && src_dtype != DType::kBF16)) {
      if (dst.dtype == DType::kI8 && dst.scales == nullptr)
        return invalid_argument_error("cpu backend: an I8 view without scales");
      return cpu::convert_weights(dst, src, src_dtype);
    }
    if (dst.dtype == src_dtype) {
      std::memcpy(dst.data, src, n * dtype_size(src_dtype));
      return ok_status();
    }
    LS_RETURN_IF_ERROR(check_f32(dst, "CopyToDevice destination"));
    convert_to_f32(src_dtype, src, dst.as<float>(), n);
    return ok_status();
  }

  Result<uint64_t> copy_to_device_async(const Tensor& dst, const void* src, DType src_dtype,
                                        size_t n) override {
    LS_RETURN_IF_ERROR(copy_to_device(dst, src, src_dtype, n));
    return ++tickets_;
  }
  Result<bool> upload_done(uint64_t) override { return true; }

  Status copy_to_host(const Tensor& src, float* dst) override {
    if (!is_weight_dtype(src.dtype) && src.dtype != DType::kF16) {
      return invalid_argument_error("cpu backend: CopyToHost from {}", dtype_name(src.dtype));
    }
    for (int64_t r = 0; r < src.rows; ++r) cpu::widen_row(src, r, dst + r * src.cols);
    return ok_status();
  }
  Status synchronize() override { return ok_status(); }

  Status begin_step(const StepMeta& meta) override {
    meta_ = &meta;
    // OpenMP's thread count is per thread: set it on the thread that runs the step (the
    // server's engine thread is not the one that created the backend).
    omp_set_num_threads(threads_);
    return ok_status();
  }

  Status embedding(const Tensor& table, const Tensor& out) override {
    const auto& ids = meta_->token_ids;
    if (out.rows != static_cast<int64_t>(ids.size()) || out.cols != table.cols) {
      return invalid_argument_error("cpu backend: Embedding output {}x{} for {} tokens of width {}",
                                    out.rows, out.cols, ids.size(), table.cols);
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= table.rows) {
        return invalid_argument_error("cpu backend: token id {} outside the vocabulary ({})",
                                      ids[i], table.rows);
      }
      cpu::widen_row(table, ids[i], out.as<float>() + static_cast<int64_t>(i) * out.stride);
    }
    return ok_status();
  }

  Status matmul(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate) override {
    if (x.cols != w.cols || y.rows != x.rows || y.cols != w.rows) {
      return invalid_argument_error(
          "cpu backend: Matmul shapes x {}x{}, w {}x{}, y {}x{} do not fit", x.rows, x.cols, w.rows,
          w.cols, y.rows, y.cols);
    }
    LS_RETURN_IF_ERROR(check_f32(x, "Matmul input"));
    LS_RETURN_IF_ERROR(check_f32(y, "Matmul output"));
    if (!is_weight_dtype(w.dtype) || (w.dtype == DType::kI8 && w.scales == nullptr)) {
      return invalid_argument_error("cpu backend: Matmul weights of dtype {}{}",
                                    dtype_name(w.dtype), w.scales ? "" : " without scales");
    }
    return cpu::matmul(x.rows, x.as<float>(), x.stride, w, accumulate ? 1.0f : 0.0f, y.as<float>(),
                       y.stride);
  }

  Status add_bias(const Tensor& y, const Tensor& bias) override {
    const float* b = bias.as<float>();
    for_rows(y.rows, y.cols, [&](int64_t r) {
      float* yr = y.as<float>() + r * y.stride;
      for (int64_t c = 0; c < y.cols; ++c) yr[c] += b[c];
    });
    return ok_status();
  }

  Status rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override {
    for_rows(x.rows, x.cols, [&](int64_t r) {
      norm_row(x.as<float>() + r * x.stride, weight.as<float>(), x.cols, eps,
               out.as<float>() + r * out.stride);
    });
    return ok_status();
  }

  Status add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                      const Tensor& out) override {
    for_rows(x.rows, x.cols, [&](int64_t r) {
      float* res = residual.as<float>() + r * residual.stride;
      const float* xr = x.as<float>() + r * x.stride;
      for (int64_t c = 0; c < x.cols; ++c) res[c] += xr[c];
      norm_row(res, weight.as<float>(), x.cols, eps, out.as<float>() + r * out.stride);
    });
    return ok_status();
  }

  Status head_rms_norm(const Tensor& x, int32_t head_dim, const Tensor& weight,
                       float eps) override {
    const int64_t heads = x.cols / head_dim;
    for_rows(x.rows, x.cols, [&](int64_t r) {
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x.as<float>() + r * x.stride + h * head_dim;
        norm_row(v, weight.as<float>(), head_dim, eps, v);
      }
    });
    return ok_status();
  }

  Status rope(const Tensor& x, int32_t head_dim, const Tensor& inv_freq) override {
    const int64_t heads = x.cols / head_dim;
    const int64_t half = head_dim / 2;
    const float* freq = inv_freq.as<float>();
    if (half > kMaxHalfHeadDim)
      return invalid_argument_error("cpu backend: head_dim {} above {}", head_dim,
                                    2 * kMaxHalfHeadDim);
    for_rows(x.rows, x.cols, [&](int64_t r) {
      const float pos = static_cast<float>(meta_->positions[static_cast<size_t>(r)]);
      float cs[kMaxHalfHeadDim], sn[kMaxHalfHeadDim];
      for (int64_t i = 0; i < half; ++i) {
        const float angle = pos * freq[i];
        cs[i] = std::cos(angle);
        sn[i] = std::sin(angle);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x.as<float>() + r * x.stride + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cs[i] - b * sn[i];
          v[i + half] = b * cs[i] + a * sn[i];
        }
      }
    });
    return ok_status();
  }

  Status write_kv(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                  const Tensor& v_cache) override {
    const auto& slots = meta_->slot_mapping;
    for (int64_t r = 0; r < k.rows; ++r) {
      const int64_t slot = slots[static_cast<size_t>(r)];
      if (slot < 0 || slot >= k_cache.rows)
        return internal_error("cpu backend: KV slot {} out of range", slot);
      std::memcpy(k_cache.as<float>() + slot * k_cache.stride, k.as<float>() + r * k.stride,
                  static_cast<size_t>(k.cols) * 4);
      std::memcpy(v_cache.as<float>() + slot * v_cache.stride, v.as<float>() + r * v.stride,
                  static_cast<size_t>(v.cols) * 4);
    }
    return ok_status();
  }

  Status attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                   const AttentionShape& s, const Tensor& out) override {
    const int64_t n = q.rows;
    const int64_t group = s.num_heads / s.num_kv_heads;
    const int64_t work = n * s.num_kv_heads;
#pragma omp parallel
    {
      std::vector<float> scores;
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < work; ++item) {
        const int64_t r = item / s.num_kv_heads;
        const int64_t kvh = item % s.num_kv_heads;
        const int64_t ctx = meta_->positions[static_cast<size_t>(r)] + 1;
        const int32_t* table = meta_->block_tables.data() +
                               static_cast<int64_t>(meta_->row_seq[static_cast<size_t>(r)]) *
                                   meta_->max_blocks_per_seq;
        scores.resize(static_cast<size_t>(ctx * group));
        attend_kv_head(q.as<float>() + r * q.stride + kvh * group * s.head_dim, k_cache, v_cache,
                       table, ctx, kvh, group, s, scores.data(),
                       out.as<float>() + r * out.stride + kvh * group * s.head_dim);
      }
    }
    return ok_status();
  }

  Status silu_mul(const Tensor& gate_up, const Tensor& out) override {
    const int64_t f = out.cols;
    for_rows(out.rows, f, [&](int64_t r) {
      const float* g = gate_up.as<float>() + r * gate_up.stride;
      const float* u = g + f;
      float* o = out.as<float>() + r * out.stride;
      for (int64_t c = 0; c < f; ++c) o[c] = g[c] / (1.0f + std::exp(-g[c])) * u[c];
    });
    return ok_status();
  }

  Status gather_logits_rows(const Tensor& x, const Tensor& out) override {
    const auto& rows = meta_->logits_rows;
    for (size_t j = 0; j < rows.size(); ++j) {
      std::memcpy(out.as<float>() + static_cast<int64_t>(j) * out.stride,
                  x.as<float>() + rows[j] * x.stride, static_cast<size_t>(x.cols) * 4);
    }
    return ok_status();
  }

  Status lora_shrink(const Tensor& x, std::span<const int32_t> tables, const Tensor& tmp) override {
    const LoraTimer timer(&lora_seconds_);
    const auto& segs = meta_->lora_segments;
    for (size_t s = 0; s < segs.size(); ++s) {
      int64_t total = 0;
      for (int32_t t : tables) total += slice(t, s).rank;
      if (total > tmp.cols) {
        return internal_error(
            "cpu backend: LoRA scratch ({} columns) narrower than the summed rank {}", tmp.cols,
            total);
      }
    }
    for_segments(segs.size(), [&](size_t s) {
      const int64_t row0 = segs[s].row_begin;
      const int64_t n = segs[s].row_end - row0;
      int64_t col = 0;
      // Tables whose A's are adjacent in memory (q/k/v, gate/up of one adapter) are one GEMM.
      for (size_t k = 0; k < tables.size();) {
        const LoraSlice& first = slice(tables[k], s);
        if (first.rank == 0) {
          ++k;
          continue;
        }
        int64_t rows = first.rank;
        const size_t elem = dtype_size(first.dtype);
        size_t next = k + 1;
        for (; next < tables.size(); ++next) {
          const LoraSlice& sl = slice(tables[next], s);
          if (sl.rank == 0 || sl.dtype != first.dtype ||
              sl.a != static_cast<const std::byte*>(first.a) + rows * x.cols * elem) {
            break;
          }
          rows += sl.rank;
        }
        cpu::lora_gemm(n, x.as<float>() + row0 * x.stride, x.stride,
                       lora_view(first.a, first.dtype, rows, x.cols), 0.0f,
                       tmp.as<float>() + row0 * tmp.stride + col, tmp.stride);
        col += rows;
        k = next;
      }
    });
    return ok_status();
  }

  Status lora_expand(const Tensor& tmp, std::span<const int32_t> tables,
                     std::span<const Tensor> outputs) override {
    const LoraTimer timer(&lora_seconds_);
    const auto& segs = meta_->lora_segments;
    for_segments(segs.size(), [&](size_t s) {
      thread_local std::vector<float> scaled;
      const int64_t row0 = segs[s].row_begin;
      const int64_t n = segs[s].row_end - row0;
      int64_t col = 0;
      for (size_t k = 0; k < tables.size(); ++k) {
        const LoraSlice& sl = slice(tables[k], s);
        if (sl.rank == 0) continue;
        const Tensor& y = outputs[k];
        // (x·Aᵀ) is tiny (n × r): scale it rather than the (n × out) product.
        scaled.resize(static_cast<size_t>(n * sl.rank));
        for (int64_t r = 0; r < n; ++r) {
          const float* src = tmp.as<float>() + (row0 + r) * tmp.stride + col;
          for (int64_t c = 0; c < sl.rank; ++c)
            scaled[static_cast<size_t>(r * sl.rank + c)] = src[c] * sl.scale;
        }
        cpu::lora_gemm(n, scaled.data(), sl.rank, lora_view(sl.b, sl.dtype, y.cols, sl.rank), 1.0f,
                       y.as<float>() + row0 * y.stride, y.stride);
        col += sl.rank;
      }
    });
    return ok_status();
  }

  Status sample(const Tensor& logits, std::span<const SampleParams> params,
                std::vector<SampleResult>* results) override {
    if (static_cast<int64_t>(params.size()) != logits.rows) {
      return invalid_argument_error("cpu backend: {} sampling params for {} rows", params.size(),
                                    logits.rows);
    }
    LS_RETURN_IF_ERROR(check_sample_params(params, logits.cols));
    results->resize(params.size());
#pragma omp parallel for schedule(dynamic, 1) if (logits.rows > 1)
    for (int64_t r = 0; r < logits.rows; ++r) {
      cpu::sample_row(logits.as<float>() + r * logits.stride, logits.cols,
                      params[static_cast<size_t>(r)], &(*results)[static_cast<size_t>(r)]);
    }
    return ok_status();
  }

 private:
  // An adapter's A or B (rows × cols, contiguous) as a weight view.
  static Tensor lora_view(const void* data, DType dtype, int64_t rows, int64_t cols) {
    return Tensor::make(const_cast<void*>(data), dtype, rows, cols);
  }

  const LoraSlice& slice(int32_t table, size_t segment) const {
    return meta_->lora_slices[static_cast<size_t>(table) * meta_->lora_segments.size() + segment];
  }

  static void norm_row(const float* x, const float* w, int64_t n, float eps, float* out) {
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
  }

  // Runs body(s) for every LoRA segment: segments spread over the threads when there are several
  // (each GEMM then runs on one thread), else the one segment's GEMMs use every thread.
  template <typename F>
  void for_segments(size_t count, F&& body) {
    if (count == 1) {
      body(0);
      return;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t s = 0; s < count; ++s) body(s);
  }

  // Runs body(r) for every row, on all threads when the tensor is large enough to pay for it.
  template <typename F>
  void for_rows(int64_t rows, int64_t cols, F&& body) {
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelElems && rows > 1)
    for (int64_t r = 0; r < rows; ++r) body(r);
  }

  // Adds the lifetime of the scope to *total (seconds): what the LoRA ops cost, for benches.
  class LoraTimer {
   public:
    explicit LoraTimer(double* total) : total_(total) {}
    ~LoraTimer() {
      *total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }

   private:
    double* total_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  };

 public:
  double lora_seconds() const { return lora_seconds_; }

 private:
  static bool native_bf16() {
    return cpu::cpu_features().avx512_bf16 || cpu::cpu_features().amx_bf16;
  }
  static bool auto_bf16(DType checkpoint) {
    return (checkpoint == DType::kBF16 || checkpoint == DType::kF16) && native_bf16();
  }

  int32_t threads_;
  std::optional<DType> weight_dtype_;
  std::optional<DType> lora_dtype_;
  double lora_seconds_ = 0.0;
  const StepMeta* meta_ = nullptr;
  uint64_t tickets_ = 0;
  HostBufferPool host_pool_{[](size_t bytes) -> Result<void*> {
                              // Page-aligned, and its pages mapped in one call rather than one
                              // fault each as the load writes them (several times faster; without
                              // MADV_POPULATE_WRITE, Linux < 5.14, the faults happen as before).
                              constexpr size_t kPage = 4096;
                              const size_t whole = (bytes + kPage - 1) / kPage * kPage;
                              void* p = std::aligned_alloc(kPage, whole);
                              if (p == nullptr)
                                return resource_exhausted_error(
                                    "cpu backend: cannot allocate {} host bytes", bytes);
                              (void)::madvise(p, whole, MADV_POPULATE_WRITE);
                              return p;
                            },
                            [](void* p) { std::free(p); }, HostBufferPool::Limits{}};
};

}  // namespace

Result<double> cpu_lora_seconds(const Backend& backend) {
  const auto* cpu = dynamic_cast<const CpuBackend*>(&backend);
  if (cpu == nullptr) return invalid_argument_error("cpu_lora_seconds: not the CPU backend");
  return cpu->lora_seconds();
}

std::unique_ptr<Backend> create_cpu_backend(int32_t threads, std::optional<DType> weight_dtype,
                                            std::optional<DType> lora_dtype) {
  if (threads <= 0)
    threads = static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  return std::make_unique<CpuBackend>(threads, weight_dtype, lora_dtype);
}

}  // namespace loraserve::kernels
