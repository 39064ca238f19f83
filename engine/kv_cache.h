// The paged KV cache: per layer, one K and one V array of `num_blocks * block_size` slots of
// kv_dim values each, and the free list of blocks. Sequences own blocks through their block
// tables (the scheduler's business). Not thread-safe (engine thread).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "common/status.h"
#include "formats/hf_config.h"
#include "kernels/backend.h"

namespace loraserve::engine {

class KvCache {
 public:
  // Bytes one block takes over all layers (K and V).
  static size_t bytes_per_block(const formats::ModelConfig& config, int32_t block_size,
                                DType dtype);
  static Result<std::unique_ptr<KvCache>> create(const formats::ModelConfig& config,
                                                 kernels::Backend* backend, int32_t num_blocks,
                                                 int32_t block_size);

  int32_t block_size() const { return block_size_; }
  int32_t num_blocks() const { return num_blocks_; }
  int32_t num_free_blocks() const { return static_cast<int32_t>(free_.size()); }
  size_t bytes() const { return bytes_; }
  // Blocks needed to hold `tokens` tokens.
  int32_t blocks_for(int64_t tokens) const {
    return static_cast<int32_t>((tokens + block_size_ - 1) / block_size_);
  }

  // A free block, or nullopt when all are taken.
  std::optional<int32_t> allocate();
  void free(int32_t block);
  void free_all(std::vector<int32_t>* blocks);

  const kernels::Tensor& k(int64_t layer) const { return k_[static_cast<size_t>(layer)]; }
  const kernels::Tensor& v(int64_t layer) const { return v_[static_cast<size_t>(layer)]; }

 private:
  KvCache() = default;
  int32_t block_size_ = 0;
  int32_t num_blocks_ = 0;
  size_t bytes_ = 0;
  std::vector<kernels::DeviceBuffer> buffers_;
  std::vector<kernels::Tensor> k_, v_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

}  // namespace loraserve::engine
