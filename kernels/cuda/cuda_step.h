// The device copy of the current step's metadata (step_layout.h). Validates a StepMeta, packs it
// with the LoRA and attention tiles the kernels iterate over, and uploads it on the compute
// stream. Owns one device buffer whose address stays put (graphs bake it in; it only moves when
// a step outgrows it, and then generation() changes) and two pinned staging buffers used in
// turn, each reused only once its previous upload has finished. Not thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/cuda/step_layout.h"

namespace loraserve::kernels::cuda {

class DeviceStep {
 public:
  DeviceStep() = default;
  ~DeviceStep();
  DeviceStep(const DeviceStep&) = delete;
  DeviceStep& operator=(const DeviceStep&) = delete;

  // Validates `meta` (sizes agree, indices in range, segments disjoint, slices well formed) and
  // enqueues its upload, with the LoRA tiles and one attention tile set per rows-per-tile value
  // (step_layout.h), so every attention call of the step finds tiles cut for its shape.
  Status upload(const StepMeta& meta, cudaStream_t stream);

  const StepHeader* device_header() const { return static_cast<const StepHeader*>(device_); }
  // Changes whenever device_header() moves.
  uint64_t generation() const { return generation_; }
  const StepHeader& header() const { return header_; }
  // True when every row is the next token of its own sequence (row i reads block table i).
  bool decode_only() const { return decode_only_; }

 private:
  struct Staging {
    void* data = nullptr;
    size_t bytes = 0;
    cudaEvent_t done = nullptr;  // recorded after the last upload that read it
  };
  Status reserve(size_t bytes, cudaStream_t stream);
  // Cuts the rows into tiles of at most `rows_per_tile` consecutive rows of one sequence, written
  // to `tiles`; returns how many.
  static int32_t cut_attention_tiles(const std::vector<int32_t>& row_seq, int32_t rows_per_tile,
                                     AttentionTile* tiles);

  void* device_ = nullptr;
  size_t device_bytes_ = 0;
  uint64_t generation_ = 0;
  Staging staging_[2];
  int current_ = 0;  // staging buffer of the current step
  StepHeader header_ = {};
  bool decode_only_ = false;
};

}  // namespace loraserve::kernels::cuda
