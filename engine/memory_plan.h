// The memory plan: how many KV-cache blocks an engine gets, from what the backend has free and
// the headroom it asks for, what the weights and one step's activations take, and the KV size
// the user set (or room for max_batch_size full contexts). A pure function of its input, so
// every case is tested without a device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/dtype.h"
#include "common/status.h"
#include "formats/hf_config.h"
#include "kernels/backend.h"

namespace loraserve::engine {

struct MemoryPlanInput {
  std::string device;    // the backend's describe(), for messages
  size_t available = 0;  // the backend's available_memory()
  kernels::MemoryHeadroom headroom;
  double weight_bytes = 0.0;  // the weights as the backend keeps them
  DType weight_dtype = DType::kF32;
  double activation_bytes = 0.0;  // one step's scratch (Model::activation_bytes)
  size_t kv_block_bytes = 0;      // one KV block over all layers (KvCache::bytes_per_block)
  int32_t block_size = 16;        // tokens per KV block
  int64_t max_context = 0;        // the model's context
  int32_t max_batch_size = 1;     // the default KV cache holds this many full contexts
  int64_t kv_cache_bytes = 0;     // asked for by the user; 0: the default
};

struct MemoryPlan {
  int32_t kv_blocks = 0;
  double weight_bytes = 0.0;
  double activation_bytes = 0.0;
  double kv_bytes = 0.0;  // kv_blocks whole blocks
  double available = 0.0;
  double full_contexts = 0.0;  // how many max_context sequences the KV cache holds

  // The plan in one line, for the log.
  std::string describe(const MemoryPlanInput& input) const;
};

// Bytes of the weights of `config` kept in `dtype`.
double estimate_weight_bytes(const formats::ModelConfig& config, DType dtype);

// The KV blocks that fit. Errors: INVALID_ARGUMENT when the asked KV size holds no block or more
// blocks than a block id can name, RESOURCE_EXHAUSTED (with every figure) when weights,
// activations and the KV cache do not fit in the usable memory.
Result<MemoryPlan> plan_memory(const MemoryPlanInput& input);

}  // namespace loraserve::engine
