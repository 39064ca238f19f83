// The device slot cache: LRU among unpinned slots, pinned slots never evicted, versions nobody
// holds swept; and, on a backend with its own device memory (a double of the CPU backend whose
// asynchronous uploads can be held back or made to fail), a slot is ready when its upload lands,
// a failed upload is never ready and reports its error, and the slot is emptied once nobody pins
// it, so the adapter is uploaded afresh.
#include "adapters/adapter_cache.h"

#include <gtest/gtest.h>

#include "adapters/registry.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"
#include "tests/adapters/fixture_model_test.h"
#include "tests/kernels/fake_device_backend.h"

namespace loraserve::adapters {
namespace {

constexpr const char* kModel = "tests/reference/fixtures/llama_mha_f32";

class AdapterCacheTest : public testing::FixtureModelTest {};

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

class DeviceAdapterCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { config_ = *formats::load_model_config(kModel); }
  AdapterRef make(AdapterRegistry& reg, const std::string& task) {
    auto a = testing::q_only_adapter(config_, &backend_, 4, 0.25f);
    EXPECT_NE(a, nullptr);
    auto v = reg.add(task, a, false);
    EXPECT_TRUE(v.ok()) << v.status().to_string();
    return *v;
  }
  formats::ModelConfig config_;
  testing::FakeDeviceBackend backend_;
};

TEST_F(DeviceAdapterCacheTest, SlotIsReadyWhenItsUploadLands) {
  AdapterRegistry reg(config_, &backend_, RegistryOptions{8, 64});
  AdapterCache cache(&backend_, config_, 2);
  const AdapterRef a = make(reg, "a");
  const auto slot = cache.acquire(a);
  ASSERT_TRUE(slot.has_value());
  EXPECT_FALSE(cache.ready(*slot));
  EXPECT_TRUE(cache.failure(*slot).ok());
  backend_.landed.insert(backend_.uploads);
  EXPECT_TRUE(cache.ready(*slot));
  EXPECT_EQ(cache.slice(*slot, lora_table(0, formats::Projection::kQ)).rank, 4);
}

TEST_F(DeviceAdapterCacheTest, FailedUploadIsNeverReadyAndIsRetriedOnceUnpinned) {
  AdapterRegistry reg(config_, &backend_, RegistryOptions{8, 64});
  AdapterCache cache(&backend_, config_, 2);
  const AdapterRef a = make(reg, "a");
  const auto slot = cache.acquire(a);
  ASSERT_TRUE(slot.has_value());
  const uint64_t first_upload = backend_.uploads;
  backend_.failed.insert(first_upload);
  EXPECT_FALSE(cache.ready(*slot)) << "a failed upload must not make the slot ready";
  const Status failure = cache.failure(*slot);
  EXPECT_EQ(failure.code(), StatusCode::kInternal);
  EXPECT_NE(failure.message().find("task=a"), std::string::npos) << failure.to_string();
  // A second request for the same adapter while the failed slot is pinned shares its failure.
  const auto again = cache.acquire(a);
  ASSERT_EQ(again, slot);
  EXPECT_FALSE(cache.ready(*again));
  EXPECT_FALSE(cache.failure(*again).ok());
  cache.release(*slot);
  cache.release(*again);
  // Nobody pins it now: the next acquisition uploads the adapter afresh.
  const auto retry = cache.acquire(a);
  ASSERT_TRUE(retry.has_value());
  EXPECT_GT(backend_.uploads, first_upload);
  EXPECT_TRUE(cache.failure(*retry).ok());
  backend_.landed.insert(backend_.uploads);
  EXPECT_TRUE(cache.ready(*retry));
}

}  // namespace
}  // namespace loraserve::adapters
