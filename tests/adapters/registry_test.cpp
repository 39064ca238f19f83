// The task registry: load / replace / unload semantics, limits, task IDs, and the host tier's
// LRU eviction among adapters loaded on demand (never one a request holds).
#include "adapters/registry.h"

#include <gtest/gtest.h>

#include "kernels/cpu/cpu_backend.h"
#include "tests/adapters/adapter_test_util.h"
#include "tests/adapters/fixture_model_test.h"

namespace loraserve::adapters {
namespace {

class RegistryTest : public testing::FixtureModelTest {};

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

// Adapters on disk under `root/<task>`, loaded on demand into a registry of `capacity`.
class HostTierTest : public RegistryTest {
 protected:
  void SetUp() override {
    RegistryTest::SetUp();
    for (const char* task : {"a", "b", "c", "d"}) {
      testing::write_adapter(testing::make_adapter_spec(config_, 2, 7), dir_.path() / task);
    }
  }
  std::string dir(const std::string& task) const { return (dir_.path() / task).string(); }
  testing::TempDir dir_;
};

TEST_F(HostTierTest, OnDemandEvictsLeastRecentlyUsedThatNoRequestHolds) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{2, 64});
  std::vector<RegistryEvent> events;
  reg.set_listener([&](const RegistryEvent& e) { events.push_back(e); });
  {
    auto a = reg.load_on_demand("a", dir("a"));
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    EXPECT_EQ((*a)->in_flight.load(), 1);
    EXPECT_EQ((*a)->trigger, LoadTrigger::kOnDemand);
    ASSERT_TRUE(reg.load_on_demand("b", dir("b")).ok());
  }
  EXPECT_EQ(reg.find("a")->in_flight.load(), 0);  // the leases are gone with their scope
  // a was used after b: b is the least recently used, and c takes its place.
  { AdapterLease touch = reg.acquire("a"); }
  auto c = reg.load_on_demand("c", dir("c"));
  ASSERT_TRUE(c.ok());
  EXPECT_NE(reg.find("a"), nullptr);
  EXPECT_EQ(reg.find("b"), nullptr);
  // Requests hold both a and c: d finds nothing to evict.
  AdapterLease hold_a = reg.acquire("a");
  auto d = reg.load_on_demand("d", dir("d"));
  EXPECT_EQ(d.status().code(), StatusCode::kResourceExhausted) << d.status().to_string();
  EXPECT_NE(d.status().message().find("2 with requests in flight"), std::string::npos)
      << d.status().message();
  c = AdapterLease();  // c's request ends: c is evictable now, a still is not
  d = reg.load_on_demand("d", dir("d"));
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_EQ(reg.find("c"), nullptr);
  EXPECT_NE(reg.find("a"), nullptr);
  std::vector<std::pair<RegistryEvent::Kind, std::string>> seen;
  for (const auto& e : events) seen.emplace_back(e.kind, e.task_id);
  using K = RegistryEvent::Kind;
  EXPECT_EQ(seen, (std::vector<std::pair<K, std::string>>{{K::kLoaded, "a"},
                                                          {K::kLoaded, "b"},
                                                          {K::kEvicted, "b"},
                                                          {K::kLoaded, "c"},
                                                          {K::kEvicted, "c"},
                                                          {K::kLoaded, "d"}}));
  for (const auto& e : events) {
    if (e.kind == K::kLoaded) {
      EXPECT_GT(e.seconds, 0.0);
    }
  }
}

TEST_F(HostTierTest, ExplicitLoadsAreNeverEvictedButMayEvictOnDemandOnes) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{2, 64});
  ASSERT_TRUE(reg.load("a", dir("a"), false).ok());
  ASSERT_TRUE(reg.load_on_demand("b", dir("b")).ok());
  // The on-demand b makes room for the explicit c; then nothing is evictable.
  ASSERT_TRUE(reg.load("c", dir("c"), false).ok());
  EXPECT_EQ(reg.find("b"), nullptr);
  auto d = reg.load_on_demand("d", dir("d"));
  EXPECT_EQ(d.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(d.status().message().find("2 loaded by Admin or --preload"), std::string::npos)
      << d.status().message();
  EXPECT_EQ(reg.size(), 2u);
}

TEST_F(HostTierTest, OnDemandOfAServedTaskLeasesItAndAFailureChangesNothing) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{4, 64});
  auto a = *reg.load("a", dir("a"), false);
  auto lease = reg.load_on_demand("a", dir("b"));  // served already: no file is read
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->ref(), a);
  EXPECT_EQ(a->in_flight.load(), 1);
  int failures = 0;
  reg.set_listener(
      [&](const RegistryEvent& e) { failures += e.kind == RegistryEvent::Kind::kLoadFailed; });
  auto missing = reg.load_on_demand("z", (dir_.path() / "z").string());
  EXPECT_FALSE(missing.ok());
  EXPECT_EQ(failures, 1);
  EXPECT_EQ(reg.size(), 1u);
  AdapterLease copy = *lease;  // a copy is one more hold
  EXPECT_EQ(a->in_flight.load(), 2);
}

TEST_F(HostTierTest, TellsWhenRoomMayFree) {
  AdapterRegistry reg(config_, backend_.get(), RegistryOptions{2, 64});
  std::vector<uint64_t> told;
  reg.room_signal()->set_listener([&] { told.push_back(reg.room_signal()->generation()); });
  ASSERT_TRUE(reg.load("a", dir("a"), false).ok());
  auto b = reg.load_on_demand("b", dir("b"));
  ASSERT_TRUE(b.ok());
  AdapterLease second = *b;
  EXPECT_TRUE(reg.room_may_free());  // b is held, and evictable once its requests end
  bool no_room = false;
  auto c = reg.load_on_demand("c", dir("c"), {}, &no_room);
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(no_room);  // the one failure that waiting for room cures
  auto gone = reg.load_on_demand("z", (dir_.path() / "z").string(), {}, &no_room);
  EXPECT_FALSE(gone.ok());
  EXPECT_TRUE(no_room) << "the tier is full: checked before any file is read";
  b = AdapterLease();
  EXPECT_TRUE(told.empty());  // one request still holds b
  second = AdapterLease();
  EXPECT_EQ(told, std::vector<uint64_t>{1});  // the last one ended
  // b is evictable now: a loader whose try failed while b was held must try again, not give up.
  EXPECT_TRUE(reg.room_may_free());
  { AdapterLease explicit_lease = reg.acquire("a"); }
  EXPECT_EQ(told.size(), 1u);                           // an explicit load's requests free no room
  ASSERT_TRUE(reg.load_on_demand("c", dir("c")).ok());  // evicts b
  EXPECT_EQ(reg.find("b"), nullptr);
  EXPECT_EQ(told.size(), 2u);                        // c's lease ended with the temporary
  ASSERT_TRUE(reg.load("d", dir("d"), false).ok());  // evicts c: two explicit loads fill it
  EXPECT_FALSE(reg.room_may_free());
  ASSERT_TRUE(reg.unload("d").ok());
  EXPECT_EQ(told, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(reg.room_may_free());
  auto missing = reg.load_on_demand("z", (dir_.path() / "z").string(), {}, &no_room);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(no_room);  // room there was: the folder failed
  reg.room_signal()->set_listener(nullptr);
}

}  // namespace
}  // namespace loraserve::adapters
