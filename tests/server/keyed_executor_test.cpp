// KeyedExecutor: jobs of one key run one at a time in order; a job blocked on one key holds up
// neither the other keys nor shutdown's draining; a full queue refuses. And AdminCall: a load
// whose client cancelled or whose deadline passed says so.
#include "server/keyed_executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <vector>

#include "server/admin_service.h"

namespace loraserve::server {
namespace {

using namespace std::chrono_literals;

TEST(KeyedExecutorTest, JobsOfOneKeyRunInOrderOneAtATime) {
  std::mutex mu;
  std::vector<int> order;
  std::atomic<int> running{0};
  std::atomic<bool> overlapped{false};
  {
    KeyedExecutor ex(4, 100);
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(ex.post("task", [&, i] {
        if (running.fetch_add(1) != 0) overlapped = true;
        std::this_thread::yield();
        {
          std::lock_guard<std::mutex> lock(mu);
          order.push_back(i);
        }
        running.fetch_sub(1);
      }));
    }
  }  // the destructor runs every queued job
  EXPECT_FALSE(overlapped);
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], i);
}

TEST(KeyedExecutorTest, ABlockedKeyHoldsUpNoOtherKey) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> slow_started;
  std::atomic<int> others_done{0};
  std::atomic<bool> same_key_ran{false};
  KeyedExecutor ex(2, 100);
  ASSERT_TRUE(ex.post("slow", [&] {
    slow_started.set_value();
    released.wait();
  }));
  slow_started.get_future().wait();
  ASSERT_TRUE(ex.post("slow", [&] { same_key_ran = true; }));
  std::promise<void> all_done;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(ex.post("other" + std::to_string(i), [&] {
      if (others_done.fetch_add(1) + 1 == 20) all_done.set_value();
    }));
  }
  // Every other key runs while "slow" is still blocked (no timing assumption: this waits for
  // them, and fails by the ctest timeout if they never run).
  all_done.get_future().wait();
  EXPECT_EQ(others_done.load(), 20);
  EXPECT_FALSE(same_key_ran.load());  // still behind the blocked job of its key
  release.set_value();
}

TEST(KeyedExecutorTest, AFullQueueRefuses) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> started;
  KeyedExecutor ex(1, 3);
  ASSERT_TRUE(ex.post("a", [&] {
    started.set_value();
    released.wait();
  }));
  started.get_future().wait();  // the running job no longer counts as queued
  EXPECT_TRUE(ex.post("a", [] {}));
  EXPECT_TRUE(ex.post("b", [] {}));
  EXPECT_TRUE(ex.post("c", [] {}));
  EXPECT_FALSE(ex.post("d", [] {}));
  release.set_value();
}

TEST(AdminCallTest, SaysWhyALoadIsNoLongerWanted) {
  AdminCall open(std::chrono::system_clock::now() + 1h);
  EXPECT_TRUE(open.still_wanted("load").ok());
  open.cancel();
  Status cancelled = open.still_wanted("load");
  EXPECT_EQ(cancelled.code(), StatusCode::kCancelled);
  EXPECT_NE(cancelled.message().find("not applied"), std::string::npos);
  AdminCall late(std::chrono::system_clock::now() - 1ms);
  Status expired = late.still_wanted("load");
  EXPECT_EQ(expired.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(expired.message().find("not applied"), std::string::npos);
}

}  // namespace
}  // namespace loraserve::server
