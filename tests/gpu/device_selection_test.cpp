// What --device auto / cuda / cuda:N do on the machine the tests run on (with or without a GPU):
// auto takes the GPU when one is visible and the CPU otherwise; cuda without a GPU (or in a build
// without CUDA) fails with a message that says why; a device that does not exist is refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/backend.h"
#include "tests/gpu/gpu_test_util.h"

namespace loraserve::testing {
namespace {

using ::testing::HasSubstr;

Result<std::unique_ptr<kernels::Backend>> make(const std::string& device) {
  kernels::BackendOptions o;
  o.device = device;
  o.cpu_threads = 1;
  return kernels::create_backend(o);
}

TEST(DeviceSelectionTest, AutoTakesTheGpuWhenVisibleElseTheCpu) {
  auto b = make("auto");
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ((*b)->kind(), no_gpu_reason().empty() ? "cuda" : "cpu") << (*b)->describe();
}

TEST(DeviceSelectionTest, CudaWithoutAGpuFailsWithTheReason) {
  if (no_gpu_reason().empty()) GTEST_SKIP() << "a GPU is visible here";
  auto b = make("cuda");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(b.status().message(), HasSubstr("--device cuda"));
  EXPECT_THAT(b.status().message(), kernels::cuda_compiled_in() ? HasSubstr("no CUDA GPU")
                                                                : HasSubstr("no CUDA backend"));
}

TEST(DeviceSelectionTest, CudaOnAGpuIsTheCudaBackend) {
  LS_SKIP_WITHOUT_GPU();
  auto b = make("cuda");
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ((*b)->kind(), "cuda");
  EXPECT_THAT((*b)->describe(), HasSubstr("cuda:0"));
  EXPECT_EQ((*b)->activation_dtype(), DType::kBF16);
  auto missing = make("cuda:99");
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument) << missing.status().to_string();
}

TEST(DeviceSelectionTest, UnknownDevicesAreRefused) {
  auto b = make("tpu");
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("'tpu'"));
  if (kernels::cuda_compiled_in()) {
    auto bad = make("cuda:x");
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status().to_string();
  }
}

}  // namespace
}  // namespace loraserve::testing
