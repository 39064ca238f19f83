// The task registry (load / replace / unload semantics, limits) and the device slot cache (LRU
// among unpinned slots, pinned slots never evicted, expired versions swept).
#include "adapters/registry.h"

#include <gtest/gtest.h>

#include "adapters/adapter_cache.h"
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
    std::vector<LoraModuleWeights> mods;
    LoraModuleWeights w;
    w.layer = 0;
    w.projection = formats::Projection::kQ;
    w.rank = rank;
    w.a.assign(static_cast<size_t>(rank * config_.hidden_size), value);
    w.b.assign(static_cast<size_t>(config_.q_dim() * rank), value);
    mods.push_back(w);
    auto a = LoraAdapter::from_weights(mods, config_, backend_.get(), 64);
    EXPECT_TRUE(a.ok()) << a.status().to_string();
    return *a;
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

TEST_F(RegistryTest, CacheEvictsLeastRecentlyUsedUnpinnedSlot) {
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

TEST_F(RegistryTest, SweepFreesVersionsNobodyHolds) {
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
