// The KV-cache block allocator: block counts for lengths, every block handed out once, tables
// given back whole, the most recently freed block reused first, and exhaustion as nullopt.
#include "engine/block_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace loraserve::engine {
namespace {

TEST(BlockAllocator, BlocksForRoundsUp) {
  const BlockAllocator kv(8, 16);
  EXPECT_EQ(kv.blocks_for(0), 0);
  EXPECT_EQ(kv.blocks_for(1), 1);
  EXPECT_EQ(kv.blocks_for(16), 1);
  EXPECT_EQ(kv.blocks_for(17), 2);
  EXPECT_EQ(kv.blocks_for(128), 8);
  EXPECT_EQ(kv.blocks_for(int64_t{1} << 33), int32_t{1} << 29);
}

TEST(BlockAllocator, HandsOutEveryBlockOnceThenNothing) {
  BlockAllocator kv(5, 4);
  EXPECT_EQ(kv.num_blocks(), 5);
  EXPECT_EQ(kv.block_size(), 4);
  std::set<int32_t> seen;
  for (int i = 0; i < 5; ++i) {
    auto b = kv.allocate();
    ASSERT_TRUE(b.has_value());
    EXPECT_GE(*b, 0);
    EXPECT_LT(*b, 5);
    EXPECT_TRUE(seen.insert(*b).second) << "block " << *b << " handed out twice";
    EXPECT_EQ(kv.num_free(), 4 - i);
  }
  EXPECT_FALSE(kv.allocate().has_value());
  EXPECT_EQ(kv.num_free(), 0);
}

TEST(BlockAllocator, FreeAllGivesTheTableBackAndReusesTheLastFreedFirst) {
  BlockAllocator kv(6, 2);
  std::vector<int32_t> a, b;
  for (int i = 0; i < 3; ++i) a.push_back(*kv.allocate());
  for (int i = 0; i < 2; ++i) b.push_back(*kv.allocate());
  EXPECT_EQ(kv.num_free(), 1);
  const std::vector<int32_t> a_blocks = a;
  kv.free_all(&a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(kv.num_free(), 4);
  // The table's first block was freed last: it comes back first (a stack, warm in cache).
  EXPECT_EQ(kv.allocate(), a_blocks.front());
  EXPECT_EQ(kv.allocate(), a_blocks[1]);
  // Nothing b holds is ever handed out again while b holds it.
  for (auto next = kv.allocate(); next; next = kv.allocate())
    EXPECT_EQ(std::count(b.begin(), b.end(), *next), 0);
  kv.free_all(&b);
  EXPECT_EQ(kv.num_free(), 2);
}

}  // namespace
}  // namespace loraserve::engine
