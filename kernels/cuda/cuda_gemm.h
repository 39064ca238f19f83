// GEMMs of the CUDA backend through cuBLASLt: y (n, out) = x (n, in) · w (out, in)ᵀ (+ y), x and
// w in the compute dtype (BF16 or F16), y in the compute dtype or F32, f32 accumulation.
// Descriptors and the heuristic's algorithm are planned once per shape, strides, dtypes and
// pointer alignment, and cached (the least recently used plan goes beyond kMaxPlans: prefill
// chunks of every length would otherwise grow the cache without bound); running a plan enqueues
// one cublasLtMatmul (capturable in a CUDA graph: the workspace is our own, never allocated
// during the call). Owns the cuBLASLt handle and the workspace. Not thread-safe (the backend's
// thread).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <tuple>

#include "common/dtype.h"
#include "common/status.h"

namespace loraserve::kernels::cuda {

class Gemm {
 public:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t w_layout = nullptr, x_layout = nullptr, y_layout = nullptr;
    cublasLtMatmulAlgo_t algo = {};
    float beta = 0.0f;
  };

  static Result<std::unique_ptr<Gemm>> create(size_t workspace_bytes);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  static constexpr size_t kMaxPlans = 1024;

  // The plan for these operands (built on first use). The pointers only contribute their
  // alignment. A holder of the returned plan (a recorded launch) keeps it alive after the cache
  // has let it go.
  Result<std::shared_ptr<const Plan>> plan(DType in_dtype, DType out_dtype, int64_t n, int64_t out,
                                           int64_t in, const void* x, int64_t ldx, const void* w,
                                           int64_t ldw, const void* y, int64_t ldy,
                                           bool accumulate);
  size_t cached_plans() const { return plans_.size(); }
  // Enqueues the product on `stream`.
  Status run(const Plan& plan, const void* x, const void* w, void* y, cudaStream_t stream) const;

 private:
  Gemm() = default;
  // dtypes, n, out, in, ldx, ldw, ldy, accumulate, and the three pointers' alignments.
  using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int,
                         int, int>;

  struct Cached {
    std::shared_ptr<const Plan> plan;
    std::list<Key>::iterator lru;
  };

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Cached> plans_;
  std::list<Key> lru_;  // most recently used first
};

}  // namespace loraserve::kernels::cuda
