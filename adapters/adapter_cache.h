// AdapterCache: a fixed number of adapter slots on the backend. A running request pins the slot
// of its adapter version; placing another adapter evicts the least recently used unpinned slot;
// a pinned slot is never evicted. Uploads are asynchronous (a slot is usable once ready()).
// On a backend that reads host memory directly, a slot points at the adapter's host copy.
// A slot holds its version weakly: once no request and no registry entry holds a version, the
// next sweep() frees its device copy. Not thread-safe (the engine thread).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "adapters/registry.h"
#include "kernels/backend.h"

namespace loraserve::adapters {

struct CacheCounters {
  uint64_t loads = 0;      // placements into a slot (uploads)
  uint64_t evictions = 0;  // placements that displaced another adapter
  uint64_t hits = 0;       // acquisitions that found the adapter already in a slot
  uint64_t landed = 0;     // uploads seen to finish (by ready())
};

// Where a version lives now, for ListAdapters.
struct SlotInfo {
  int32_t slot = -1;
  uint64_t version = 0;
  int32_t pins = 0;
  bool ready = false;
};

class AdapterCache {
 public:
  AdapterCache(kernels::Backend* backend, const formats::ModelConfig& model, int32_t num_slots);

  // The slot of `version`, placing it (and starting its upload) when absent, and pins it.
  // nullopt when every slot is pinned: the caller waits and tries again.
  std::optional<int32_t> acquire(const AdapterRef& version);
  void release(int32_t slot);
  // True once the slot's upload has finished. A slot whose upload failed is never ready.
  bool ready(int32_t slot);
  // Why the slot's upload failed, or OK. The requests pinning a failed slot must end with this
  // error (its device memory holds nothing usable); once none pins it, the slot is emptied, so a
  // later acquire uploads the adapter afresh.
  Status failure(int32_t slot) const { return slots_[static_cast<size_t>(slot)].failure; }
  // The slot's weights for LoRA table `table` (rank 0 when the adapter does not target it).
  const kernels::LoraSlice& slice(int32_t slot, int32_t table) const {
    return slots_[static_cast<size_t>(slot)].slices[static_cast<size_t>(table)];
  }
  // Frees slots whose version nobody holds any more, and failed slots nobody pins.
  void sweep();
  // True while some slot's upload has started and has neither landed nor failed (as last polled
  // by ready()): a step that scheduled nothing may be waiting for it.
  bool uploads_in_flight() const;

  int32_t num_slots() const { return static_cast<int32_t>(slots_.size()); }
  int32_t slots_used() const;
  const CacheCounters& counters() const { return counters_; }
  std::vector<SlotInfo> snapshot() const;

 private:
  struct Slot {
    const AdapterVersion* key = nullptr;  // identity of the resident version (nullptr: empty)
    std::weak_ptr<const AdapterVersion> version;
    AdapterRef pinned_by_upload;             // keeps the host copy alive until the upload finishes
    kernels::DeviceBuffer device;            // empty when the backend reads the host copy directly
    std::vector<kernels::LoraSlice> slices;  // [table]
    uint64_t ticket = 0;
    bool ready = false;
    Status failure;  // the upload's error
    int32_t pins = 0;
    uint64_t last_used = 0;
  };
  Status place(Slot& slot, const AdapterRef& version);
  void clear(Slot& slot);
  void sweep_failed();

  kernels::Backend* backend_;
  formats::ModelConfig model_;
  std::vector<Slot> slots_;
  uint64_t clock_ = 0;
  CacheCounters counters_;
};

}  // namespace loraserve::adapters
