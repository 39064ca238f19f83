// HostBufferPool: given-back buffers serve later takes of about their size, within its limits.
#include "kernels/host_buffer_pool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

namespace loraserve::kernels {
namespace {

// Counts what the pool allocates and frees.
struct Heap {
  int allocated = 0;
  int freed = 0;
  bool fail = false;
  std::set<void*> live;

  HostBufferPool pool(HostBufferPool::Limits limits) {
    return HostBufferPool(
        [this](size_t bytes) -> Result<void*> {
          if (fail) return resource_exhausted_error("no memory for {} bytes", bytes);
          void* p = std::malloc(bytes);
          ++allocated;
          live.insert(p);
          return p;
        },
        [this](void* p) {
          ++freed;
          live.erase(p);
          std::free(p);
        },
        limits);
  }
};

TEST(HostBufferPoolTest, AGivenBackBufferServesTheNextTakeOfAboutItsSize) {
  Heap heap;
  {
    HostBufferPool pool = heap.pool({4, 1 << 20});
    void* a = *pool.take(1000);
    pool.give_back(a);
    EXPECT_EQ(pool.kept_buffers(), 1);
    EXPECT_EQ(pool.kept_bytes(), 1000u);
    EXPECT_EQ(*pool.take(900), a);  // 1000 <= 900 * 5/4
    EXPECT_EQ(heap.allocated, 1);
    pool.give_back(a);
    void* b = *pool.take(700);  // 1000 > 700 * 5/4: a new one
    EXPECT_NE(b, a);
    void* c = *pool.take(1001);  // larger than any kept
    EXPECT_NE(c, a);
    EXPECT_EQ(heap.allocated, 3);
    pool.give_back(b);
    pool.give_back(c);
    // The smallest that fits is taken.
    EXPECT_EQ(*pool.take(700), b);
    pool.give_back(b);
    EXPECT_EQ(heap.freed, 0);
  }
  EXPECT_EQ(heap.freed, 3);  // the destructor frees what was kept
  EXPECT_TRUE(heap.live.empty());
}

TEST(HostBufferPoolTest, KeepsAtMostItsLimitsFreeingTheOldestFirst) {
  Heap heap;
  HostBufferPool pool = heap.pool({2, 2400});
  void* a = *pool.take(1000);
  void* b = *pool.take(1000);
  void* c = *pool.take(1000);
  void* big = *pool.take(4000);
  pool.give_back(big);  // above max_bytes on its own: freed
  EXPECT_EQ(heap.freed, 1);
  EXPECT_EQ(heap.live.count(big), 0u);
  pool.give_back(a);
  pool.give_back(b);
  EXPECT_EQ(pool.kept_buffers(), 2);
  pool.give_back(c);  // a third: the oldest (a) goes
  EXPECT_EQ(pool.kept_buffers(), 2);
  EXPECT_EQ(heap.live.count(a), 0u);
  EXPECT_EQ(heap.live.count(b), 1u);
  EXPECT_EQ(heap.live.count(c), 1u);
  void* d = *pool.take(1500);  // no kept one is large enough: new
  EXPECT_NE(d, b);
  EXPECT_NE(d, c);
  pool.give_back(d);  // two kept already: b goes; 1000 + 1500 > 2400: c goes too
  EXPECT_EQ(pool.kept_buffers(), 1);
  EXPECT_EQ(pool.kept_bytes(), 1500u);
  EXPECT_EQ(heap.live.count(b), 0u);
  EXPECT_EQ(heap.live.count(c), 0u);
}

TEST(HostBufferPoolTest, NoLimitKeepsNothingAndAFailedAllocationIsTheError) {
  Heap heap;
  HostBufferPool pool = heap.pool({0, 1 << 20});
  void* a = *pool.take(100);
  pool.give_back(a);
  EXPECT_EQ(pool.kept_buffers(), 0);
  EXPECT_EQ(heap.freed, 1);
  heap.fail = true;
  auto r = pool.take(100);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace loraserve::kernels
