#include "kernels/cuda/cuda_gemm.h"

#include "kernels/cuda/cuda_check.h"

namespace loraserve::kernels::cuda {
namespace {

Result<cudaDataType_t> cuda_type(DType d) {
  switch (d) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kI32:
    case DType::kI8:
      break;
  }
  return invalid_argument_error("cuda matmul: dtype {} is not a GEMM operand type", dtype_name(d));
}

// The largest power of two (up to 256) that divides the address: what cuBLASLt may assume.
int alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % static_cast<uintptr_t>(align) != 0) align /= 2;
  return align;
}

void destroy(Gemm::Plan& p) {
  if (p.desc != nullptr) cublasLtMatmulDescDestroy(p.desc);
  if (p.w_layout != nullptr) cublasLtMatrixLayoutDestroy(p.w_layout);
  if (p.x_layout != nullptr) cublasLtMatrixLayoutDestroy(p.x_layout);
  if (p.y_layout != nullptr) cublasLtMatrixLayoutDestroy(p.y_layout);
  p = Gemm::Plan{};
}

}  // namespace

Result<std::unique_ptr<Gemm>> Gemm::create(size_t workspace_bytes) {
  std::unique_ptr<Gemm> g(new Gemm());
  LS_CUBLAS_CHECK(cublasLtCreate(&g->handle_));
  LS_CUDA_CHECK(cudaMalloc(&g->workspace_, workspace_bytes));
  g->workspace_bytes_ = workspace_bytes;
  return g;
}

Gemm::~Gemm() {
  plans_.clear();  // plans still held elsewhere outlive the handle: see plan()'s deleter
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

Result<std::shared_ptr<const Gemm::Plan>> Gemm::plan(DType in_dtype, DType out_dtype, int64_t n,
                                                     int64_t out, int64_t in, const void* x,
                                                     int64_t ldx, const void* w, int64_t ldw,
                                                     const void* y, int64_t ldy, bool accumulate) {
  const Key key{static_cast<int>(in_dtype),
                static_cast<int>(out_dtype),
                n,
                out,
                in,
                ldx,
                ldw,
                ldy,
                accumulate,
                alignment_of(x),
                alignment_of(w),
                alignment_of(y)};
  if (auto it = plans_.find(key); it != plans_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.plan;
  }

  LS_ASSIGN_OR_RETURN(const cudaDataType_t in_type, cuda_type(in_dtype));
  LS_ASSIGN_OR_RETURN(const cudaDataType_t out_type, cuda_type(out_dtype));
  // Row-major y = x · wᵀ is column-major yᵀ (out × n) = op(W) · X with W the column-major
  // (in × out) view of w transposed and X the column-major (in × n) view of x.
  Plan p;
  p.beta = accumulate ? 1.0f : 0.0f;
  auto fail = [&](Status s) {
    destroy(p);
    return s.with_context(fmt::format("planning a {}x{}x{} GEMM", n, out, in));
  };
  auto check = [&](cublasStatus_t s, const char* what) { return cublas_error(s, what); };
  const cublasOperation_t trans_w = CUBLAS_OP_T, trans_x = CUBLAS_OP_N;
  for (const Status& s :
       {check(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
              "cublasLtMatmulDescCreate"),
        check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w,
                                             sizeof(trans_w)),
              "set TRANSA"),
        check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_x,
                                             sizeof(trans_x)),
              "set TRANSB"),
        check(cublasLtMatrixLayoutCreate(&p.w_layout, in_type, static_cast<uint64_t>(in),
                                         static_cast<uint64_t>(out), ldw),
              "layout of w"),
        check(cublasLtMatrixLayoutCreate(&p.x_layout, in_type, static_cast<uint64_t>(in),
                                         static_cast<uint64_t>(n), ldx),
              "layout of x"),
        check(cublasLtMatrixLayoutCreate(&p.y_layout, out_type, static_cast<uint64_t>(out),
                                         static_cast<uint64_t>(n), ldy),
              "layout of y")}) {
    if (!s.ok()) return fail(s);
  }
  cublasLtMatmulPreference_t pref = nullptr;
  Status st = check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  if (!st.ok()) return fail(st);
  const uint64_t ws = workspace_bytes_;
  const uint32_t align_w = static_cast<uint32_t>(alignment_of(w));
  const uint32_t align_x = static_cast<uint32_t>(alignment_of(x));
  const uint32_t align_y = static_cast<uint32_t>(alignment_of(y));
  cublasLtMatmulHeuristicResult_t result = {};
  int found = 0;
  for (const Status& s :
       {check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &ws, sizeof(ws)),
              "set max workspace"),
        check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                   &align_w, sizeof(align_w)),
              "set alignment of w"),
        check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                   &align_x, sizeof(align_x)),
              "set alignment of x"),
        check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                   &align_y, sizeof(align_y)),
              "set alignment of y"),
        check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                   &align_y, sizeof(align_y)),
              "set alignment of y"),
        check(cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.w_layout, p.x_layout, p.y_layout,
                                             p.y_layout, pref, 1, &result, &found),
              "cublasLtMatmulAlgoGetHeuristic")}) {
    if (!s.ok()) {
      cublasLtMatmulPreferenceDestroy(pref);
      return fail(s);
    }
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0) {
    return fail(unimplemented_error(
        "cuBLASLt has no algorithm for {} x {} operands with {} output (ldx {}, ldw {}, ldy {})",
        dtype_name(in_dtype), dtype_name(in_dtype), dtype_name(out_dtype), ldx, ldw, ldy));
  }
  p.algo = result.algo;
  // Descriptors need no handle to be destroyed, so a plan may outlive this Gemm.
  auto shared = std::shared_ptr<const Plan>(new Plan(p), [](const Plan* q) {
    Plan doomed = *q;
    destroy(doomed);
    delete q;
  });
  if (plans_.size() >= kMaxPlans) {
    plans_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(key);
  plans_.emplace(key, Cached{shared, lru_.begin()});
  return shared;
}

Status Gemm::run(const Plan& p, const void* x, const void* w, void* y, cudaStream_t stream) const {
  const float alpha = 1.0f;
  LS_CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, w, p.w_layout, x, p.x_layout, &p.beta, y,
                                 p.y_layout, y, p.y_layout, &p.algo, workspace_, workspace_bytes_,
                                 stream));
  return ok_status();
}

}  // namespace loraserve::kernels::cuda
