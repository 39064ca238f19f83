// Step building: turns a step's chunks into the StepMeta the backend reads — each row's token,
// position and KV slot, every sequence's block table, the rows whose logits are sampled, and the
// LoRA segments (rows of one adapter slot, contiguous) with each segment's slice per table.
// Pure: it reads the sequences and the adapter slots it is given, and changes nothing else.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/scheduler.h"
#include "kernels/backend.h"

namespace loraserve::engine {

// The LoRA weights of the adapter in `slot` for LoRA table `table`.
using LoraSliceLookup = std::function<const kernels::LoraSlice&(int32_t slot, int32_t table)>;

class StepBuilder {
 public:
  // `num_lora_tables`: LoRA tables of the model (adapters::num_lora_tables).
  StepBuilder(int32_t block_size, int32_t num_lora_tables, LoraSliceLookup slices)
      : block_size_(block_size), num_lora_tables_(num_lora_tables), slices_(std::move(slices)) {}

  // Orders `chunks` by adapter slot (base-model rows first, stable otherwise) and fills `meta`.
  // Returns the chunks that sample, in the order of meta.logits_rows.
  std::vector<const ScheduledChunk*> build(std::vector<ScheduledChunk>* chunks,
                                           kernels::StepMeta* meta) const;

 private:
  void build_lora(const std::vector<ScheduledChunk>& chunks, kernels::StepMeta* meta) const;

  int32_t block_size_;
  int32_t num_lora_tables_;
  LoraSliceLookup slices_;
};

}  // namespace loraserve::engine
