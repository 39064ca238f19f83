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
  std::unique_ptr<KvCache> cache(new KvCache(num_blocks, block_size));
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
  return cache;
}

}  // namespace loraserve::engine
