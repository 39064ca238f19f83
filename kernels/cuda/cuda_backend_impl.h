// The CUDA backend's class, shared by its two implementation files: cuda_backend.cpp (device,
// memory, copies, sampling, the CUDA-only entry points) and cuda_ops.cpp (the step and the ops).
// Internal to kernels/cuda/; users go through cuda_backend.h. Owns its streams, the cuBLASLt
// planner, the step's device metadata, the graph recorder and every scratch buffer. Not
// thread-safe: one engine thread uses it.
#pragma once

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_graphs.h"
#include "kernels/cuda/cuda_step.h"
#include "kernels/cuda/launchers.h"

namespace loraserve::kernels::cuda {

// A device allocation that only grows.
struct DeviceScratch {
  void* data = nullptr;
  size_t bytes = 0;
};
// A pinned host allocation that only grows.
struct PinnedScratch {
  void* data = nullptr;
  size_t bytes = 0;
};

struct Upload {
  cudaEvent_t start = nullptr;
  cudaEvent_t end = nullptr;
  const char* dst = nullptr;  // the device range it writes
  size_t bytes = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaOptions& options)
      : device_(options.device), dtype_(options.compute_dtype), graphs_(options.graphs) {}
  ~CudaBackend() override;

  Status init();

  std::string describe() const override {
    return fmt::format("cuda:{} {} (sm_{}{}, {:.1f} GiB, {}{})", device_, name_, cc_major_,
                       cc_minor_, static_cast<double>(total_memory_) / (1ull << 30),
                       dtype_name(dtype_), graphs_ ? ", CUDA graphs" : ", no CUDA graphs");
  }
  std::string kind() const override { return "cuda"; }
  DType weight_dtype(DType) const override { return dtype_; }
  DType activation_dtype() const override { return dtype_; }
  size_t available_memory() const override {
    size_t free = 0, total = 0;
    if (cudaSetDevice(device_) != cudaSuccess || cudaMemGetInfo(&free, &total) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return free;
  }
  // 8% of free device memory stays for cuBLASLt workspaces, CUDA graphs and the allocator's
  // slack; the KV cache takes 90% of what weights and activations leave.
  MemoryHeadroom memory_headroom() const override { return {0.92, 0.9}; }
  bool shares_host_memory() const override { return false; }

  Result<DeviceBuffer> allocate(size_t bytes) override;
  void free(void* data) override;
  Result<DeviceBuffer> allocate_host(size_t bytes) override;
  void free_host(void* data) override;
  Status copy_to_device(const Tensor& dst, const void* src, DType src_dtype, size_t n) override;
  Result<uint64_t> copy_to_device_async(const Tensor& dst, const void* src, DType src_dtype,
                                        size_t n) override;
  Result<bool> upload_done(uint64_t ticket) override;
  Status copy_to_host(const Tensor& src, float* dst) override;
  Status synchronize() override {
    LS_RETURN_IF_ERROR(prepare());
    return cuda_error(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  Status begin_step(const StepMeta& meta) override;
  Status embedding(const Tensor& table, const Tensor& out) override;
  Status matmul(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate) override;
  Status add_bias(const Tensor& y, const Tensor& bias) override;
  Status rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override;
  Status add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                      const Tensor& out) override;
  Status head_rms_norm(const Tensor& x, int32_t head_dim, const Tensor& weight, float eps) override;
  Status rope(const Tensor& x, int32_t head_dim, const Tensor& inv_freq) override;
  Status write_kv(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                  const Tensor& v_cache) override;
  Status attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                   const AttentionShape& shape, const Tensor& out) override;
  Status silu_mul(const Tensor& gate_up, const Tensor& out) override;
  Status gather_logits_rows(const Tensor& x, const Tensor& out) override;
  Status lora_shrink(const Tensor& x, std::span<const int32_t> tables, const Tensor& tmp) override;
  Status lora_expand(const Tensor& tmp, std::span<const int32_t> tables,
                     std::span<const Tensor> outputs) override;
  Status sample(const Tensor& logits, std::span<const SampleParams> params,
                std::vector<SampleResult>* results) override;

  // CUDA-only entry points (cuda_backend.h).
  CudaGraphStats graph_stats() const { return recorder_->stats(); }
  Status fill_uniform(const Tensor& t, uint64_t seed, float lo, float hi);
  Result<double> read_bandwidth(size_t bytes, int repeats);
  Result<double> upload_milliseconds(uint64_t ticket);

 private:
  Status set_device() const { return cuda_error(cudaSetDevice(device_), "cudaSetDevice"); }
  // Makes the device current and launches every recorded op.
  Status prepare() {
    LS_RETURN_IF_ERROR(set_device());
    return recorder_->flush();
  }
  Status need_step(const char* op) const {
    if (meta_ == nullptr)
      return failed_precondition_error("cuda backend: {} needs begin_step first", op);
    return ok_status();
  }
  Status check_tensor(const Tensor& t, DType want, const char* op, const char* name) const;
  Status check_lora_call(const char* op, std::span<const int32_t> tables, const Tensor& tmp,
                         int32_t* max_rank, cuda::LoraTables* lt) const;
  Status check_block_tables(int64_t cache_rows, int32_t block_size);
  // Grows `s` to `bytes`; launches pending ops first (they may hold its old address).
  Status ensure(DeviceScratch& s, size_t bytes);
  Status ensure_pinned(PinnedScratch& s, size_t bytes);
  // Grid rows of a kernel that iterates over `actual` tiles: for a decode step the row count, a
  // bound that stays the same from step to step (so a graph replays it, and the eager launch of
  // the same step is the very same kernel); else the count itself.
  int64_t grid_tiles(int64_t actual) const {
    return step_.decode_only() ? meta_->num_rows() : actual;
  }
  void record(const Fingerprint& f, cuda::StepRecorder::LaunchFn fn) {
    recorder_->record(f, std::move(fn));
  }

  const int device_;
  const DType dtype_;
  const bool graphs_;
  std::string name_;
  int cc_major_ = 0, cc_minor_ = 0, sm_count_ = 1;
  size_t total_memory_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaStream_t upload_stream_ = nullptr;
  std::unique_ptr<cuda::Gemm> gemm_;
  std::unique_ptr<cuda::StepRecorder> recorder_;
  cuda::DeviceStep step_;
  const StepMeta* meta_ = nullptr;
  int64_t checked_cache_rows_ = -1;  // block tables validated for this cache and block size
  int32_t checked_block_size_ = -1;
  DeviceScratch attention_scratch_, staging_, sample_scratch_, sample_params_, sample_out_;
  PinnedScratch sample_params_host_, sample_out_host_;
  std::vector<float> host_row_;  // a row of logits sampled on the host (logit edits, min_p)
  std::map<uint64_t, Upload> uploads_;
  uint64_t next_ticket_ = 0;
  std::map<const char*, size_t> allocations_;  // allocate()'s live buffers and their sizes
};

}  // namespace loraserve::kernels::cuda
