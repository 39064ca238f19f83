// The device slot cache: LRU among unpinned slots, pinned slots never evicted, versions nobody
// holds swept.
#include "adapters/adapter_cache.h"

#include <gtest/gtest.h>

#include "adapters/registry.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve::adapters {
namespace {

constexpr const char* kModel = "tests/reference/fixtures/llama_mha_f32";

class AdapterCacheTest : public ::testing::Test {
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

TEST_F(AdapterCacheTest, CacheEvictsLeastRecentlyUsedUnpinnedSlot) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{8, 64});
  auto a = *reg.add("a", make(4, 0.1f), false);
  auto b = *reg.add("b", make(4, 0.2f), false);
  auto c = *reg.add("c", make(4, 0.3f), false);
  AdapterCache cache(backend_.get(), config_, 2);
  auto sa = cache.acquire(a);
  auto sb = cache.acquire(b);
  ASSERT_TRUE(sa && sb);
  EXPECT_NE(*sa, *sb);
  EXPECT_TRUE(cache.ready(*sa));
  EXPECT_EQ(cache.slice(*sa, lora_table(0, formats::Projection::kQ)).rank, 4);
  EXPECT_EQ(cache.slice(*sa, lora_table(1, formats::Projection::kQ)).rank, 0);
  // Both slots pinned: c must wait, and nothing is evicted.
  EXPECT_FALSE(cache.acquire(c).has_value());
  EXPECT_EQ(cache.counters().evictions, 0u);
  // Unpin a (used before b): c takes a's slot.
  cache.release(*sa);
  auto sc = cache.acquire(c);
  ASSERT_TRUE(sc.has_value());
  EXPECT_EQ(*sc, *sa);
  EXPECT_EQ(cache.counters().evictions, 1u);
  EXPECT_EQ(cache.counters().loads, 3u);
  // b is still resident: acquiring it again is a hit in the same slot.
  cache.release(*sb);
  auto sb2 = cache.acquire(b);
  EXPECT_EQ(sb2, sb);
  EXPECT_EQ(cache.counters().hits, 1u);
}

TEST_F(AdapterCacheTest, SweepFreesVersionsNobodyHolds) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{8, 64});
  AdapterCache cache(backend_.get(), config_, 2);
  std::weak_ptr<const LoraAdapter> weights;
  {
    auto a = *reg.add("a", make(4, 0.1f), false);
    weights = a->adapter;
    auto slot = cache.acquire(a);
    ASSERT_TRUE(slot.has_value());
    cache.release(*slot);
  }
  EXPECT_EQ(cache.slots_used(), 1);
  ASSERT_TRUE(reg.unload("a").ok());
  EXPECT_TRUE(weights.expired());  // the cache holds versions weakly
  cache.sweep();
  EXPECT_EQ(cache.slots_used(), 0);
  EXPECT_TRUE(cache.snapshot().empty());
}

}  // namespace
}  // namespace loraserve::adapters
