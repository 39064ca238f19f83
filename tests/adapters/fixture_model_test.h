// FixtureModelTest: the gtest fixture the registry and adapter-cache tests share. Test-only (it
// brings gtest; benches include adapter_test_util.h alone).
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve::testing {

// The f32 reference fixture's config on a one-thread CPU backend, and q-only adapters made in
// memory for it (registry and cache tests).
class FixtureModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = *formats::load_model_config("tests/reference/fixtures/llama_mha_f32");
    backend_ = kernels::create_cpu_backend(1);
  }
  std::shared_ptr<const adapters::LoraAdapter> make(int32_t rank, float value) {
    auto a = q_only_adapter(config_, backend_.get(), rank, value);
    EXPECT_NE(a, nullptr);
    return a;
  }
  formats::ModelConfig config_;
  std::unique_ptr<kernels::Backend> backend_;
};

}  // namespace loraserve::testing
