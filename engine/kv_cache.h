// The paged KV cache: per layer, one K and one V array of `num_blocks * block_size` slots of
// kv_dim values each, on the backend, and the BlockAllocator that hands out their blocks.
// Not thread-safe (engine thread).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "engine/block_allocator.h"
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

  int32_t block_size() const { return blocks_.block_size(); }
  int32_t num_blocks() const { return blocks_.num_blocks(); }
  size_t bytes() const { return bytes_; }
  BlockAllocator& blocks() { return blocks_; }
  const BlockAllocator& blocks() const { return blocks_; }

  const kernels::Tensor& k(int64_t layer) const { return k_[static_cast<size_t>(layer)]; }
  const kernels::Tensor& v(int64_t layer) const { return v_[static_cast<size_t>(layer)]; }

 private:
  KvCache(int32_t num_blocks, int32_t block_size) : blocks_(num_blocks, block_size) {}
  BlockAllocator blocks_;
  size_t bytes_ = 0;
  std::vector<kernels::DeviceBuffer> buffers_;
  std::vector<kernels::Tensor> k_, v_;
};

}  // namespace loraserve::engine
