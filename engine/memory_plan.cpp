#include "engine/memory_plan.h"

#include <algorithm>
#include <limits>

namespace loraserve::engine {
namespace {

double gib(double bytes) { return bytes / static_cast<double>(1ull << 30); }

}  // namespace

double estimate_weight_bytes(const formats::ModelConfig& config, DType dtype) {
  return static_cast<double>(config.parameter_count()) * static_cast<double>(dtype_size(dtype));
}

Result<MemoryPlan> plan_memory(const MemoryPlanInput& in) {
  if (in.kv_block_bytes == 0 || in.block_size <= 0 || in.max_context <= 0 ||
      in.max_batch_size <= 0) {
    return invalid_argument_error(
        "memory plan: block size, context and batch size must be positive");
  }
  MemoryPlan plan;
  plan.weight_bytes = in.weight_bytes;
  plan.activation_bytes = in.activation_bytes;
  plan.available = static_cast<double>(in.available);
  const double per_block = static_cast<double>(in.kv_block_bytes);
  const int64_t blocks_per_context = (in.max_context + in.block_size - 1) / in.block_size;
  const double usable = plan.available * in.headroom.usable_fraction;
  const double min_kv = per_block * static_cast<double>(blocks_per_context);
  double kv_bytes = static_cast<double>(in.kv_cache_bytes);
  if (kv_bytes <= 0) {
    const double want = min_kv * in.max_batch_size;
    const double room =
        (usable - in.weight_bytes - in.activation_bytes) * in.headroom.default_kv_fraction;
    kv_bytes = std::max(std::min(want, room), std::min(min_kv, want));
  }
  const int64_t num_blocks = static_cast<int64_t>(kv_bytes / per_block);
  if (num_blocks < 1) {
    return invalid_argument_error("KV cache budget {} bytes holds no block of {} bytes", kv_bytes,
                                  in.kv_block_bytes);
  }
  plan.kv_bytes = static_cast<double>(num_blocks) * per_block;
  const double need = in.weight_bytes + in.activation_bytes + plan.kv_bytes;
  if (need > usable) {
    return resource_exhausted_error(
        "not enough memory on {}: the model needs {:.2f} GiB of weights in {} plus {:.2f} GiB of "
        "KV cache and {:.2f} GiB of activations, but only {:.2f} GiB are available (use a "
        "smaller --kv-cache-memory or --max-batched-tokens, or a machine with more memory)",
        in.device, gib(in.weight_bytes), dtype_name(in.weight_dtype), gib(plan.kv_bytes),
        gib(in.activation_bytes), gib(plan.available));
  }
  if (num_blocks > std::numeric_limits<int32_t>::max())
    return invalid_argument_error("KV cache too large");
  plan.kv_blocks = static_cast<int32_t>(num_blocks);
  plan.full_contexts = static_cast<double>(num_blocks) / static_cast<double>(blocks_per_context);
  return plan;
}

std::string MemoryPlan::describe(const MemoryPlanInput& in) const {
  return fmt::format(
      "memory plan on {}: weights {:.2f} GiB ({}), KV cache {:.2f} GiB ({} blocks of {} tokens, "
      "{:.1f} full contexts of {}), activations {:.2f} GiB; {:.2f} GiB available",
      in.device, gib(weight_bytes), dtype_name(in.weight_dtype), gib(kv_bytes), kv_blocks,
      in.block_size, full_contexts, in.max_context, gib(activation_bytes), gib(available));
}

}  // namespace loraserve::engine
