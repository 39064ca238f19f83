// The CUDA backend's internals that the Backend contract cannot reach: launches are not blamed
// for an earlier runtime call's error, a graph capture that fails falls back to eager launches
// (once, not on every other step), and the cuBLASLt plan cache stays bounded while evicted plans
// stay usable by whoever holds them. Built only with the CUDA backend; skipped without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_graphs.h"
#include "kernels/cuda/launchers.h"
#include "tests/gpu/gpu_test_util.h"

namespace loraserve::testing {
namespace {

using kernels::cuda::Fingerprint;
using kernels::cuda::StepRecorder;

// A device buffer of floats, freed at scope exit.
struct DeviceFloats {
  explicit DeviceFloats(size_t n) : n(n) {
    ok = cudaMalloc(&data, n * sizeof(float)) == cudaSuccess;
  }
  ~DeviceFloats() {
    if (data != nullptr) cudaFree(data);
  }
  std::vector<float> read() const {
    std::vector<float> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), data, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  float* data = nullptr;
  size_t n = 0;
  bool ok = false;
};

// Leaves a non-sticky error in the runtime's last-error slot, as a failed call that was checked
// through its return value (and not through cudaGetLastError) does.
void leave_stale_error() {
  void* p = nullptr;
  ASSERT_NE(cudaMalloc(&p, size_t{1} << 62), cudaSuccess);
  ASSERT_NE(cudaPeekAtLastError(), cudaSuccess) << "the failed cudaMalloc left no error to blame";
}

TEST(CudaInternalsTest, StaleRuntimeErrorIsNotBlamedOnTheNextLaunch) {
  LS_SKIP_WITHOUT_GPU();
  DeviceFloats buf(1024);
  ASSERT_TRUE(buf.ok);
  leave_stale_error();
  const kernels::cuda::Launch l = kernels::cuda::fill_uniform(buf.data, DType::kF32, 1, 1024, 1024,
                                                              7, 1.0f, 2.0f, /*stream=*/nullptr);
  EXPECT_TRUE(l.ok()) << (l.refused ? l.refused : cudaGetErrorString(l.error));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (float v : buf.read()) ASSERT_TRUE(v >= 1.0f && v < 2.0f) << v;

  // The same through the Backend: a whole op after the stale error.
  kernels::BackendOptions o;
  o.device = "cuda";
  auto backend = kernels::create_backend(o);
  ASSERT_TRUE(backend.ok()) << backend.status().to_string();
  auto dst = (*backend)->allocate(1024 * sizeof(float));
  ASSERT_TRUE(dst.ok());
  leave_stale_error();
  const Status st =
      kernels::cuda_fill_uniform(**backend, dst->view(DType::kF32, 1, 1024), 3, -1.0f, 1.0f);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

// Every element of a buffer that record_step's ops fill: each byte 0x3F.
float filled_value() {
  const uint32_t bits = 0x3F3F3F3Fu;
  float v = 0;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

// One op per element, filling it with bytes 0x3F (a capturable memset), plus, when asked, an op
// that queries the stream: not allowed while the stream is captured, so its capture fails.
void record_step(StepRecorder& r, float* data, int ops, bool uncapturable, cudaStream_t stream) {
  r.begin(/*replayable=*/true, /*salt=*/42);
  for (int i = 0; i < ops; ++i) {
    r.record(Fingerprint(1).add(int32_t{i}), [=] {
      return kernels::cuda::cuda_error(cudaMemsetAsync(data + i, 0x3F, sizeof(float), stream),
                                       "cudaMemsetAsync");
    });
  }
  if (uncapturable) {
    r.record(Fingerprint(2), [=] {
      const cudaError_t e = cudaStreamQuery(stream);
      if (e == cudaSuccess || e == cudaErrorNotReady) return ok_status();
      return kernels::cuda::cuda_error(e, "cudaStreamQuery");
    });
  }
}

TEST(CudaInternalsTest, FailedGraphCaptureFallsBackToEagerOnce) {
  LS_SKIP_WITHOUT_GPU();
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  {
    StepRecorder recorder(stream, /*graphs_enabled=*/true, /*max_graphs=*/4);
    constexpr int kOps = 12;
    DeviceFloats buf(kOps);
    ASSERT_TRUE(buf.ok);
    const float expected = filled_value();
    for (int step = 0; step < 5; ++step) {
      ASSERT_EQ(cudaMemsetAsync(buf.data, 0, kOps * sizeof(float), stream), cudaSuccess);
      record_step(recorder, buf.data, kOps, /*uncapturable=*/true, stream);
      const Status st = recorder.flush();
      ASSERT_TRUE(st.ok()) << "step " << step << ": " << st.to_string();
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      for (float v : buf.read()) ASSERT_EQ(v, expected) << "step " << step;
    }
    const kernels::CudaGraphStats s = recorder.stats();
    EXPECT_EQ(s.capture_failures, 1u) << "the failed shape must not be captured again";
    EXPECT_EQ(s.captured, 0u);
    EXPECT_EQ(s.eager_steps, 5u);

    // A capturable step of another shape is still captured and replayed.
    for (int step = 0; step < 3; ++step) {
      ASSERT_EQ(cudaMemsetAsync(buf.data, 0, kOps * sizeof(float), stream), cudaSuccess);
      record_step(recorder, buf.data, kOps, /*uncapturable=*/false, stream);
      ASSERT_TRUE(recorder.flush().ok());
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      for (float v : buf.read()) ASSERT_EQ(v, expected) << "capturable step " << step;
    }
    EXPECT_EQ(recorder.stats().captured, 1u);
    EXPECT_EQ(recorder.stats().replayed, 2u);
  }
  cudaStreamDestroy(stream);
}

TEST(CudaInternalsTest, GemmPlanCacheIsBoundedAndEvictedPlansStayUsable) {
  LS_SKIP_WITHOUT_GPU();
  auto gemm = kernels::cuda::Gemm::create(4 << 20);
  ASSERT_TRUE(gemm.ok()) << gemm.status().to_string();
  constexpr int64_t kIn = 64, kOut = 32, kMaxRows = 1100;
  void *x = nullptr, *w = nullptr, *y = nullptr;
  ASSERT_EQ(cudaMalloc(&x, kMaxRows * kIn * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&w, kOut * kIn * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&y, kMaxRows * kOut * sizeof(float)), cudaSuccess);
  ASSERT_TRUE(
      kernels::cuda::fill_uniform(x, DType::kBF16, kMaxRows, kIn, kIn, 1, -1, 1, nullptr).ok());
  ASSERT_TRUE(kernels::cuda::fill_uniform(w, DType::kBF16, kOut, kIn, kIn, 2, -1, 1, nullptr).ok());
  auto first =
      (*gemm)->plan(DType::kBF16, DType::kF32, 1, kOut, kIn, x, kIn, w, kIn, y, kOut, false);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  for (int64_t n = 2; n <= kMaxRows; ++n) {
    auto p = (*gemm)->plan(DType::kBF16, DType::kF32, n, kOut, kIn, x, kIn, w, kIn, y, kOut, false);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
  }
  EXPECT_LE((*gemm)->cached_plans(), kernels::cuda::Gemm::kMaxPlans);
  // The first plan was evicted from the cache but is held here: it still runs, and gives what a
  // fresh plan of the same shape gives.
  std::vector<float> a(kOut), b(kOut);
  ASSERT_TRUE((*gemm)->run(**first, x, w, y, nullptr).ok());
  ASSERT_EQ(cudaMemcpy(a.data(), y, kOut * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  auto fresh =
      (*gemm)->plan(DType::kBF16, DType::kF32, 1, kOut, kIn, x, kIn, w, kIn, y, kOut, false);
  ASSERT_TRUE(fresh.ok());
  ASSERT_EQ(cudaMemset(y, 0, kOut * sizeof(float)), cudaSuccess);
  ASSERT_TRUE((*gemm)->run(**fresh, x, w, y, nullptr).ok());
  ASSERT_EQ(cudaMemcpy(b.data(), y, kOut * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(a, b);
  first->reset();
  gemm->reset();  // a plan held past its Gemm is destroyed without the handle
  fresh->reset();
  cudaFree(x);
  cudaFree(w);
  cudaFree(y);
}

}  // namespace
}  // namespace loraserve::testing
