// LoraAdapter: one PEFT LoRA adapter, validated against the base model and held in host memory
// (pinned on GPUs) in the dtype the backend keeps adapters in (Backend::lora_dtype). Immutable
// after load; share it through shared_ptr<const LoraAdapter>; its memory is freed with the last
// reference.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/untrusted_file.h"
#include "formats/hf_config.h"
#include "kernels/backend.h"

namespace loraserve::adapters {

// The LoRA table index the backend sees for (layer, projection): one table per targeted linear
// layer of the model, so a step's slices are found as tables × segments.
inline int32_t lora_table(int64_t layer, formats::Projection p) {
  return static_cast<int32_t>(layer) * formats::kNumProjections + static_cast<int32_t>(p);
}
inline int32_t num_lora_tables(const formats::ModelConfig& c) {
  return static_cast<int32_t>(c.num_layers) * formats::kNumProjections;
}

// One targeted projection of one layer.
struct LoraModule {
  int32_t rank = 0;  // 0: not targeted
  float scale = 0.0f;
  size_t a_offset = 0;  // bytes into weights(): A, (rank, in)
  size_t b_offset = 0;  // bytes into weights(): B, (out, rank)
};

// A module's A and B as f32 host arrays, for building adapters in memory (tests, benches).
struct LoraModuleWeights {
  int64_t layer = 0;
  formats::Projection projection = formats::Projection::kQ;
  int32_t rank = 0;
  float scale = 1.0f;
  std::vector<float> a;  // (rank, in)
  std::vector<float> b;  // (out, rank)
};

// How long matching adapter_config.json's patterns against a model's modules may take. Real
// configs take milliseconds; each match is bounded too (formats::PatternRegex).
inline constexpr std::chrono::seconds kPatternTimeBudget{10};

class LoraAdapter {
 public:
  // Reads `dir` (adapter_config.json + adapter_model.safetensors), checks every tensor against
  // `model` and `max_rank`, and converts the weights to Backend::lora_dtype of the file's. Errors
  // name the file, tensor or field; nothing is kept on failure. NOT_FOUND: the folder or a file
  // is absent; INVALID_ARGUMENT: a file is malformed or lacks what its config promises;
  // PERMISSION_DENIED: a file of a confined folder leads outside its root. The safetensors file
  // is read into memory (never mapped) and refused unread when it is larger than an adapter of
  // this model at `max_rank` can be.
  static Result<std::shared_ptr<const LoraAdapter>> load(const std::string& dir,
                                                         const formats::ModelConfig& model,
                                                         kernels::Backend* backend,
                                                         int32_t max_rank);
  // `keep_going`, when given, is asked between modules: a non-OK status (the caller gave up)
  // stops the load with that status. Matching the config's patterns against the model's modules
  // has a time budget (kPatternTimeBudget): patterns that take longer are INVALID_ARGUMENT.
  static Result<std::shared_ptr<const LoraAdapter>> load(
      const Folder& dir, const formats::ModelConfig& model, kernels::Backend* backend,
      int32_t max_rank, const std::function<Status()>& keep_going = nullptr);
  // Builds an adapter from weights in memory, with the same checks.
  static Result<std::shared_ptr<const LoraAdapter>> from_weights(
      const std::vector<LoraModuleWeights>& modules, const formats::ModelConfig& model,
      kernels::Backend* backend, int32_t max_rank);

  const LoraModule& module(int64_t layer, formats::Projection p) const {
    return modules_[static_cast<size_t>(lora_table(layer, p))];
  }
  // Host memory holding every A and B; the A's of q, k, v of a layer are adjacent (and those of
  // gate, up), so a backend can shrink them in one GEMM.
  const kernels::DeviceBuffer& weights() const { return weights_; }
  DType dtype() const { return dtype_; }
  size_t bytes() const { return weights_.bytes(); }
  int32_t max_rank() const { return max_rank_; }
  int32_t min_rank() const { return min_rank_; }
  // Projection names targeted in at least one layer ("q_proj", ...), in model order.
  const std::vector<std::string>& target_modules() const { return target_modules_; }
  double lora_alpha() const { return lora_alpha_; }
  bool use_rslora() const { return use_rslora_; }
  // Elements of A and B read when one row goes through every targeted module.
  int64_t parameter_count() const { return parameter_count_; }

 private:
  LoraAdapter() = default;

  std::vector<LoraModule> modules_;  // [lora_table(layer, projection)]
  kernels::DeviceBuffer weights_;
  DType dtype_ = DType::kF32;
  int32_t max_rank_ = 0;
  int32_t min_rank_ = 0;
  std::vector<std::string> target_modules_;
  double lora_alpha_ = 0.0;
  bool use_rslora_ = false;
  int64_t parameter_count_ = 0;

  friend class AdapterBuilder;
};

}  // namespace loraserve::adapters
