#include "engine/kv_cache.h"

namespace loraserve::engine {

size_t KvCache::bytes_per_block(const formats::ModelConfig& c, int32_t block_size, DType dtype) {
  return 2 * static_cast<size_t>(c.num_layers) * static_cast<size_t>(block_size) *
         static_cast<size_t>(c.kv_dim()) * dtype_size(dtype);
}

Result<std::unique_ptr<KvCache>> KvCache::create(const formats::ModelConfig& c,
                                                 kernels::Backend* backend, int32_t num_blocks,
                                                 int32_t block_size) {
  if (num_blocks <= 0 || block_size <= 0) {
    return invalid_argument_error(
        "KV cache needs at least one block of at least one slot (got {} x {})", num_blocks,
        block_size);
  }
  std::unique_ptr<KvCache> cache(new KvCache());
  cache->block_size_ = block_size;
  cache->num_blocks_ = num_blocks;
  const DType dt = backend->activation_dtype();
  const int64_t slots = static_cast<int64_t>(num_blocks) * block_size;
  const size_t layer_bytes = static_cast<size_t>(slots * c.kv_dim()) * dtype_size(dt);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (auto* list : {&cache->k_, &cache->v_}) {
      LS_ASSIGN_OR_RETURN(kernels::DeviceBuffer buf, backend->allocate(layer_bytes));
      list->push_back(buf.view(dt, slots, c.kv_dim()));
      cache->buffers_.push_back(std::move(buf));
      cache->bytes_ += layer_bytes;
    }
  }
  cache->free_.reserve(static_cast<size_t>(num_blocks));
  for (int32_t b = num_blocks - 1; b >= 0; --b) cache->free_.push_back(b);
  return cache;
}

std::optional<int32_t> KvCache::allocate() {
  if (free_.empty()) return std::nullopt;
  const int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void KvCache::free(int32_t block) { free_.push_back(block); }

void KvCache::free_all(std::vector<int32_t>* blocks) {
  for (auto it = blocks->rbegin(); it != blocks->rend(); ++it) free_.push_back(*it);
  blocks->clear();
}

}  // namespace loraserve::engine
