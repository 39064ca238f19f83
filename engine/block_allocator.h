// The KV cache's block bookkeeping: `num_blocks` blocks of `block_size` token slots each, the
// free list, and how many blocks a length needs. It knows nothing of memory (KvCache owns the
// arrays that block ids index), so planning is tested without a backend. Sequences own blocks
// through their block tables. Not thread-safe (engine thread).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace loraserve::engine {

class BlockAllocator {
 public:
  // REQUIRES: num_blocks > 0, block_size > 0.
  BlockAllocator(int32_t num_blocks, int32_t block_size);

  int32_t block_size() const { return block_size_; }
  int32_t num_blocks() const { return num_blocks_; }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  // Blocks needed to hold `tokens` tokens.
  int32_t blocks_for(int64_t tokens) const {
    return static_cast<int32_t>((tokens + block_size_ - 1) / block_size_);
  }

  // A free block, or nullopt when all are taken. The most recently freed block comes first.
  std::optional<int32_t> allocate();
  // Returns every block of `table` to the free list and empties it.
  void free_all(std::vector<int32_t>* table);

 private:
  int32_t num_blocks_;
  int32_t block_size_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

}  // namespace loraserve::engine
