// The task registry: load / replace / unload semantics, limits, task IDs.
#include "adapters/registry.h"

#include <gtest/gtest.h>

#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve::adapters {
namespace {

constexpr const char* kModel = "tests/reference/fixtures/llama_mha_f32";

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = *formats::load_model_config(kModel);
    backend_ = kernels::create_cpu_backend(1);
  }
  std::shared_ptr<const LoraAdapter> make(int32_t rank, float value) {
    auto a = testing::q_only_adapter(config_, backend_.get(), rank, value);
    EXPECT_NE(a, nullptr);
    return a;
  }
  formats::ModelConfig config_;
  std::unique_ptr<kernels::Backend> backend_;
};

TEST_F(RegistryTest, LoadReplaceUnload) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{8, 64});
  auto v1 = reg.add("summarize", make(4, 0.1f), false);
  ASSERT_TRUE(v1.ok());
  auto again = reg.add("summarize", make(4, 0.2f), false);
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(reg.find("summarize"), *v1);
  auto v2 = reg.add("summarize", make(8, 0.2f), true);
  ASSERT_TRUE(v2.ok());
  EXPECT_GT((*v2)->version, (*v1)->version);
  EXPECT_EQ(reg.find("summarize"), *v2);
  EXPECT_EQ((*v1)->adapter->max_rank(), 4);  // the old version lives on while someone holds it
  EXPECT_TRUE(reg.unload("summarize").ok());
  EXPECT_EQ(reg.find("summarize"), nullptr);
  EXPECT_EQ(reg.unload("summarize").code(), StatusCode::kNotFound);
  EXPECT_EQ(reg.size(), 0u);
}

TEST_F(RegistryTest, LimitsAndTaskIds) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{2, 64});
  ASSERT_TRUE(reg.add("a", make(4, 0.1f), false).ok());
  ASSERT_TRUE(reg.add("b", make(4, 0.1f), false).ok());
  auto full = reg.add("c", make(4, 0.1f), false);
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(reg.add("b", make(4, 0.3f), true).ok());  // replacing needs no new room
  for (const char* bad : {"", "has space", "slash/es", "q\"uote"}) {
    EXPECT_EQ(reg.add(bad, make(4, 0.1f), false).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(reg.add(std::string(129, 'x'), make(4, 0.1f), false).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.load("c", "/nonexistent/adapter", false).status().code(), StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace loraserve::adapters
