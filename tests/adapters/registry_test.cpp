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

TEST_F(RegistryTest, ALoadNoLongerWantedNeverTakesEffect) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{8, 64});
  testing::TempDir dir;
  testing::write_adapter(testing::make_adapter_spec(config_, 4, 3), dir.path() / "a");
  const std::string path = (dir.path() / "a").string();
  auto kept = reg.add("t", make(4, 0.1f), false);
  ASSERT_TRUE(kept.ok());
  // Given up before anything was read, part-way through, and at the very last moment (the check
  // made under the lock before the swap): each time the registry stays as it was.
  for (int give_up_at : {1, 5, 1000000}) {
    int asked = 0;
    LoadOptions options;
    options.replace = true;
    options.still_wanted = [&]() -> Status {
      if (++asked >= give_up_at) return cancelled_error("the client went away");
      return ok_status();
    };
    auto r = reg.load("t", path, options);
    if (give_up_at == 1000000) {
      // Never gave up: the load replaces the version, having asked once per module and once more.
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      EXPECT_GT(asked, 1);
      break;
    }
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kCancelled);
    EXPECT_EQ(reg.find("t"), *kept);
  }
  int total = 0;
  LoadOptions count;
  count.still_wanted = [&] {
    ++total;
    return ok_status();
  };
  ASSERT_TRUE(reg.load("u", path, count).ok());
  // The last question is asked under the lock, right before the swap.
  LoadOptions last;
  int asked = 0;
  last.still_wanted = [&]() -> Status {
    return ++asked == total ? deadline_exceeded_error("deadline passed") : ok_status();
  };
  auto late = reg.load("v", path, last);
  EXPECT_EQ(late.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(reg.find("v"), nullptr);
}

TEST_F(RegistryTest, LimitsAndTaskIds) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{2, 64});
  ASSERT_TRUE(reg.add("a", make(4, 0.1f), false).ok());
  ASSERT_TRUE(reg.add("b", make(4, 0.1f), false).ok());
  auto full = reg.add("c", make(4, 0.1f), false);
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(reg.add("b", make(4, 0.3f), true).ok());  // replacing needs no new room
  for (const char* bad : {"", "has space", "slash/es", "q\"uote"}) {
    EXPECT_EQ(reg.add(bad, make(4, 0.1f), false).status().code(), StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ(reg.add(std::string(129, 'x'), make(4, 0.1f), false).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.load("c", "/nonexistent/adapter", false).status().code(),
            StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace loraserve::adapters
